//! The agent's own containerd: its config and CNI directory written, the process started
//! (or one already serving the socket reused, as after an agent restart), and the CRI
//! connection once it answers. containerd is not tied to the agent's life: its shims and
//! containers keep running when the agent stops, and a restarted agent picks them up.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;

use super::config::{Network, Paths, cni_conflist, containerd_config};
use super::pause::{PAUSE_IMAGE, pause_archive};
use super::{Cri, CriError, import_image};

/// How long containerd gets to answer after it starts.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A running containerd and the CRI clients for it.
pub struct Containerd {
    pub paths: Paths,
    pub cri: Cri,
    /// The process, when this agent started it (not when it found one running).
    child: Option<Child>,
}

fn write(path: &Path, text: &str) -> Result<(), CriError> {
    let failed = |source| CriError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    // Written aside and renamed, so containerd never reads half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

/// Writes the CNI network list where the containerd of `paths` reads it.
pub fn write_network(paths: &Paths, network: &Network) -> Result<(), CriError> {
    let file = paths.cni_conf_dir().join("10-keelson.conflist");
    write(&file, &cni_conflist(network, paths))
}

impl Containerd {
    /// Writes containerd's config, connects to the containerd on its socket or starts
    /// one, and makes sure the pause image is there.
    pub async fn start(paths: Paths) -> Result<Containerd, CriError> {
        write(&paths.config_file(), &containerd_config(&paths))?;
        // (The config's directory, `paths.dir`, was made by writing the config.)
        let cni = paths.cni_conf_dir();
        std::fs::create_dir_all(&cni).map_err(|source| CriError::Io { path: cni, source })?;
        if let Some(dir) = paths.socket.parent() {
            std::fs::create_dir_all(dir).map_err(|source| CriError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let (cri, child) = match Cri::connect(&paths.socket).await {
            Ok(cri) if cri.version().await.is_ok() => (cri, None),
            _ => {
                let mut child = spawn(&paths)?;
                let cri = wait_ready(&paths, &mut child).await?;
                (cri, Some(child))
            }
        };
        if !cri.has_image(PAUSE_IMAGE).await? {
            let archive = pause_archive().ok_or(CriError::NoPause(std::env::consts::ARCH))?;
            import_image(&paths.socket, &archive).await?;
            cri.wait_for_image(PAUSE_IMAGE, Duration::from_secs(10))
                .await?;
        }
        Ok(Containerd { paths, cri, child })
    }

    /// Writes the CNI network list (containerd watches the directory and loads it).
    pub fn set_network(&self, network: &Network) -> Result<(), CriError> {
        write_network(&self.paths, network)
    }

    /// Stops the containerd this agent started (asks it to, then kills it after 10 s).
    /// Pods' shims outlive it, as they would a crash; stop the pods first to remove them.
    pub async fn stop(mut self) -> Result<(), CriError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // containerd shuts down cleanly on SIGTERM.
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // Already gone is fine: the wait below reaps it.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let stopped = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        if stopped.is_err() {
            let _ = child.kill().await;
        }
        Ok(())
    }
}

fn spawn(paths: &Paths) -> Result<Child, CriError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log_file())
        .map_err(|source| CriError::Io {
            path: paths.log_file(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| CriError::Io {
        path: paths.log_file(),
        source,
    })?;
    tokio::process::Command::new("containerd")
        .arg("--config")
        .arg(paths.config_file())
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C meant for the agent does not stop containerd.
        .process_group(0)
        .spawn()
        .map_err(|source| CriError::Spawn {
            program: "containerd".into(),
            source,
        })
}

async fn wait_ready(paths: &Paths, child: &mut Child) -> Result<Cri, CriError> {
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CriError::Exited {
                status,
                log: paths.log_file(),
            });
        }
        if let Ok(cri) = Cri::connect(&paths.socket).await
            && cri.version().await.is_ok()
        {
            return Ok(cri);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CriError::NotReady {
                socket: paths.socket.clone(),
                seconds: START_LIMIT.as_secs(),
                log: paths.log_file(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
