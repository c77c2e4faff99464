//! The `keelson` binary: every keelson component behind one command line.
//!
//! * `keelson server` runs a cluster control plane on this machine: the state store with
//!   automatic compaction, the HTTPS API server, and the scheduler;
//! * `keelson agent` runs this machine as a node on its own containerd, joined to a
//!   server by kubeconfig; `keelson agent --simulate N` runs N simulated nodes instead;
//! * `keelson version` prints the version and the commit it was built from.

mod agent;
mod server;

use clap::{Parser, Subcommand};

/// keelson: a Kubernetes-compatible container orchestrator in one binary.
#[derive(Parser)]
#[command(name = "keelson", version = version(), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the keelson server (control plane) on this machine.
    Server(server::ServerArgs),
    /// Run a node agent joined to a server: this machine on containerd, or simulated nodes.
    Agent(agent::AgentArgs),
    /// Print the version and git commit.
    Version,
}

fn version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("KEELSON_GIT_COMMIT"),
        ")"
    )
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        // `{:#}` prints the whole cause chain on one line.
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            println!("keelson {}", version());
            Ok(())
        }
        Command::Server(args) => {
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let build = keelson_apiserver::BuildInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: env!("KEELSON_GIT_COMMIT").into(),
            };
            runtime.block_on(server::run(args, build))
        }
        Command::Agent(args) => {
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(agent::run(args))
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KEELSON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// A Kubernetes client from a kubeconfig file: how in-process components (with the admin
/// kubeconfig) and agents reach the API server.
async fn kube_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let parsed = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
