//! The simulated kubelet's pod work: start the pods bound to our nodes, remove the ones
//! being deleted, finish the ones that run to completion, and play out container exits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_api::event::{Reporter, event};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

use super::{Control, EXIT_CODE, RUN_MS, SimConfig};

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn condition(kind: &str, status: bool, now: Timestamp) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" },
        "lastProbeTime": null, "lastTransitionTime": Time(now)})
}

fn conditions(ready: bool, now: Timestamp) -> Value {
    json!([
        condition("PodReadyToStartContainers", true, now),
        condition("Initialized", true, now),
        condition("Ready", ready, now),
        condition("ContainersReady", ready, now),
        condition("PodScheduled", true, now),
    ])
}

/// The status of a pod whose containers all just started.
fn running_status(pod: &Pod, ip: &str, now: Timestamp) -> Value {
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image.as_deref().unwrap_or_default()),
                "containerID": format!("sim://{}-{}", uid(pod), c.name), "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": Time(now)}}})
        })
        .collect();
    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1",
        "startTime": Time(now), "conditions": conditions(true, now), "containerStatuses": containers}})
}

/// Which containers exit.
enum Exiting<'a> {
    /// One container by name (the first when `None`).
    One(Option<&'a str>),
    /// Every container still running (the pod's work is done).
    AllRunning,
}

/// The status after container `name` (the first when `None`) exits with `code`, by the
/// pod's restart policy: restarted in place, or terminated (and the pod finished once no
/// container runs).
fn exited_status(pod: &Pod, name: Option<&str>, code: i32, now: Timestamp) -> Option<Value> {
    exit(pod, &Exiting::One(name), code, now)
}

/// The status after every running container exits with `code`.
fn finished_status(pod: &Pod, code: i32, now: Timestamp) -> Option<Value> {
    exit(pod, &Exiting::AllRunning, code, now)
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn exit(pod: &Pod, which: &Exiting<'_>, code: i32, now: Timestamp) -> Option<Value> {
    let status = pod.status.as_ref()?;
    let mut containers: Vec<Value> = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let indexes: Vec<usize> = match which {
        Exiting::One(Some(name)) => vec![containers.iter().position(|c| c["name"] == *name)?],
        Exiting::One(None) => vec![0],
        Exiting::AllRunning => (0..containers.len())
            .filter(|&i| containers[i]["state"]["running"].is_object())
            .collect(),
    };
    if indexes.is_empty() {
        return None;
    }
    let policy = restart_policy(pod);
    for index in indexes {
        let container = containers.get_mut(index)?;
        let started = container["state"]["running"]["startedAt"].clone();
        let terminated = json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started, "finishedAt": Time(now),
            "containerID": container["containerID"].clone()});
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        if restart {
            let count = container["restartCount"].as_i64().unwrap_or(0) + 1;
            container["restartCount"] = json!(count);
            container["lastState"] = json!({"terminated": terminated});
            container["state"] = json!({"running": {"startedAt": Time(now)}});
        } else {
            container["state"] = json!({"terminated": terminated});
            container["ready"] = json!(false);
            container["started"] = json!(false);
        }
    }
    let still_running = containers.iter().any(|c| c["state"]["running"].is_object());
    let phase = if still_running {
        "Running"
    } else if containers
        .iter()
        .all(|c| c["state"]["terminated"]["exitCode"] == 0)
    {
        "Succeeded"
    } else {
        "Failed"
    };
    let ready = containers.iter().all(|c| c["ready"] == true);
    Some(
        json!({"status": {"phase": phase, "conditions": conditions(ready, now),
        "containerStatuses": containers}}),
    )
}

/// How long the pod's containers run before they finish: its `sim.keelson.io/run-ms`
/// annotation, else the configured time.
fn run_time(pod: &Pod, config: &SimConfig) -> Duration {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUN_MS))
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(config.run_to_completion, Duration::from_millis)
}

/// The code its containers exit with when they finish: `sim.keelson.io/exit-code`, else 0.
fn exit_code(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXIT_CODE))
        .and_then(|code| code.trim().parse().ok())
        .unwrap_or(0)
}

/// Pods that run to completion: restart policy `Never` or `OnFailure`.
fn runs_to_completion(pod: &Pod) -> bool {
    restart_policy(pod) != "Always"
}

/// The three things the kubelet does to a pod on a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// Pending → Running and Ready.
    Start,
    /// Deleted → gone, once its grace period is over.
    Remove,
    /// A pod that runs to completion: its containers exit.
    Finish,
}

/// Where one piece of work for a pod stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Idle,
    Due(Instant),
    /// Its API call is out.
    Sent,
    /// Done for good (the pod was removed, or finished for the last time).
    Over,
}

/// A pod on one of our nodes, as last seen, and where its work stands.
#[derive(Default)]
struct Tracked {
    pod: Arc<Pod>,
    start: Step,
    remove: Step,
    finish: Step,
}

impl Tracked {
    fn step(&mut self, work: Work) -> &mut Step {
        match work {
            Work::Start => &mut self.start,
            Work::Remove => &mut self.remove,
            Work::Finish => &mut self.finish,
        }
    }
}

/// What an API call came back with.
enum Outcome {
    /// Done: nothing more of this work.
    Over,
    /// Do it again at this time (a failed call, or an `OnFailure` pod running again).
    Again(Instant),
}

/// API calls in flight at once: enough to keep up with thousands of nodes without
/// flooding the server.
const IN_FLIGHT: usize = 64;

/// The simulated kubelet for all our nodes: follows the pod watch, keeps a timer per pod
/// for its next step, and sends the status patches and final deletes concurrently. Work
/// is per event and per timer, never a sweep over every pod.
struct Kubelet {
    client: Client,
    config: SimConfig,
    ours: HashSet<String>,
    pods: HashMap<String, Tracked>,
    timers: BinaryHeap<Reverse<(Instant, String, Work)>>,
    silent: HashSet<String>,
    addresses: u32,
    permits: Arc<Semaphore>,
    done: mpsc::UnboundedSender<(String, Work, Outcome)>,
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

impl Kubelet {
    /// A pod changed (or was listed): track it if it is on one of our nodes and arm its
    /// next step.
    fn seen(&mut self, pod: Pod) {
        if !node_name(&pod).is_some_and(|n| self.ours.contains(n)) {
            return;
        }
        let key = uid(&pod);
        self.pods.entry(key.clone()).or_default().pod = Arc::new(pod);
        self.arm(&key, Instant::now());
    }

    fn gone(&mut self, pod: &Pod) {
        self.pods.remove(&uid(pod));
    }

    /// Sets the timer for whatever the pod is waiting for.
    fn arm(&mut self, key: &str, now: Instant) {
        let Some(tracked) = self.pods.get_mut(key) else {
            return;
        };
        let pod = tracked.pod.clone();
        // A silent node does nothing for its pods, as a node that lost power.
        if node_name(&pod).is_some_and(|n| self.silent.contains(n)) {
            return;
        }
        let (work, at) = if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .map_or(self.config.max_termination, |g| {
                    Duration::from_secs(u64::try_from(g).unwrap_or(0))
                })
                .min(self.config.max_termination);
            (Work::Remove, now + grace)
        } else if phase(&pod) == "Pending" {
            (Work::Start, now + self.config.start_delay)
        } else if runs_to_completion(&pod) && phase(&pod) == "Running" {
            (Work::Finish, now + run_time(&pod, &self.config))
        } else {
            return;
        };
        let step = tracked.step(work);
        if *step == Step::Idle {
            *step = Step::Due(at);
            self.timers.push(Reverse((at, key.to_owned(), work)));
            if work == Work::Remove {
                tokio::spawn(killing(self.client.clone(), pod));
            }
        }
    }

    /// Runs the work whose time has come; returns when the next timer is due.
    fn fire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                return Some(*at);
            }
            let Some(Reverse((at, key, work))) = self.timers.pop() else {
                break;
            };
            self.run(&key, work, at);
        }
        None
    }

    fn run(&mut self, key: &str, work: Work, at: Instant) {
        let Some(tracked) = self.pods.get_mut(key) else {
            return;
        };
        // A timer that was replaced or cancelled.
        if *tracked.step(work) != Step::Due(at) {
            return;
        }
        let pod = tracked.pod.clone();
        if node_name(&pod).is_some_and(|n| self.silent.contains(n)) {
            *tracked.step(work) = Step::Idle;
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let still = match work {
            Work::Remove => deleting,
            Work::Start => !deleting && phase(&pod) == "Pending",
            Work::Finish => !deleting && phase(&pod) == "Running",
        };
        if !still {
            *tracked.step(work) = Step::Idle;
            return;
        }
        *tracked.step(work) = Step::Sent;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let ip = if work == Work::Start {
            self.addresses += 1;
            let n = self.addresses;
            format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 1)
        } else {
            String::new()
        };
        let config = self.config.clone();
        let permits = self.permits.clone();
        let done = self.done.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let outcome = match work {
                Work::Start => start(&api, &pod, &ip).await,
                Work::Remove => remove(&api, &pod).await,
                Work::Finish => finish(&api, &pod, &config).await,
            };
            // The receiver only goes when the kubelet stops.
            let _ = done.send((key, work, outcome));
        });
    }

    /// An API call came back.
    fn done(&mut self, key: &str, work: Work, outcome: Outcome) {
        let Some(tracked) = self.pods.get_mut(key) else {
            return;
        };
        match outcome {
            Outcome::Over => *tracked.step(work) = Step::Over,
            Outcome::Again(at) => {
                *tracked.step(work) = Step::Due(at);
                self.timers.push(Reverse((at, key.to_owned(), work)));
            }
        }
    }

    /// Tests changed something: containers to exit, nodes gone silent or back.
    fn control(&mut self, control: &Mutex<Control>) {
        let (exits, silent) = {
            let mut control = control.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut control.exits), control.silent.clone())
        };
        let back: Vec<String> = self.silent.difference(&silent).cloned().collect();
        self.silent = silent;
        if !back.is_empty() {
            let keys: Vec<String> = self
                .pods
                .iter()
                .filter(|(_, t)| node_name(&t.pod).is_some_and(|n| back.iter().any(|b| b == n)))
                .map(|(k, _)| k.clone())
                .collect();
            let now = Instant::now();
            for key in keys {
                self.arm(&key, now);
            }
        }
        for (namespace, name, container, code) in exits {
            let found = self.pods.values().find(|t| {
                t.pod.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && t.pod.metadata.name.as_deref() == Some(name.as_str())
            });
            let Some(pod) = found.map(|t| t.pod.clone()) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some()
                || phase(&pod) != "Running"
                || node_name(&pod).is_some_and(|n| self.silent.contains(n))
            {
                continue;
            }
            let Some(status) = exited_status(&pod, container.as_deref(), code, Timestamp::now())
            else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            tokio::spawn(async move {
                if let Err(error) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    tracing::warn!(pod = %name, %error, "exit failed");
                }
            });
        }
    }
}

/// The kubelet's `Killing` event for each container of a pod being deleted, as
/// `kubectl describe` shows it (`Normal  Killing  Stopping container web`).
async fn killing(client: Client, pod: Arc<Pod>) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let reporter = Reporter {
        component: "kubelet",
        host: node_name(&pod),
    };
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let about = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: Some(format!("spec.containers{{{}}}", container.name)),
        };
        let message = format!("Stopping container {}", container.name);
        let event = event(reporter, about, "Normal", "Killing", &message);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, "event not recorded");
        }
    }
}

fn retry() -> Outcome {
    Outcome::Again(Instant::now() + Duration::from_secs(1))
}

async fn start(api: &Api<Pod>, pod: &Pod, ip: &str) -> Outcome {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = running_status(pod, ip, Timestamp::now());
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(_) => Outcome::Over,
        Err(kube::Error::Api(e)) if e.code == 404 => Outcome::Over,
        Err(error) => {
            tracing::warn!(pod = %name, %error, "starting failed");
            retry()
        }
    }
}

async fn remove(api: &Api<Pod>, pod: &Pod) -> Outcome {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid(pod)),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Outcome::Over,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Outcome::Over,
        Err(error) => {
            tracing::warn!(pod = %name, %error, "removing failed");
            retry()
        }
    }
}

/// Its work done, a pod that runs to completion finishes: exit code 0 (or its
/// annotation's), then Succeeded, Failed, or restarted (`OnFailure`), which runs again.
async fn finish(api: &Api<Pod>, pod: &Pod, config: &SimConfig) -> Outcome {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(status) = finished_status(pod, exit_code(pod), Timestamp::now()) else {
        return Outcome::Over;
    };
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(updated) if phase(&updated) == "Running" => {
            Outcome::Again(Instant::now() + run_time(pod, config))
        }
        Ok(_) => Outcome::Over,
        Err(kube::Error::Api(e)) if e.code == 404 => Outcome::Over,
        Err(error) => {
            tracing::warn!(pod = %name, %error, "finishing failed");
            retry()
        }
    }
}

/// Runs the pods bound to the simulated nodes until aborted.
pub async fn run(
    client: Client,
    config: SimConfig,
    control: Arc<Mutex<Control>>,
    wake: Arc<Notify>,
) {
    let (done, mut results) = mpsc::unbounded_channel();
    let mut kubelet = Kubelet {
        client: client.clone(),
        ours: (0..config.count).map(|i| config.node_name(i)).collect(),
        config,
        pods: HashMap::new(),
        timers: BinaryHeap::new(),
        silent: HashSet::new(),
        addresses: 0,
        permits: Arc::new(Semaphore::new(IN_FLIGHT)),
        done,
    };
    let api: Api<Pod> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Pods listed by the current (re)list, to forget the ones that went meanwhile.
    let mut listed: Option<HashSet<String>> = None;
    let mut next: Option<Instant> = None;
    loop {
        let sleep = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(pod))) => kubelet.seen(pod),
                Some(Ok(watcher::Event::Delete(pod))) => kubelet.gone(&pod),
                Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(listed) = listed.as_mut() {
                        listed.insert(uid(&pod));
                    }
                    kubelet.seen(pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(listed) = listed.take() {
                        kubelet.pods.retain(|k, _| listed.contains(k));
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "watching pods"),
                None => return,
            },
            Some((key, work, outcome)) = results.recv() => kubelet.done(&key, work, outcome),
            () = wake.notified() => kubelet.control(&control),
            () = tokio::time::sleep_until(sleep) => {}
        }
        next = kubelet.fire(Instant::now());
    }
}
