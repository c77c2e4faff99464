//! The container runtime seam: CRI v1 to containerd over its unix socket. The agent runs
//! its own containerd (config, state and socket under the agent's data dir, see
//! [`config`]), gives it a locally made pause image ([`pause`], [`archive`]), and talks to
//! it through the generated CRI clients of the `k8s-cri` crate.

pub mod archive;
pub mod config;
mod containerd;
pub mod pause;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, VersionRequest, VersionResponse};
use tokio::io::AsyncWriteExt;
use tonic::transport::{Channel, Endpoint};

pub use containerd::{Containerd, write_network};

/// containerd's own gRPC message limit; tonic's default (4 MiB) is too small for the
/// lists of a busy node.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The containerd namespace the CRI works in.
pub const CRI_NAMESPACE: &str = "k8s.io";

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("containerd exited ({status}); its log is {log}")]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("containerd did not answer on {socket} within {seconds} s; its log is {log}")]
    NotReady {
        socket: PathBuf,
        seconds: u64,
        log: PathBuf,
    },
    #[error("connecting to {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("CRI {call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("importing an image: {0}")]
    Import(String),
    #[error("no pause image for {0} yet")]
    NoPause(&'static str),
    #[error("image {0} did not appear in the CRI within {1} s of its import")]
    ImageNotSeen(String, u64),
}

impl CriError {
    pub(crate) fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
        move |status| CriError::Call {
            call,
            status: Box::new(status),
        }
    }
}

/// The two CRI services of one runtime.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to the runtime listening on `socket` (failing at once if nothing does).
    pub async fn connect(socket: &Path) -> Result<Cri, CriError> {
        let failed = |source| CriError::Connect {
            socket: socket.to_owned(),
            source,
        };
        let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))
            .map_err(failed)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(failed)?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            images: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
        })
    }

    pub async fn version(&self) -> Result<VersionResponse, CriError> {
        let request = VersionRequest {
            version: "v1".into(),
        };
        Ok(self
            .runtime
            .clone()
            .version(request)
            .await
            .map_err(CriError::call("Version"))?
            .into_inner())
    }

    /// Whether the runtime has image `name` (as the CRI normalizes names).
    pub async fn has_image(&self, name: &str) -> Result<bool, CriError> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let status = self
            .images
            .clone()
            .image_status(request)
            .await
            .map_err(CriError::call("ImageStatus"))?
            .into_inner();
        Ok(status.image.is_some())
    }

    /// Waits until the CRI sees image `name`: it learns of imported images from
    /// containerd's events, a moment after the import.
    pub async fn wait_for_image(&self, name: &str, limit: Duration) -> Result<(), CriError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.has_image(name).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CriError::ImageNotSeen(name.to_owned(), limit.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Loads an image archive (docker or OCI) into containerd's CRI namespace, with the `ctr`
/// that comes with containerd.
pub async fn import_image(socket: &Path, archive: &[u8]) -> Result<(), CriError> {
    let mut child = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", CRI_NAMESPACE, "images", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CriError::Spawn {
            program: "ctr".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(archive)
            .await
            .map_err(|e| CriError::Import(format!("writing to ctr: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| CriError::Import(format!("waiting for ctr: {e}")))?;
    if !output.status.success() {
        return Err(CriError::Import(format!(
            "ctr {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
