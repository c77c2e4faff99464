//! Events the controllers record on the objects they act for, as `kubectl describe` shows
//! them (`Normal  SuccessfulCreate  Created pod: web-7xk2p`).

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use keelson_api::event::{Reporter, event};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

/// Records an event about `object`; failures are only logged (events are best effort).
pub async fn record<K>(
    client: &Client,
    component: &str,
    object: &K,
    kind: &str,
    reason: &str,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let about = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(object.name_any()),
        namespace: object.namespace(),
        uid: object.meta().uid.clone(),
        resource_version: object.meta().resource_version.clone(),
        ..Default::default()
    };
    let reporter = Reporter {
        component,
        host: None,
    };
    let event = event(reporter, about, kind, reason, message);
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        tracing::debug!(%error, reason, "event not recorded");
    }
}
