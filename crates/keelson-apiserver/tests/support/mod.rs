//! Starting an in-process API server over a fresh SQLite store, for the tests.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use keelson_apiserver::testing::{Client, ClientAuth};
use keelson_apiserver::{ApiServer, BuildInfo, CacheConfig, ServerConfig};
use keelson_store::{SqliteConfig, SqliteStore, Store};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

pub struct Running {
    pub addr: String,
    pub ca: String,
    pub token: String,
    pub admin: ClientAuth,
    pub store: Arc<SqliteStore>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), keelson_apiserver::ServerError>>,
}

impl Running {
    /// A client authenticated as the admin.
    pub fn client(&self) -> Client {
        Client::new(&self.addr, &self.ca, self.admin.clone())
    }

    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await??;
        self.store.close().await;
        Ok(())
    }
}

pub async fn start(data_dir: &Path) -> Result<Running> {
    start_with(data_dir, CacheConfig::default()).await
}

/// A server whose watch cache is configured as given.
pub async fn start_with(data_dir: &Path, cache: CacheConfig) -> Result<Running> {
    let sqlite =
        Arc::new(SqliteStore::open(SqliteConfig::new(data_dir.join("db/state.db"))).await?);
    let store: Arc<dyn Store> = sqlite.clone();
    let config = ServerConfig {
        data_dir: data_dir.to_path_buf(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tls_sans: vec![],
        build: BuildInfo {
            version: "0.1.0".into(),
            commit: "abc123".into(),
        },
        cache,
    };
    let server = ApiServer::bind(config, store, Registry::default()).await?;
    let addr = server.url().trim_start_matches("https://").to_owned();
    let pki = server.pki().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        ca: pki.ca_cert.clone(),
        token: pki.admin_token.clone(),
        admin: ClientAuth::Certificate {
            cert_pem: pki.admin_cert,
            key_pem: pki.admin_key,
        },
        store: sqlite,
        stop: Some(stop),
        task,
    })
}
