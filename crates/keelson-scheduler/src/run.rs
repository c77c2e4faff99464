//! The scheduler as an API client: watches of the nodes and pods feeding a [`ClusterState`]
//! kept current event by event, a queue of the pods it has to place (priority first, then
//! age; failures back off), one framework cycle per pod over a sample of the nodes,
//! binding through `pods/binding` in the background (the pod assumed on its node
//! meanwhile), and `FailedScheduling` events and conditions for pods that fit nowhere. It
//! talks only to the API server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Event, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use keelson_api::event::{Reporter, event};

use crate::framework::{FitError, NodeCursor, Profile, schedule_sampled};
use crate::preemption::{Preemption, preempt};
use crate::state::{ClusterState, uid};

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

/// At most this many bindings in flight: binding is a round trip, and the cycle does not
/// wait for it (the pod is assumed on its node meanwhile).
const BINDS_IN_FLIGHT: usize = 64;
/// The cycle yields to other tasks after this many pods.
const PODS_BETWEEN_YIELDS: usize = 64;

/// What the watches and the binding tasks tell the loop.
enum Change {
    Node(Box<watcher::Event<Node>>),
    Pod(Box<watcher::Event<Pod>>),
    /// A binding finished: the pod's uid, and whether it was bound.
    Bound(String, Result<(), kube::Error>),
}

/// Runs until the client's server goes away for good.
pub async fn run(
    client: Client,
    profile: Profile,
    config: SchedulerConfig,
) -> Result<(), SchedulerError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
    forward(Api::<Node>::all(client.clone()), tx.clone(), |e| {
        Change::Node(Box::new(e))
    });
    forward(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
        Change::Pod(Box::new(e))
    });
    let mut scheduler = Scheduler {
        client,
        profile,
        state: ClusterState::new(&config.name),
        config,
        backoffs: HashMap::new(),
        cursor: NodeCursor::adaptive(),
        binds: Arc::new(Semaphore::new(BINDS_IN_FLIGHT)),
        changes: tx,
        listing_nodes: None,
        listing_pods: None,
        synced: (false, false),
    };
    loop {
        let now = Instant::now();
        let next_retry = scheduler
            .backoffs
            .values()
            .map(|b| b.retry_at)
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + Duration::from_secs(5));
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else {
                    return Err(SchedulerError::WatchEnded);
                };
                scheduler.apply(change);
                // Take in everything that has arrived before deciding anything.
                while let Ok(change) = rx.try_recv() {
                    scheduler.apply(change);
                }
            }
            () = tokio::time::sleep_until(next_retry) => {}
        }
        if scheduler.synced == (true, true) {
            scheduler.cycle().await;
        }
    }
}

/// Sends every event of a watch of `K` to the loop.
fn forward<K>(
    api: Api<K>,
    tx: tokio::sync::mpsc::UnboundedSender<Change>,
    wrap: fn(watcher::Event<K>) -> Change,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .for_each(move |event| {
            if let Ok(event) = event {
                let _ = tx.send(wrap(event));
            }
            futures::future::ready(())
        });
    tokio::spawn(stream);
}

struct Scheduler {
    client: Client,
    profile: Profile,
    config: SchedulerConfig,
    state: ClusterState,
    backoffs: HashMap<String, Backoff>,
    cursor: NodeCursor,
    binds: Arc<Semaphore>,
    changes: tokio::sync::mpsc::UnboundedSender<Change>,
    /// Objects of a watch (re)listing, until it is done.
    listing_nodes: Option<Vec<Arc<Node>>>,
    listing_pods: Option<Vec<Arc<Pod>>>,
    /// Whether nodes and pods have each been listed once.
    synced: (bool, bool),
}

impl Scheduler {
    fn apply(&mut self, change: Change) {
        use watcher::Event;
        match change {
            Change::Node(event) => match *event {
                Event::Apply(node) => self.state.apply_node(Arc::new(node)),
                Event::Delete(node) => self.state.delete_node(&node),
                Event::Init => self.listing_nodes = Some(Vec::new()),
                Event::InitApply(node) => {
                    self.listing_nodes
                        .get_or_insert_default()
                        .push(Arc::new(node));
                }
                Event::InitDone => {
                    let nodes = self.listing_nodes.take().unwrap_or_default();
                    self.state.reset_nodes(nodes);
                    self.synced.0 = true;
                }
            },
            Change::Pod(event) => match *event {
                Event::Apply(pod) => self.state.apply_pod(Arc::new(pod)),
                Event::Delete(pod) => {
                    self.backoffs.remove(&uid(&pod));
                    self.state.delete_pod(&pod);
                }
                Event::Init => self.listing_pods = Some(Vec::new()),
                Event::InitApply(pod) => {
                    self.listing_pods
                        .get_or_insert_default()
                        .push(Arc::new(pod));
                }
                Event::InitDone => {
                    let pods = self.listing_pods.take().unwrap_or_default();
                    self.state.reset_pods(pods);
                    let state = &self.state;
                    self.backoffs.retain(|uid, _| state.is_pending(uid));
                    self.synced.1 = true;
                }
            },
            Change::Bound(key, Ok(())) => {
                tracing::debug!(uid = %key, "bound");
            }
            Change::Bound(key, Err(error)) => {
                // Not bound: the pod waits for a node again, after a back-off.
                let name = self
                    .state
                    .forget(&key)
                    .and_then(|p| p.metadata.name.clone());
                tracing::warn!(pod = ?name, %error, "binding failed");
                back_off(&self.config, &mut self.backoffs, &key);
            }
        }
    }

    /// Places every pod that is due, in queue order; bindings go out in the background.
    async fn cycle(&mut self) {
        let now = Instant::now();
        let mut queue: Vec<Arc<Pod>> = self
            .state
            .pending()
            .filter(|(uid, _)| self.backoffs.get(*uid).is_none_or(|b| b.retry_at <= now))
            .map(|(_, pod)| pod.clone())
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
        for (n, pod) in queue.into_iter().enumerate() {
            if n > 0 && n % PODS_BETWEEN_YIELDS == 0 {
                tokio::task::yield_now().await;
            }
            let key = uid(&pod);
            match schedule_sampled(&self.profile, &self.state.snapshot, &pod, &mut self.cursor) {
                Ok(placement) => {
                    tracing::debug!(pod = ?pod.metadata.name, node = %placement.node, "assumed");
                    self.state.assume(pod.clone(), placement.index);
                    self.backoffs.remove(&key);
                    let (client, binds, changes) = (
                        self.client.clone(),
                        self.binds.clone(),
                        self.changes.clone(),
                    );
                    tokio::spawn(async move {
                        let Ok(_permit) = binds.acquire_owned().await else {
                            return;
                        };
                        let result = bind(&client, &pod, &placement.node).await;
                        let _ = changes.send(Change::Bound(key, result));
                    });
                }
                Err(fit) => {
                    if let Some(preemption) = preempt(&self.profile, &self.state.snapshot, &pod) {
                        tokio::spawn(carry_out(
                            self.client.clone(),
                            self.config.name.clone(),
                            pod.clone(),
                            preemption,
                        ));
                    }
                    let backoff = back_off(&self.config, &mut self.backoffs, &key);
                    if let Err(error) =
                        report_unschedulable(&self.client, &self.config, &pod, &fit, backoff).await
                    {
                        tracing::warn!(pod = ?pod.metadata.name, %error, "reporting failed");
                    }
                }
            }
        }
    }
}

/// Preemption carried out: the pod nominated to the node (`status.nominatedNodeName`, as
/// `kubectl get -o wide` shows), each victim told why (a `Preempted` event) and deleted
/// with its grace period. The pod itself is placed by a later cycle once they are gone.
async fn carry_out(client: Client, scheduler: String, pod: Arc<Pod>, preemption: Preemption) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let nominate = json!({"status": {"nominatedNodeName": preemption.node}});
    if let Err(error) = Api::<Pod>::namespaced(client.clone(), &namespace)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&nominate))
        .await
    {
        tracing::warn!(pod = %name, %error, "nominating failed");
    }
    for victim in &preemption.victims {
        let victim_ns = victim.metadata.namespace.clone().unwrap_or_default();
        let victim_name = victim.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %name, victim = %victim_name, node = %preemption.node, "preempting");
        let message = format!(
            "Preempted by pod {} on node {}",
            pod.metadata.uid.as_deref().unwrap_or_default(),
            preemption.node
        );
        let event = pod_event(&scheduler, victim, "Normal", "Preempted", &message);
        let events: Api<Event> = Api::namespaced(client.clone(), &victim_ns);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, "preemption event not recorded");
        }
        let deleted = Api::<Pod>::namespaced(client.clone(), &victim_ns)
            .delete(&victim_name, &Default::default())
            .await;
        if let Err(error) = deleted {
            tracing::warn!(victim = %victim_name, %error, "preemption delete failed");
        }
    }
}

/// An event about `pod`, reported by the scheduler.
fn pod_event(scheduler: &str, pod: &Pod, kind: &str, reason: &str, message: &str) -> Event {
    let about = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: Some(
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    };
    let reporter = Reporter {
        component: scheduler,
        host: None,
    };
    event(reporter, about, kind, reason, message)
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
            let mut event = pod_event(&config.name, pod, "Warning", "FailedScheduling", &message);
            event.action = Some("Scheduling".into());
            let event_name = event.metadata.name.clone().unwrap_or_default();
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
