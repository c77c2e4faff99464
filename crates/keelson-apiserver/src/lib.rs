//! keelson's API server: the Kubernetes REST API over HTTPS, on the state store.
//!
//! Built so far: credentials (a cluster CA, the serving certificate, admin client
//! certificate, token and kubeconfig; `pki.rs`), authentication by client certificate or
//! bearer token (`auth.rs`), Kubernetes `Status` errors (`status.rs`), and the HTTPS server
//! with health, version, metrics and discovery endpoints (`server.rs`), and the resource
//! REST API over the store (`rest/`), whose lists and watches are served from the watch cache
//! (`cache/`).

mod auth;
mod cache;
mod pki;
mod rest;
mod server;
mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::User;
pub use cache::{CacheConfig, CacheError};
pub use pki::{ADMIN_GROUP, ADMIN_USER, Pki, PkiError, default_server_names};
pub use server::{
    ApiServer, BuildInfo, KUBERNETES_MAJOR, KUBERNETES_MINOR, ServerConfig, ServerError,
};
pub use status::{ApiError, StatusDetails};
