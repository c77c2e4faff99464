//! ServiceAccount controller: every namespace that is not being deleted has a `default`
//! ServiceAccount (recreated if deleted).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};

use crate::ControllerError;

pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .watches(accounts, watcher::Config::default(), |account| {
            account
                .namespace()
                .map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(
    namespace: Arc<Namespace>,
    client: Arc<Client>,
) -> Result<Action, ControllerError> {
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced((*client).clone(), &name);
    if accounts.get_opt("default").await?.is_none() {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            // Created meanwhile, or the namespace is going away.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 || e.code == 403 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Namespace>, error: &ControllerError, _: Arc<Client>) -> Action {
    tracing::warn!(%error, "serviceaccount controller");
    Action::requeue(Duration::from_secs(2))
}
