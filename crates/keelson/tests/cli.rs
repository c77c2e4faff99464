//! The `keelson` command line as a user runs it: version, help, and the server's
//! lifecycle over the embedded store (start, HTTPS health, metrics, the admin kubeconfig
//! with the real kubectl, SIGTERM, restart, bad data).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use keelson_apiserver::testing::{ClientAuth, https_get, kubectl};

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

/// A child process killed when dropped, so that a failing test leaves nothing running.
struct Reaped(Option<Child>);

impl Reaped {
    fn new(child: Child) -> Self {
        Reaped(Some(child))
    }

    fn child(&mut self) -> Result<&mut Child> {
        self.0.as_mut().context("the process was already taken")
    }

    fn take(&mut self) -> Result<Child> {
        self.0.take().context("the process was already taken")
    }

    /// Ends it at once (SIGKILL), as when a node's process dies.
    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.0.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` over HTTPS, trusting the server's CA and authenticating with its admin token.
fn get(data_dir: &Path, port: u16, path: &str, auth: bool) -> Result<(u16, String)> {
    let ca = std::fs::read_to_string(data_dir.join("tls/ca.crt"))?;
    let auth = if auth {
        ClientAuth::Token(
            std::fs::read_to_string(data_dir.join("tls/admin.token"))?
                .trim()
                .to_owned(),
        )
    } else {
        ClientAuth::Anonymous
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(https_get(&format!("127.0.0.1:{port}"), path, &ca, &auth))?)
}

fn start_server(data_dir: &Path, port: u16) -> Result<Child> {
    Ok(keelson()
        .args(["server", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn wait_ready(child: &mut Child, data_dir: &Path, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("server exited early with {status}");
        }
        if let Ok((200, _)) = get(data_dir, port, "/readyz", false) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "server not ready within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `keelson server` on a free port over `data_dir`, ready to serve.
fn running_server(data_dir: &Path) -> Result<(Reaped, u16)> {
    let port = free_port()?;
    let mut server = Reaped::new(start_server(data_dir, port)?);
    wait_ready(server.child()?, data_dir, port)?;
    Ok((server, port))
}

/// `keelson agent --simulate COUNT --node-prefix PREFIX` (and `extra` flags) joined to the
/// server of `dir`; returns once `kubectl get nodes` shows COUNT nodes Ready, with that
/// output.
fn simulated_nodes(
    dir: &Path,
    kube: &Kubectl,
    count: usize,
    prefix: &str,
    extra: &[&str],
) -> Result<(Reaped, String)> {
    let agent = Reaped::new(
        keelson()
            .args([
                "agent",
                "--simulate",
                &count.to_string(),
                "--node-prefix",
                prefix,
            ])
            .args(extra)
            .arg("--kubeconfig")
            .arg(dir.join("admin.kubeconfig"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kube.run(&["get", "nodes"])?;
        if out.lines().filter(|l| l.contains(" Ready ")).count() == count {
            return Ok((agent, out));
        }
        ensure!(Instant::now() < deadline, "nodes did not register: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops a server with SIGTERM; it must exit cleanly.
fn stop(mut server: Reaped) -> Result<()> {
    let server = server.take()?;
    sigterm(&server)?;
    let out = wait_exit(server)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// kubectl with a kubeconfig and a private discovery cache.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(kubeconfig: &Path, cache: &Path) -> Self {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache: cache.to_path_buf(),
        }
    }

    /// The admin of the server running over `data_dir`.
    fn admin(data_dir: &Path) -> Self {
        Kubectl::new(
            &data_dir.join("admin.kubeconfig"),
            &data_dir.join("kube-cache"),
        )
    }

    fn command(&self) -> Result<Command> {
        let mut command = Command::new(kubectl()?);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache);
        Ok(command)
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command()?.args(args).output()?)
    }

    /// Runs kubectl, which must succeed; returns its stdout.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        ensure!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }
}

fn sigterm(child: &Child) -> Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    Ok(())
}

fn wait_exit(child: Child) -> Result<Output> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while child.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "server did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

#[test]
fn version_names_the_commit() -> Result<()> {
    let out = keelson().arg("version").output()?;
    ensure!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        text.starts_with(&format!("keelson {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let commit = text
        .split("(commit ")
        .nth(1)
        .context("commit")?
        .trim_end()
        .trim_end_matches(')');
    ensure!(!commit.is_empty(), "{text}");
    Ok(())
}

#[test]
fn help_lists_the_commands() -> Result<()> {
    let out = keelson().arg("--help").output()?;
    ensure!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        text.contains("server") && text.contains("version"),
        "{text}"
    );
    let out = keelson().args(["server", "--help"]).output()?;
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        text.contains("--data-dir") && text.contains("--datastore"),
        "{text}"
    );
    Ok(())
}

#[test]
fn server_runs_stops_and_restarts_on_its_data_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut server, port) = running_server(dir.path())?;
    ensure!(get(dir.path(), port, "/livez", false)?.0 == 200);
    ensure!(
        get(dir.path(), port, "/metrics", false)?.0 == 401,
        "metrics need credentials"
    );
    let (status, metrics) = get(dir.path(), port, "/metrics", true)?;
    ensure!(status == 200);
    ensure!(
        metrics.contains("keelson_store_operations_total"),
        "{metrics}"
    );
    ensure!(
        metrics.contains("keelson_sqlite_commit_group_size"),
        "{metrics}"
    );
    ensure!(
        metrics.contains("keelson_apiserver_requests_total"),
        "{metrics}"
    );
    ensure!(
        dir.path().join("db/state.db").exists(),
        "the store lives in DATA_DIR/db"
    );

    sigterm(server.child()?)?;
    let out = wait_exit(server.take()?)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same data dir starts again.
    let mut server = Reaped::new(start_server(dir.path(), port)?);
    wait_ready(server.child()?, dir.path(), port)?;
    stop(server)
}

#[test]
fn server_refuses_a_corrupt_store_and_names_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("db"))?;
    std::fs::write(dir.path().join("db/state.db"), b"definitely not sqlite")?;
    let server = start_server(dir.path(), free_port()?)?;
    let out = wait_exit(server)?;
    ensure!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        stderr.contains(&dir.path().join("db/state.db").display().to_string()),
        "{stderr}"
    );
    ensure!(!stderr.contains("panicked"), "{stderr}");
    ensure!(std::fs::read(dir.path().join("db/state.db"))? == b"definitely not sqlite");
    Ok(())
}

#[test]
fn server_rejects_an_unknown_datastore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = keelson()
        .args(["server", "--datastore", "mysql://x", "--data-dir"])
        .arg(dir.path())
        .output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8(out.stderr)?.contains("--datastore"));
    Ok(())
}

#[test]
fn kubectl_uses_the_admin_kubeconfig() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let cache = dir.path().join("kube-cache");
    let run = |args: &[&str], kubeconfig: &Path| Kubectl::new(kubeconfig, &cache).output(args);
    let out = run(&["version", "-o", "json"], &kubeconfig)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let server_version = version["serverVersion"]["gitVersion"]
        .as_str()
        .context("serverVersion")?;
    ensure!(server_version.starts_with("v1.37.0+keelson."), "{version}");
    let out = run(&["get", "--raw", "/readyz"], &kubeconfig)?;
    ensure!(out.status.success() && out.stdout == b"ok");

    // Discovery: what kubectl lists is what the server serves.
    let out = run(&["api-resources", "--no-headers"], &kubeconfig)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resources = String::from_utf8(out.stdout)?;
    let deployments = resources
        .lines()
        .find(|l| l.starts_with("deployments "))
        .context("deployments")?;
    let columns: Vec<&str> = deployments.split_whitespace().collect();
    ensure!(
        columns == ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        "{deployments}"
    );
    ensure!(resources.lines().count() >= 35, "{resources}");
    let out = run(&["api-versions"], &kubeconfig)?;
    let versions = String::from_utf8(out.stdout)?;
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "policy/v1",
        "networking.k8s.io/v1",
    ] {
        ensure!(
            versions.lines().any(|l| l == gv),
            "{gv} missing from {versions}"
        );
    }

    // With a token the server does not know (instead of the client certificate), kubectl
    // is refused. (With no credentials at all kubectl would prompt for a password.)
    let text = std::fs::read_to_string(&kubeconfig)?;
    let wrong_token: String = text
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| {
            if l.trim() == "user:" {
                "  user: {token: not-the-token}\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let wrong_path = dir.path().join("wrong-token.kubeconfig");
    std::fs::write(&wrong_path, wrong_token)?;
    let out = run(&["get", "--raw", "/version"], &wrong_path)?;
    ensure!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("Unauthorized"), "{stderr}");

    stop(server)
}

#[test]
fn kubectl_manages_objects() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    let kubectl_run = |args: &[&str]| kube.run(args);
    let manifest = dir.path().join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\n  labels: {app: shop}\ndata:\n  color: blue\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n  namespace: shop\ndata: {}\n",
    )?;
    let created = kubectl_run(&["create", "-f", manifest.to_str().context("path")?])?;
    ensure!(
        created.contains("namespace/shop created")
            && created.contains("configmap/settings created"),
        "{created}"
    );

    // kubectl's imperative create commands send protobuf bodies.
    kubectl_run(&["create", "namespace", "imperative"])?;
    kubectl_run(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "imperative",
        "--from-literal=password=s3cr3t!",
        "--from-literal=user=admin",
    ])?;
    let password = kubectl_run(&[
        "get",
        "secret",
        "creds",
        "-n",
        "imperative",
        "-o",
        "jsonpath={.data.password}",
    ])?;
    ensure!(
        password == "czNjcjN0IQ==",
        "the value round-trips as base64: {password}"
    );
    let properties = dir.path().join("game.properties");
    std::fs::write(&properties, "color=blue\n")?;
    kubectl_run(&[
        "create",
        "configmap",
        "game",
        "-n",
        "imperative",
        "--from-file",
        properties.to_str().context("path")?,
    ])?;
    let data = kubectl_run(&[
        "get",
        "cm",
        "game",
        "-n",
        "imperative",
        "-o",
        "jsonpath={.data.game\\.properties}",
    ])?;
    ensure!(data == "color=blue\n", "{data:?}");
    kubectl_run(&["create", "serviceaccount", "builder", "-n", "imperative"])?;
    kubectl_run(&[
        "create",
        "deployment",
        "web",
        "-n",
        "imperative",
        "--image=nginx:1.27",
        "--port=80",
        "--replicas=3",
    ])?;
    let created = kubectl_run(&[
        "get",
        "deploy",
        "web",
        "-n",
        "imperative",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.strategy.type}",
    ])?;
    ensure!(created == "3 nginx:1.27 80 RollingUpdate", "{created}");
    let secrets = kubectl_run(&["get", "secrets", "-n", "imperative"])?;
    ensure!(
        secrets.lines().nth(1).is_some_and(
            |l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["creds", "Opaque", "2"]
        ),
        "{secrets}"
    );

    let table = kubectl_run(&["get", "ns"])?;
    ensure!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>() == ["NAME", "STATUS", "AGE"]),
        "{table}"
    );
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("shop ") && l.contains("Active")),
        "{table}"
    );
    let color = kubectl_run(&[
        "get",
        "cm",
        "settings",
        "-n",
        "shop",
        "-o",
        "jsonpath={.data.color}",
    ])?;
    ensure!(color == "blue", "{color}");
    let selected = kubectl_run(&["get", "cm", "-n", "shop", "-l", "app=shop", "-o", "name"])?;
    ensure!(selected.trim() == "configmap/settings", "{selected}");
    let by_field = kubectl_run(&[
        "get",
        "cm",
        "-A",
        "--field-selector",
        "metadata.name=other",
        "-o",
        "name",
    ])?;
    ensure!(by_field.trim() == "configmap/other", "{by_field}");
    let all = kubectl_run(&["get", "cm", "-A"])?;
    ensure!(
        all.lines()
            .next()
            .is_some_and(|h| h.starts_with("NAMESPACE")),
        "{all}"
    );
    let yaml = kubectl_run(&["get", "cm", "settings", "-n", "shop", "-o", "yaml"])?;
    ensure!(
        yaml.contains("resourceVersion:") && yaml.contains("uid:"),
        "{yaml}"
    );

    // Patch-based commands.
    let deployment = dir.path().join("deployment.yaml");
    let manifest = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: app, image: 'nginx:1.25'}}\n      - {{name: log, image: busybox}}\n"
        )
    };
    let path = deployment.to_str().context("path")?.to_owned();
    std::fs::write(&deployment, manifest(2))?;
    ensure!(kubectl_run(&["apply", "-f", &path,])?.contains("deployment.apps/web created"));
    let again = kubectl_run(&["apply", "-f", &path])?;
    ensure!(again.contains("deployment.apps/web unchanged"), "{again}");
    std::fs::write(&deployment, manifest(4))?;
    ensure!(kubectl_run(&["apply", "-f", &path,])?.contains("deployment.apps/web configured"));
    ensure!(
        kubectl_run(&["scale", "deploy", "web", "-n", "shop", "--replicas=3"])?.contains("scaled")
    );
    ensure!(
        kubectl_run(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}"
        ])? == "3"
    );
    std::fs::write(&deployment, manifest(4))?;
    ensure!(kubectl_run(&["apply", "-f", &path])?.contains("configured"));
    kubectl_run(&["label", "deploy", "web", "-n", "shop", "team=blue"])?;
    kubectl_run(&["annotate", "deploy", "web", "-n", "shop", "note=hi"])?;
    kubectl_run(&["set", "image", "deploy/web", "-n", "shop", "app=nginx:1.27"])?;
    kubectl_run(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
    ])?;
    kubectl_run(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"}]"#,
    ])?;
    kubectl_run(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"log","image":"busybox:2"}]}}}}"#,
    ])?;
    let shown = kubectl_run(&[
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.labels.team} {.metadata.annotations.note} {.spec.template.spec.containers[*].image} {.metadata.labels.merged} {.metadata.labels.json}",
    ])?;
    ensure!(shown == "4 blue hi nginx:1.27 busybox:2 yes yes", "{shown}");
    let edit = kube
        .command()?
        .env("KUBE_EDITOR", "sed -i s/replicas:\\ 4/replicas:\\ 6/")
        .args(["edit", "deploy", "web", "-n", "shop"])
        .output()?;
    ensure!(
        edit.status.success(),
        "{}",
        String::from_utf8_lossy(&edit.stderr)
    );
    ensure!(
        kubectl_run(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}"
        ])? == "6"
    );

    // The server validates fields (kubectl finds fieldValidation in OpenAPI and sends Strict).
    std::fs::write(
        &deployment,
        manifest(4).replace("image: busybox}", "image: busybox, imagePullPolcy: Always}"),
    )?;
    let typo = kube.output(&["apply", "-f", &path])?;
    ensure!(!typo.status.success());
    let stderr = String::from_utf8_lossy(&typo.stderr);
    ensure!(
        stderr.contains(r#"strict decoding error: unknown field "spec.template.spec.containers[1].imagePullPolcy""#),
        "{stderr}"
    );
    let explained = kubectl_run(&["explain", "deployment.spec.strategy"])?;
    ensure!(
        explained.contains("KIND:       Deployment") && explained.contains("rollingUpdate"),
        "{explained}"
    );

    // delete waits for the object to be gone, through a WatchList watch.
    let deleted = kubectl_run(&[
        "delete",
        "cm",
        "settings",
        "-n",
        "shop",
        "--wait=true",
        "--timeout=20s",
    ])?;
    ensure!(deleted.contains("deleted"), "{deleted}");
    let missing = kube.output(&["get", "cm", "settings", "-n", "shop"])?;
    ensure!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        stderr.contains("Error from server (NotFound): configmaps \"settings\" not found"),
        "{stderr}"
    );
    kubectl_run(&["delete", "ns", "shop", "--timeout=20s"])?;
    ensure!(!kubectl_run(&["get", "cm", "-A", "-o", "name"])?.contains("configmap/other"));

    stop(server)
}

/// A kubectl that keeps running (`get -w`, `wait`): its stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(kube: &Kubectl, args: &[&str]) -> Result<Self> {
        let mut child = kube
            .command()?
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running { child, lines })
    }

    /// The next line that contains `text`, within `timeout`.
    fn line_with(&self, text: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("no line with {text:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_describes_waits_watches_and_dry_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    kube.run(&["create", "namespace", "ops"])?;
    kube.run(&[
        "create",
        "deployment",
        "web",
        "-n",
        "ops",
        "--image=nginx:1.27",
        "--replicas=2",
    ])?;
    kube.run(&[
        "create",
        "configmap",
        "conf",
        "-n",
        "ops",
        "--from-literal=mode=fast",
    ])?;

    // describe: the object in kubectl's words, and its (empty) events.
    let described = kube.run(&["describe", "deployment", "web", "-n", "ops"])?;
    for expected in [
        "Name:                   web",
        "Namespace:              ops",
        "Selector:               app=web",
        "StrategyType:           RollingUpdate",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
        "Image:         nginx:1.27",
    ] {
        ensure!(
            described.contains(expected),
            "{expected:?} in:\n{described}"
        );
    }
    let as_json: serde_json::Value = serde_json::from_str(&kube.run(&[
        "get",
        "configmap",
        "conf",
        "-n",
        "ops",
        "-o",
        "json",
    ])?)?;
    ensure!(as_json["data"]["mode"] == "fast", "{as_json}");
    let described = kube.run(&["describe", "configmap", "conf", "-n", "ops"])?;
    ensure!(described.contains("mode:\n----\nfast"), "{described}");

    // --dry-run=server: the server answers as if it wrote, and stores nothing.
    let dry = kube.run(&[
        "create",
        "configmap",
        "dry",
        "-n",
        "ops",
        "--from-literal=a=b",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.name} {.metadata.uid}",
    ])?;
    ensure!(dry.starts_with("dry ") && dry.len() > 10, "{dry}");
    ensure!(
        !kube
            .output(&["get", "configmap", "dry", "-n", "ops"])?
            .status
            .success()
    );
    let kept = kube.run(&[
        "delete",
        "configmap",
        "conf",
        "-n",
        "ops",
        "--dry-run=server",
    ])?;
    ensure!(
        kept.contains("deleted from ops namespace (server dry run)"),
        "{kept}"
    );
    kube.run(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "ops",
        "--replicas=5",
        "--dry-run=server",
    ])?;
    ensure!(
        kube.run(&[
            "get",
            "deployment",
            "web",
            "-n",
            "ops",
            "-o",
            "jsonpath={.spec.replicas}"
        ])? == "2"
    );
    ensure!(
        kube.output(&["get", "configmap", "conf", "-n", "ops"])?
            .status
            .success()
    );

    // get -w: the table first, then a row per change.
    let watch = Running::start(&kube, &["get", "configmaps", "-n", "ops", "-w"])?;
    watch.line_with("conf", Duration::from_secs(20))?;
    kube.run(&[
        "create",
        "configmap",
        "late",
        "-n",
        "ops",
        "--from-literal=x=y",
    ])?;
    let row = watch.line_with("late", Duration::from_secs(20))?;
    ensure!(
        row.split_whitespace().nth(1) == Some("1"),
        "DATA column: {row}"
    );
    drop(watch);

    // wait --for=delete: returns once a finalizer-held object is really gone.
    let held = dir.path().join("held.yaml");
    std::fs::write(
        &held,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: ops\n  finalizers: [example.com/hold]\n",
    )?;
    kube.run(&["apply", "-f", held.to_str().context("path")?])?;
    kube.run(&["delete", "configmap", "held", "-n", "ops", "--wait=false"])?;
    let mut waiting = Running::start(
        &kube,
        &[
            "wait",
            "--for=delete",
            "configmap/held",
            "-n",
            "ops",
            "--timeout=60s",
        ],
    )?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        waiting.child.try_wait()?.is_none(),
        "wait returned while the object exists"
    );
    kube.run(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "ops",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    waiting.line_with("condition met", Duration::from_secs(30))?;

    // The columns of the kinds beyond workloads, as kubectl prints them.
    let event = dir.path().join("event.yaml");
    std::fs::write(
        &event,
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.1\n  namespace: ops\ntype: Warning\nreason: Testing\nmessage: something happened\ninvolvedObject:\n  kind: Deployment\n  name: web\n  namespace: ops\n",
    )?;
    kube.run(&["apply", "-f", event.to_str().context("path")?])?;
    let events = kube.run(&["get", "events", "-n", "ops"])?;
    let mut lines = events.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{events}"
    );
    ensure!(
        events.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.get(1..)
                == Some(
                    &[
                        "Warning",
                        "Testing",
                        "deployment/web",
                        "something",
                        "happened",
                    ][..],
                )
        }),
        "{events}"
    );
    kube.run(&[
        "create",
        "rolebinding",
        "viewers",
        "-n",
        "ops",
        "--clusterrole=view",
        "--user=jane",
    ])?;
    let bindings = kube.run(&["get", "rolebindings", "-n", "ops", "-o", "wide"])?;
    let header: Vec<&str> = bindings
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
        "{bindings}"
    );
    ensure!(bindings.contains("ClusterRole/view"), "{bindings}");

    // Server-side apply: created, then updated, fields dropped from the file removed.
    let ssa = dir.path().join("ssa.yaml");
    let manifest = |data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: ops\ndata:\n{data}"
        )
    };
    std::fs::write(&ssa, manifest("  a: \"1\"\n  b: \"2\"\n"))?;
    let path = ssa.to_str().context("path")?;
    let out = kube.run(&["apply", "--server-side", "-f", path])?;
    ensure!(out.contains("configmap/ssa serverside-applied"), "{out}");
    std::fs::write(&ssa, manifest("  a: \"10\"\n"))?;
    kube.run(&["apply", "--server-side", "-f", path])?;
    let data = kube.run(&["get", "cm", "ssa", "-n", "ops", "-o", "jsonpath={.data}"])?;
    ensure!(data == r#"{"a":"10"}"#, "{data}");
    let managers = kube.run(&[
        "get",
        "cm",
        "ssa",
        "-n",
        "ops",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ])?;
    ensure!(managers == "kubectl", "{managers}");

    // Every imperative create kubectl sends as protobuf is read whole.
    for (args, check) in [
        (
            &[
                "create",
                "job",
                "once",
                "-n",
                "ops",
                "--image=busybox",
                "--",
                "echo",
                "hi",
            ][..],
            &[
                "get",
                "job",
                "once",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].command}",
            ][..],
        ),
        (
            &[
                "create",
                "cronjob",
                "tick",
                "-n",
                "ops",
                "--image=busybox",
                "--schedule=*/5 * * * *",
            ],
            &[
                "get",
                "cronjob",
                "tick",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.schedule}",
            ],
        ),
        (
            &[
                "create",
                "role",
                "reader",
                "-n",
                "ops",
                "--verb=get,list",
                "--resource=pods",
            ],
            &[
                "get",
                "role",
                "reader",
                "-n",
                "ops",
                "-o",
                "jsonpath={.rules[0].verbs}",
            ],
        ),
        (
            &[
                "create",
                "clusterrole",
                "node-reader",
                "--verb=get",
                "--resource=nodes",
            ],
            &[
                "get",
                "clusterrole",
                "node-reader",
                "-o",
                "jsonpath={.rules[0].resources}",
            ],
        ),
        (
            &[
                "create",
                "clusterrolebinding",
                "node-readers",
                "--clusterrole=node-reader",
                "--group=ops",
            ],
            &[
                "get",
                "clusterrolebinding",
                "node-readers",
                "-o",
                "jsonpath={.subjects[0].name}",
            ],
        ),
        (
            &[
                "create",
                "quota",
                "small",
                "-n",
                "ops",
                "--hard=pods=10,requests.cpu=2",
            ],
            &[
                "get",
                "quota",
                "small",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.hard.pods}",
            ],
        ),
        (
            &[
                "create",
                "priorityclass",
                "high",
                "--value=1000",
                "--description=important",
            ],
            &["get", "priorityclass", "high", "-o", "jsonpath={.value}"],
        ),
        (
            &[
                "create",
                "poddisruptionbudget",
                "web",
                "-n",
                "ops",
                "--selector=app=web",
                "--min-available=1",
            ],
            &[
                "get",
                "pdb",
                "web",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.minAvailable}",
            ],
        ),
        (
            &[
                "create",
                "ingress",
                "web",
                "-n",
                "ops",
                "--rule=shop.example/=web:80",
            ],
            &[
                "get",
                "ingress",
                "web",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.rules[0].host}",
            ],
        ),
        (
            &[
                "create",
                "service",
                "clusterip",
                "web",
                "-n",
                "ops",
                "--tcp=80:8080",
            ],
            &[
                "get",
                "service",
                "web",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.ports[0].targetPort}",
            ],
        ),
        (
            &[
                "autoscale",
                "deployment",
                "web",
                "-n",
                "ops",
                "--min=2",
                "--max=5",
                "--cpu-percent=80",
            ],
            &[
                "get",
                "hpa",
                "web",
                "-n",
                "ops",
                "-o",
                "jsonpath={.spec.maxReplicas}",
            ],
        ),
    ] {
        kube.run(args)?;
        let shown = kube.run(check)?;
        let expected = match args[1] {
            "job" => r#"["echo","hi"]"#,
            "cronjob" => "*/5 * * * *",
            "role" => r#"["get","list"]"#,
            "clusterrole" => r#"["nodes"]"#,
            "clusterrolebinding" => "ops",
            "quota" => "10",
            "priorityclass" => "1000",
            "poddisruptionbudget" => "1",
            "ingress" => "shop.example",
            "service" => "8080",
            _ => "5",
        };
        ensure!(shown == expected, "{args:?}: {shown}");
    }
    stop(server)
}

#[test]
fn the_seed_documents_manifests_apply() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    let apply = |path: &Path| -> Result<String> {
        let out = kube.command()?.args(["apply", "-f"]).arg(path).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "{}: {stderr}", path.display());
        ensure!(!stderr.contains("Warning"), "{}: {stderr}", path.display());
        Ok(String::from_utf8(out.stdout)?)
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seed-manifests");
    let mut manifests: Vec<_> = std::fs::read_dir(&fixtures)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    manifests.sort();
    ensure!(manifests.len() > 50, "{} manifests", manifests.len());
    // Documents Kubernetes itself refuses (apps/v1 requires `spec.selector`; a template
    // needs containers with images): refused here too, with its error.
    let refused: &[(&str, &str)] = &[
        (
            "seed000-03-0.yaml",
            "spec.template.spec.containers[0].image: Required value",
        ),
        (
            "seed000-10-0.yaml",
            "spec.template.spec.containers: Required value",
        ),
        ("seed000-11-0.yaml", "spec.selector: Required value"),
        ("seed000-11-1.yaml", "spec.selector: Required value"),
        ("seed000-12-0.yaml", "spec.selector: Required value"),
        ("seed000-12-1.yaml", "spec.selector: Required value"),
        ("seed002-11-1.yaml", "spec.selector: Required value"),
        ("seed002-12-1.yaml", "spec.selector: Required value"),
        ("seed002-13-2.yaml", "spec.selector: Required value"),
        ("seed004-10-0.yaml", "spec.selector: Required value"),
    ];
    let mut created = 0;
    for manifest in &manifests {
        let file = manifest
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if let Some((_, error)) = refused.iter().find(|(name, _)| *name == file) {
            let out = kube
                .command()?
                .args(["apply", "-f"])
                .arg(manifest)
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success()
                    && stderr.contains("The Deployment \"")
                    && stderr.contains("is invalid")
                    && stderr.contains(error),
                "{file}: {stderr}"
            );
            continue;
        }
        let out = apply(manifest)?;
        // Some documents share a name with an earlier one: those update it.
        ensure!(
            out.contains(" created") || out.contains(" configured"),
            "{}: {out}",
            manifest.display()
        );
        created += usize::from(out.contains(" created"));
    }
    ensure!(created > 40, "only {created} objects created");
    // Applying again changes nothing (for documents that no later one overwrote).
    let last = manifests
        .iter()
        .rev()
        .find(|m| {
            let file = m.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            !refused.iter().any(|(name, _)| *name == file)
        })
        .context("manifests")?;
    let again = apply(last)?;
    ensure!(again.contains(" unchanged"), "{again}");
    // An edited manifest updates the object.
    let edited = dir.path().join("edited.yaml");
    let text = std::fs::read_to_string(last)?;
    std::fs::write(
        &edited,
        text.replacen(
            "metadata:\n",
            "metadata:\n  labels:\n    edited: \"yes\"\n",
            1,
        ),
    )?;
    let out = apply(&edited)?;
    ensure!(out.contains(" configured"), "{out}");
    stop(server)
}

#[test]
fn the_python_client_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    // The Python that dev/setup installed the `kubernetes` package for, beside kubectl.
    let python = kubectl()?.with_file_name("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/smoke.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path().join("admin.kubeconfig"))
        .output()?;
    ensure!(
        out.status.success() && out.stdout == b"ok\n",
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stop(server)
}

#[test]
fn simulated_nodes_take_pods_that_kubectl_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    let (mut agent, nodes) = simulated_nodes(
        dir.path(),
        &kube,
        3,
        "worker",
        &[
            "--zones",
            "a,b",
            "--taint",
            "dedicated=infra:PreferNoSchedule",
        ],
    )?;
    ensure!(nodes.contains("worker-2"), "{nodes}");
    kube.run(&["run", "web", "--image=nginx", "--port=80"])?;
    let waited = kube.run(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"])?;
    ensure!(waited.contains("condition met"), "{waited}");
    let wide = kube.run(&["get", "pod", "web", "-o", "wide"])?;
    ensure!(
        wide.contains("Running") && wide.contains("worker-"),
        "{wide}"
    );
    let zone = kube.run(&[
        "get",
        "node",
        "worker-1",
        "-o",
        "jsonpath={.metadata.labels.topology\\.kubernetes\\.io/zone} {.spec.taints[0].effect}",
    ])?;
    ensure!(zone == "b PreferNoSchedule", "{zone}");
    // Deployments roll out on them, as kubectl's rollout commands expect.
    kube.run(&[
        "create",
        "deployment",
        "shop",
        "--image=nginx:1",
        "--replicas=3",
    ])?;
    let rolled = kube.run(&["rollout", "status", "deployment/shop", "--timeout=60s"])?;
    ensure!(rolled.contains("successfully rolled out"), "{rolled}");
    let waited = kube.run(&[
        "wait",
        "--for=condition=Available",
        "deployment/shop",
        "--timeout=60s",
    ])?;
    ensure!(waited.contains("condition met"), "{waited}");
    kube.run(&["set", "image", "deployment/shop", "nginx=nginx:2"])?;
    kube.run(&["rollout", "status", "deployment/shop", "--timeout=60s"])?;
    let history = kube.run(&["rollout", "history", "deployment/shop"])?;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    ensure!(revisions == ["1", "2"], "{history}");
    kube.run(&["rollout", "undo", "deployment/shop"])?;
    kube.run(&["rollout", "status", "deployment/shop", "--timeout=60s"])?;
    let image = kube.run(&[
        "get",
        "deployment",
        "shop",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    ensure!(image == "nginx:1", "{image}");
    kube.run(&["scale", "deployment/shop", "--replicas=5"])?;
    kube.run(&["rollout", "status", "deployment/shop", "--timeout=60s"])?;
    let ready = kube.run(&[
        "get",
        "deployment",
        "shop",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ])?;
    ensure!(ready == "5", "{ready}");

    // Paused: a new template waits, no new ReplicaSet; resumed, it rolls out.
    kube.run(&["rollout", "pause", "deployment/shop"])?;
    kube.run(&["set", "image", "deployment/shop", "nginx=nginx:3"])?;
    std::thread::sleep(Duration::from_millis(500));
    let sets = |kube: &Kubectl| -> Result<usize> {
        Ok(kube
            .run(&["get", "rs", "-l", "app=shop", "-o", "name"])?
            .lines()
            .count())
    };
    let before = sets(&kube)?;
    let paused = kube.run(&[
        "get",
        "deployment",
        "shop",
        "-o",
        "jsonpath={.spec.paused} {.status.conditions[?(@.type==\"Progressing\")].reason}",
    ])?;
    ensure!(paused == "true DeploymentPaused", "{paused}");
    kube.run(&["rollout", "resume", "deployment/shop"])?;
    kube.run(&["rollout", "status", "deployment/shop", "--timeout=60s"])?;
    ensure!(sets(&kube)? == before + 1, "a ReplicaSet for nginx:3");
    // The old pods go once their (simulated) grace period is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let images = kube.run(&[
            "get",
            "pods",
            "-l",
            "app=shop",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])?;
        if images.split_whitespace().count() == 5
            && images.split_whitespace().all(|i| i == "nginx:3")
        {
            break;
        }
        ensure!(Instant::now() < deadline, "{images}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Restart: same image, a new template (restartedAt), every pod replaced.
    let old_pods = kube.run(&["get", "pods", "-l", "app=shop", "-o", "name"])?;
    kube.run(&["rollout", "restart", "deployment/shop"])?;
    kube.run(&["rollout", "status", "deployment/shop", "--timeout=60s"])?;
    let restarted = kube.run(&[
        "get",
        "deployment",
        "shop",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    ])?;
    ensure!(!restarted.is_empty(), "no restartedAt annotation");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = kube.run(&["get", "pods", "-l", "app=shop", "-o", "name"])?;
        if now.lines().count() == 5 && now.lines().all(|p| !old_pods.contains(p)) {
            break;
        }
        ensure!(Instant::now() < deadline, "old pods remain: {now}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A bad flag is refused with a message.
    let bad = keelson()
        .args([
            "agent",
            "--simulate",
            "1",
            "--taint",
            "x:Sometimes",
            "--kubeconfig",
        ])
        .arg(dir.path().join("admin.kubeconfig"))
        .output()?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("taint effect"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    agent.kill()?;
    stop(server)
}

#[test]
fn kubectl_rolls_out_stateful_and_daemon_sets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    let (mut agent, _) = simulated_nodes(dir.path(), &kube, 2, "worker", &[])?;
    let manifest = dir.path().join("sets.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 2
  serviceName: web
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: agent:1
"#,
    )?;
    let manifest = manifest.to_string_lossy().into_owned();
    kube.run(&["apply", "-f", &manifest])?;
    let rolled = kube.run(&["rollout", "status", "statefulset/web", "--timeout=60s"])?;
    ensure!(rolled.contains("roll out complete"), "{rolled}");
    let rolled = kube.run(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
    ensure!(
        rolled.contains("daemon set \"agent\" successfully rolled out"),
        "{rolled}"
    );
    let table = kube.run(&["get", "sts,ds"])?;
    let row = |name: &str| -> Result<Vec<String>> {
        let line = table
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in {table}"))?;
        Ok(line.split_whitespace().map(str::to_owned).collect())
    };
    ensure!(row("statefulset.apps/web ")?[1] == "2/2", "{table}");
    ensure!(
        row("daemonset.apps/agent ")?[1..7] == ["2", "2", "2", "2", "2", "<none>"],
        "{table}"
    );
    let claims = kube.run(&["get", "pvc", "-o", "name"])?;
    ensure!(
        claims.contains("data-web-0") && claims.contains("data-web-1"),
        "{claims}"
    );

    // A new image rolls through both; the StatefulSet's history has both revisions.
    kube.run(&["set", "image", "statefulset/web", "nginx=nginx:2"])?;
    kube.run(&["set", "image", "daemonset/agent", "agent=agent:2"])?;
    kube.run(&["rollout", "status", "statefulset/web", "--timeout=60s"])?;
    kube.run(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
    let images = kube.run(&[
        "get",
        "pods",
        "-l",
        "app in (web, agent)",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ])?;
    let mut images: Vec<&str> = images.split_whitespace().collect();
    images.sort();
    ensure!(
        images == ["agent:2", "agent:2", "nginx:2", "nginx:2"],
        "{images:?}"
    );
    let history = kube.run(&["rollout", "history", "statefulset/web"])?;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    ensure!(revisions == ["1", "2"], "{history}");
    kube.run(&["rollout", "undo", "statefulset/web"])?;
    kube.run(&["rollout", "status", "statefulset/web", "--timeout=60s"])?;
    let image = kube.run(&[
        "get",
        "pod",
        "web-0",
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ])?;
    ensure!(image == "nginx:1", "{image}");
    agent.kill()?;
    stop(server)
}

#[test]
fn kubectl_runs_jobs_and_cron_jobs_on_simulated_nodes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    let (agent, _) = simulated_nodes(dir.path(), &kube, 2, "batch", &[])?;

    // A Job's pod runs to completion (the simulated nodes run it for a second).
    kube.run(&[
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ])?;
    let waited = kube.run(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=60s",
    ])?;
    ensure!(waited.contains("condition met"), "{waited}");
    let table = kube.run(&["get", "jobs"])?;
    let row = table
        .lines()
        .find(|l| l.starts_with("hello "))
        .with_context(|| table.clone())?;
    ensure!(row.contains("Complete") && row.contains("1/1"), "{table}");
    let phases = kube.run(&[
        "get",
        "pods",
        "-l",
        "job-name=hello",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ])?;
    ensure!(phases == "Succeeded", "{phases}");

    // A CronJob's Job made by hand, owned by it.
    kube.run(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=0 0 1 1 *",
        "--",
        "date",
    ])?;
    kube.run(&["create", "job", "tick-now", "--from=cronjob/tick"])?;
    let waited = kube.run(&[
        "wait",
        "--for=condition=complete",
        "job/tick-now",
        "--timeout=60s",
    ])?;
    ensure!(waited.contains("condition met"), "{waited}");
    let owner = kube.run(&[
        "get",
        "job",
        "tick-now",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ])?;
    ensure!(owner == "CronJob/tick", "{owner}");
    let bad = kube.output(&[
        "create",
        "cronjob",
        "never",
        "--image=busybox",
        "--schedule=61 * * * *",
    ])?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("spec.schedule"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Deleting a Job takes its pods.
    kube.run(&["delete", "job", "hello"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kube
        .run(&["get", "pods", "-l", "job-name=hello", "-o", "name"])?
        .trim()
        .is_empty()
    {
        ensure!(Instant::now() < deadline, "hello's pod was not collected");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    stop(server)
}

#[test]
fn kubectl_cordons_and_drains_nodes_within_disruption_budgets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _) = running_server(dir.path())?;
    let kube = Kubectl::admin(dir.path());
    let (mut agent, _) = simulated_nodes(dir.path(), &kube, 3, "drain", &[])?;
    let result = (|| -> Result<()> {
        kube.run(&[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=3",
        ])?;
        kube.run(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
        let placed = |kube: &Kubectl| -> Result<Vec<String>> {
            Ok(kube
                .run(&[
                    "get",
                    "pods",
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
                ])?
                .lines()
                .map(str::to_owned)
                .collect())
        };
        let before = placed(&kube)?;
        let node = before.first().context("no web pod placed")?.clone();

        // cordon marks the node unschedulable, as `get nodes` shows.
        let cordoned = kube.run(&["cordon", &node])?;
        ensure!(
            cordoned.contains(&format!("node/{node} cordoned")),
            "{cordoned}"
        );
        let nodes = kube.run(&["get", "nodes"])?;
        ensure!(
            nodes
                .lines()
                .any(|l| l.starts_with(&node) && l.contains("Ready,SchedulingDisabled")),
            "{nodes}"
        );

        // drain evicts its pods; the Deployment brings them back elsewhere.
        let drained = kube.run(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ])?;
        ensure!(
            drained.contains("evicting pod default/web-")
                && drained.contains(&format!("node/{node} drained")),
            "{drained}"
        );
        kube.run(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
        let after = placed(&kube)?;
        ensure!(
            after.len() == 3 && after.iter().all(|n| *n != node),
            "{after:?}"
        );
        kube.run(&["uncordon", &node])?;

        // A budget that needs every replica blocks a drain: evictions get 429 until the
        // timeout, and the pods stay where they are.
        kube.run(&[
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--min-available=3",
        ])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let numbers = kube.run(&[
                "get",
                "pdb",
                "web",
                "-o",
                "jsonpath={.status.expectedPods} {.status.currentHealthy} {.status.disruptionsAllowed}",
            ])?;
            if numbers == "3 3 0" {
                break;
            }
            ensure!(Instant::now() < deadline, "budget status: {numbers}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let table = kube.run(&["get", "pdb", "web"])?;
        ensure!(
            table
                .lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().take(4).collect::<Vec<_>>()
                    == ["web", "3", "N/A", "0"]),
            "{table}"
        );
        let busy = after.first().context("no web pod placed")?.clone();
        let pods_before = kube.run(&["get", "pods", "-l", "app=web", "-o", "name"])?;
        let blocked = kube.output(&[
            "drain",
            &busy,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=5s",
        ])?;
        let stderr = String::from_utf8_lossy(&blocked.stderr);
        ensure!(
            !blocked.status.success()
                && stderr
                    .contains("Cannot evict pod as it would violate the pod's disruption budget."),
            "{stderr}"
        );
        let pods_after = kube.run(&["get", "pods", "-l", "app=web", "-o", "name"])?;
        ensure!(pods_before == pods_after, "{pods_before} / {pods_after}");
        let terminating = kube.run(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.deletionTimestamp}",
        ])?;
        ensure!(terminating.is_empty(), "{terminating}");
        Ok(())
    })();
    agent.kill()?;
    result?;
    stop(server)
}
