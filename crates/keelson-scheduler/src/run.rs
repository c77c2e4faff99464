//! The scheduler as an API client: reflectors of the nodes and pods, a queue of the pods it
//! has to place (priority first, then age; failures back off), one framework cycle per pod,
//! binding through `pods/binding`, and `FailedScheduling` events and conditions for pods
//! that fit nowhere. It talks only to the API server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Event, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::framework::{FitError, Profile, schedule};
use crate::snapshot::Snapshot;

/// How the scheduler behaves.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or unset) are ours.
    pub name: String,
    /// Wait before retrying a pod that fit nowhere; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: "default-scheduler".into(),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("a watch ended before it listed everything")]
    WatchEnded,
}

/// A pod that could not be placed: when to try again, and the event already reported.
struct Backoff {
    attempts: u32,
    retry_at: Instant,
    event: Option<(String, String, i32)>,
}

/// A pod bound by this scheduler that the pod reflector has not shown bound yet.
struct Assumed {
    pod: Pod,
    node: String,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Runs until the client's server goes away for good.
pub async fn run(
    client: Client,
    profile: Profile,
    config: SchedulerConfig,
) -> Result<(), SchedulerError> {
    let wake = Arc::new(Notify::new());
    let nodes = reflect::<Node>(Api::all(client.clone()), wake.clone());
    let pods = reflect::<Pod>(Api::all(client.clone()), wake.clone());
    nodes
        .wait_until_ready()
        .await
        .map_err(|_| SchedulerError::WatchEnded)?;
    pods.wait_until_ready()
        .await
        .map_err(|_| SchedulerError::WatchEnded)?;
    let mut backoffs: HashMap<String, Backoff> = HashMap::new();
    let mut assumed: HashMap<String, Assumed> = HashMap::new();
    loop {
        let now = Instant::now();
        let next_retry = backoffs
            .values()
            .map(|b| b.retry_at)
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + Duration::from_secs(5));
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(next_retry) => {}
        }
        cycle(
            &client,
            &profile,
            &config,
            &nodes,
            &pods,
            &mut backoffs,
            &mut assumed,
        )
        .await;
    }
}

/// Keeps a store of `K` current, waking the scheduler on every change.
fn reflect<K>(api: Api<K>, wake: Arc<Notify>) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |_| {
            wake.notify_one();
            futures::future::ready(())
        });
    tokio::spawn(stream);
    store
}

/// Places every pod that is due, in queue order, on one snapshot.
async fn cycle(
    client: &Client,
    profile: &Profile,
    config: &SchedulerConfig,
    nodes: &Store<Node>,
    pods: &Store<Pod>,
    backoffs: &mut HashMap<String, Backoff>,
    assumed: &mut HashMap<String, Assumed>,
) {
    let all: Vec<Arc<Pod>> = pods.state();
    let live: HashMap<String, &Arc<Pod>> = all.iter().map(|p| (uid(p), p)).collect();
    // Assumed pods the reflector now shows bound (or gone) need no remembering.
    assumed.retain(|uid, _| live.get(uid).is_some_and(|p| bound_node(p).is_none()));
    backoffs.retain(|uid, _| live.contains_key(uid));

    let placed = all
        .iter()
        .filter(|p| bound_node(p).is_some() && !is_terminal(p))
        .map(|p| (**p).clone())
        .chain(assumed.values().map(|a| {
            let mut pod = a.pod.clone();
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(a.node.clone());
            }
            pod
        }));
    let mut snapshot = Snapshot::new(
        nodes.state().iter().map(|n| (**n).clone()).collect(),
        placed,
    );

    let now = Instant::now();
    let mut queue: Vec<&Arc<Pod>> = all
        .iter()
        .filter(|p| {
            let spec = p.spec.as_ref();
            let ours = spec
                .and_then(|s| s.scheduler_name.as_deref())
                .is_none_or(|n| n == config.name);
            ours && bound_node(p).is_none()
                && p.metadata.deletion_timestamp.is_none()
                && !is_terminal(p)
                && !assumed.contains_key(&uid(p))
                && backoffs.get(&uid(p)).is_none_or(|b| b.retry_at <= now)
        })
        .collect();
    // Highest priority first, then the oldest.
    queue.sort_by(|a, b| {
        let priority = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        priority(b).cmp(&priority(a)).then_with(|| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        })
    });
    for pod in queue {
        let key = uid(pod);
        match schedule(profile, &snapshot, pod) {
            Ok(placement) => match bind(client, pod, &placement.node).await {
                Ok(()) => {
                    tracing::debug!(pod = ?pod.metadata.name, node = %placement.node, "bound");
                    snapshot.assume((**pod).clone(), placement.index);
                    assumed.insert(
                        key.clone(),
                        Assumed {
                            pod: (**pod).clone(),
                            node: placement.node,
                        },
                    );
                    backoffs.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(pod = ?pod.metadata.name, %error, "binding failed");
                    back_off(config, backoffs, &key);
                }
            },
            Err(fit) => {
                let backoff = back_off(config, backoffs, &key);
                if let Err(error) = report_unschedulable(client, config, pod, &fit, backoff).await {
                    tracing::warn!(pod = ?pod.metadata.name, %error, "reporting failed");
                }
            }
        }
    }
}

fn back_off<'a>(
    config: &SchedulerConfig,
    backoffs: &'a mut HashMap<String, Backoff>,
    key: &str,
) -> &'a mut Backoff {
    let backoff = backoffs.entry(key.to_owned()).or_insert(Backoff {
        attempts: 0,
        retry_at: Instant::now(),
        event: None,
    });
    let wait = config
        .initial_backoff
        .saturating_mul(1 << backoff.attempts.min(16))
        .min(config.max_backoff);
    backoff.attempts += 1;
    backoff.retry_at = Instant::now() + wait;
    backoff
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
        .await
        .map(|_| ())
}

/// The `FailedScheduling` event (one per pod and message, its count raised on repeats) and
/// the pod's `PodScheduled=False` condition that `kubectl describe` shows.
async fn report_unschedulable(
    client: &Client,
    config: &SchedulerConfig,
    pod: &Pod,
    fit: &FitError,
    backoff: &mut Backoff,
) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.clone().unwrap_or_default();
    let message = fit.to_string();
    let now = Timestamp::now();
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    match &mut backoff.event {
        Some((event, said, count)) if *said == message => {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": Time(now)});
            events
                .patch(event, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        _ => {
            let event_name = format!("{name}.{:x}", now.as_nanosecond());
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(event_name.clone()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_owned()),
                    uid: pod.metadata.uid.clone(),
                    resource_version: pod.metadata.resource_version.clone(),
                    ..Default::default()
                },
                reason: Some("FailedScheduling".into()),
                message: Some(message.clone()),
                type_: Some("Warning".into()),
                count: Some(1),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                event_time: Some(MicroTime(now)),
                reporting_component: Some(config.name.clone()),
                reporting_instance: Some(config.name.clone()),
                action: Some("Scheduling".into()),
                source: Some(k8s_openapi::api::core::v1::EventSource {
                    component: Some(config.name.clone()),
                    host: None,
                }),
                ..Default::default()
            };
            events.create(&PostParams::default(), &event).await?;
            backoff.event = Some((event_name, message.clone(), 1));
        }
    }
    let condition = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": message, "lastProbeTime": null,
        "lastTransitionTime": Time(now)}]}});
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&condition),
        )
        .await?;
    Ok(())
}
