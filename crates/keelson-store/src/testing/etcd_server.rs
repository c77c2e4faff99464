//! Starts a private etcd (Debian's `etcd-server`) on random loopback ports in a temp dir.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running etcd that is killed and deleted when dropped.
pub struct EtcdServer {
    child: Child,
    dir: TempDir,
    endpoint: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary: `$KEELSON_ETCD_BIN`, else `etcd` on the PATH.
fn etcd_binary() -> PathBuf {
    std::env::var_os("KEELSON_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "etcd".into())
}

/// Whether an etcd client port answers `/health` with `"health":"true"`. A bare TCP
/// connect is not enough: with many etcds starting at once, a port can belong to another
/// one's peer listener.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains(r#""health":"true""#)
}

impl EtcdServer {
    /// Starts etcd with its data in a new temp dir under `base` (the system temp dir if
    /// `None`) and waits until it accepts connections. Fails, rather than skipping, when
    /// etcd is not installed.
    pub fn start_in(base: Option<&std::path::Path>) -> std::io::Result<Self> {
        let mut last_error = None;
        // A port picked here can be taken before etcd binds it: retry with new ones.
        for _ in 0..5 {
            let dir = match base {
                Some(base) => tempfile::Builder::new()
                    .prefix("keelson-etcd")
                    .tempdir_in(base)?,
                None => tempfile::Builder::new().prefix("keelson-etcd").tempdir()?,
            };
            match Self::launch(dir) {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("etcd did not start")))
    }

    /// [`EtcdServer::start_in`] the system temp dir.
    pub fn start() -> std::io::Result<Self> {
        Self::start_in(None)
    }

    fn launch(dir: TempDir) -> std::io::Result<Self> {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let mut child = Command::new(etcd_binary())
            .arg("--name=keelson-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=keelson-test={peer}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {}: {e} (install Debian's etcd-server; ./dev/setup does)",
                        etcd_binary().display()
                    ),
                )
            })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "etcd exited with {status}: {log}"
                )));
            }
            if healthy(client_port) {
                return Ok(EtcdServer {
                    child,
                    dir,
                    endpoint: client,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other("etcd did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where etcd keeps its data and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
