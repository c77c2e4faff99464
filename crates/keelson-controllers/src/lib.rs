//! keelson's controllers. Each module is one controller: a kube-rs `Controller` whose
//! `reconcile` compares what an object asks for with what exists, acts on the difference
//! through the API server, and returns an `Action`. No controller depends on another, and
//! none reads the store. [`run`] starts them all.

mod deployment;
mod events;
mod gc;
mod replicaset;
mod serviceaccount;
mod workload;

use kube::Client;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Runs every controller until the process ends.
pub async fn run(client: Client) {
    tokio::join!(
        serviceaccount::run(client.clone()),
        replicaset::run(client.clone()),
        deployment::run(client.clone()),
        gc::run(client.clone()),
    );
}
