//! The `keelson` command line as a user runs it: version, help, and the server's
//! lifecycle over the embedded store (start, health, metrics, SIGTERM, restart, bad data).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A plain HTTP/1.1 GET; returns (status, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.get(9..12).context("short response")?.parse()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn start_server(data_dir: &Path, port: u16) -> Result<Child> {
    Ok(keelson()
        .args(["server", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn wait_ready(child: &mut Child, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("server exited early with {status}");
        }
        if let Ok((200, _)) = http_get(port, "/readyz") {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "server not ready within 30 s");
        std::thread::sleep(Duration::from_millis(50));
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
    let port = free_port()?;
    let mut server = start_server(dir.path(), port)?;
    wait_ready(&mut server, port)?;
    ensure!(http_get(port, "/livez")?.0 == 200);
    let (status, metrics) = http_get(port, "/metrics")?;
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
        dir.path().join("db/state.db").exists(),
        "the store lives in DATA_DIR/db"
    );

    sigterm(&server)?;
    let out = wait_exit(server)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same data dir starts again.
    let mut server = start_server(dir.path(), port)?;
    wait_ready(&mut server, port)?;
    sigterm(&server)?;
    ensure!(wait_exit(server)?.status.success());
    Ok(())
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
