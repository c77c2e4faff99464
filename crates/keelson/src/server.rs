//! `keelson server`: the control plane on this machine.
//!
//! Opens the datastore (embedded SQLite in the data dir by default, or etcd), runs
//! automatic compaction, and serves the Kubernetes API over HTTPS (today: health, version
//! and metrics, behind client-certificate or token authentication) until SIGINT or SIGTERM,
//! then closes the store cleanly. On first start it creates the cluster's credentials and
//! `DATA_DIR/admin.kubeconfig`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use keelson_apiserver::{ApiServer, BuildInfo, ServerConfig};
use keelson_store::{
    CompactionPolicy, Compactor, EtcdConfig, EtcdStore, Instrumented, SqliteConfig, SqliteStore,
    Store, StoreMetrics,
};
use prometheus_client::registry::Registry;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where the server keeps its state (default: /var/lib/keelson as root,
    /// ~/.local/share/keelson otherwise).
    #[arg(long, env = "KEELSON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// The datastore: `sqlite` (embedded, in the data dir) or etcd client URLs separated by
    /// commas (`http://10.0.0.1:2379,http://10.0.0.2:2379`).
    #[arg(long, env = "KEELSON_DATASTORE", default_value = "sqlite")]
    pub datastore: String,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// HTTPS port of the API.
    #[arg(long, default_value_t = 6443)]
    pub port: u16,

    /// Extra DNS names or IP addresses for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,

    /// Keep at least this many revisions of history.
    #[arg(long, default_value_t = 10_000)]
    pub history_revisions: i64,

    /// Keep at least this many seconds of history.
    #[arg(long, default_value_t = 300)]
    pub history_seconds: u64,

    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub disable_scheduler: bool,

    /// Do not run the controllers in this process.
    #[arg(long)]
    pub disable_controllers: bool,
}

/// The default data dir: system-wide for root, per user otherwise (as k3s does).
fn default_data_dir() -> Result<PathBuf> {
    // /proc/self belongs to the process's effective user.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return Ok(PathBuf::from("/var/lib/keelson"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/keelson"))
}

pub async fn run(args: ServerArgs, build: BuildInfo) -> Result<()> {
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let mut registry = Registry::default();
    let mut sqlite = None;
    let backend: Arc<dyn Store> = match args.datastore.as_str() {
        "sqlite" => {
            let path = data_dir.join("db").join("state.db");
            let store = Arc::new(SqliteStore::open(SqliteConfig::new(&path)).await?);
            store.register_metrics(&mut registry);
            tracing::info!(path = %path.display(), "opened embedded SQLite datastore");
            sqlite = Some(store.clone());
            store
        }
        urls if urls.starts_with("http://") || urls.starts_with("https://") => {
            let endpoints: Vec<String> = urls.split(',').map(|s| s.trim().to_owned()).collect();
            let store = EtcdStore::connect(EtcdConfig::new(endpoints.clone())).await?;
            tracing::info!(?endpoints, "connected to etcd datastore");
            Arc::new(store)
        }
        other => {
            bail!("--datastore must be `sqlite` or etcd URLs (http://host:2379), not {other:?}")
        }
    };
    let metrics = StoreMetrics::default();
    metrics.register(&mut registry);
    let store: Arc<dyn Store> = Arc::new(Instrumented::new(backend, metrics));
    tracing::info!(
        revision = store.current_revision().await?,
        compacted = store.compacted_revision().await?,
        "datastore ready"
    );
    let compactor = Compactor::spawn(
        store.clone(),
        CompactionPolicy {
            retain_revisions: args.history_revisions,
            retain_for: Duration::from_secs(args.history_seconds),
            ..CompactionPolicy::default()
        },
    );

    let config = ServerConfig {
        data_dir: data_dir.clone(),
        bind_address: args.bind_address,
        port: args.port,
        tls_sans: args.tls_sans.clone(),
        build,
        cache: Default::default(),
    };
    let server = ApiServer::bind(config, store, registry).await?;
    tracing::info!(url = server.url(), data_dir = %data_dir.display(), "keelson server running");
    eprintln!(
        "keelson is serving at {}. To use it:\n  export KUBECONFIG={}\n  kubectl version",
        server.url(),
        server.kubeconfig_path().display()
    );
    // In-process components are API clients too, over loopback with the admin credentials.
    let client = if args.disable_scheduler && args.disable_controllers {
        None
    } else {
        Some(crate::kube_client(server.kubeconfig_path()).await?)
    };
    let scheduler = if args.disable_scheduler {
        None
    } else {
        let client = client.clone().context("admin client")?;
        Some(tokio::spawn(async move {
            let result = keelson_scheduler::run(
                client,
                keelson_scheduler::plugins::default_profile(),
                keelson_scheduler::SchedulerConfig::default(),
            )
            .await;
            if let Err(error) = result {
                tracing::error!(%error, "the scheduler stopped");
            }
        }))
    };
    let controllers = if args.disable_controllers {
        None
    } else {
        let client = client.context("admin client")?;
        Some(tokio::spawn(keelson_controllers::run(
            client,
            keelson_controllers::ControllersConfig::default(),
        )))
    };
    server.serve(shutdown_signal()).await?;
    for task in [scheduler, controllers].into_iter().flatten() {
        task.abort();
    }

    drop(compactor);
    if let Some(store) = sqlite {
        store.close().await;
    }
    tracing::info!("keelson server stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
