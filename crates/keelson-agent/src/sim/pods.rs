//! The simulated kubelet's pod work: start the pods bound to our nodes, remove the ones
//! being deleted, finish the ones that run to completion, and play out container exits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Notify;
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

/// Runs the pods bound to the simulated nodes until aborted.
pub async fn run(
    client: Client,
    config: SimConfig,
    control: Arc<Mutex<Control>>,
    wake: Arc<Notify>,
) {
    let ours: HashSet<String> = (0..config.count).map(|i| config.node_name(i)).collect();
    let api: Api<Pod> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let notify = wake.clone();
    tokio::spawn(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(move |_| {
                notify.notify_one();
                futures::future::ready(())
            }),
    );
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut start_at: HashMap<String, Instant> = HashMap::new();
    let mut remove_at: HashMap<String, Instant> = HashMap::new();
    // Running pods that run to completion → when their containers finish.
    let mut finish_at: HashMap<String, Instant> = HashMap::new();
    let mut addresses = 0u32;
    loop {
        let soonest = start_at
            .values()
            .chain(remove_at.values())
            .chain(finish_at.values())
            .min()
            .copied()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(soonest) => {}
        }
        let now = Instant::now();
        let (exits, silent) = {
            let mut control = control.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut control.exits), control.silent.clone())
        };
        let pods = store.state();
        let mut seen = HashSet::new();
        // Pods that are starting or running (not being deleted, on a live node).
        let mut live = HashSet::new();
        for pod in pods.iter().filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| ours.contains(n))
        }) {
            let key = uid(pod);
            seen.insert(key.clone());
            // A silent node does nothing for its pods, as a node that lost power.
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| silent.contains(n))
            {
                continue;
            }
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if pod.metadata.deletion_timestamp.is_some() {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .map_or(config.max_termination, |g| {
                        Duration::from_secs(u64::try_from(g).unwrap_or(0))
                    })
                    .min(config.max_termination);
                let due = *remove_at.entry(key.clone()).or_insert(now + grace);
                if now >= due {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(key.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match pods.delete(&name, &params).await {
                        Ok(_) => {
                            remove_at.remove(&key);
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                            remove_at.remove(&key);
                        }
                        Err(error) => tracing::warn!(pod = %name, %error, "removing failed"),
                    }
                }
                continue;
            }
            if matches!(phase(pod), "Pending" | "Running") {
                live.insert(key.clone());
            }
            if phase(pod) == "Pending" {
                let due = *start_at
                    .entry(key.clone())
                    .or_insert(now + config.start_delay);
                if now >= due {
                    addresses += 1;
                    let ip = format!("10.244.{}.{}", (addresses / 250) % 256, addresses % 250 + 1);
                    let status = running_status(pod, &ip, Timestamp::now());
                    match pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                    {
                        Ok(_) => {
                            start_at.remove(&key);
                            if runs_to_completion(pod) {
                                finish_at
                                    .insert(key.clone(), Instant::now() + run_time(pod, &config));
                            }
                        }
                        Err(error) => tracing::warn!(pod = %name, %error, "starting failed"),
                    }
                }
                continue;
            }
            for (_, _, container, code) in exits
                .iter()
                .filter(|(ns, pod_name, _, _)| *ns == namespace && *pod_name == name)
            {
                let Some(status) =
                    exited_status(pod, container.as_deref(), *code, Timestamp::now())
                else {
                    continue;
                };
                if let Err(error) = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    tracing::warn!(pod = %name, %error, "exit failed");
                }
            }
            // Its work done, a pod that runs to completion finishes: exit code 0 (or its
            // annotation's), then Succeeded, Failed, or restarted (OnFailure), which runs again.
            if runs_to_completion(pod) && phase(pod) == "Running" {
                let due = *finish_at
                    .entry(key.clone())
                    .or_insert_with(|| now + run_time(pod, &config));
                if now < due {
                    continue;
                }
                let Some(status) = finished_status(pod, exit_code(pod), Timestamp::now()) else {
                    finish_at.remove(&key);
                    continue;
                };
                match pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    Ok(updated) if phase(&updated) == "Running" => {
                        finish_at.insert(key, Instant::now() + run_time(pod, &config));
                    }
                    Ok(_) => {
                        finish_at.remove(&key);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        finish_at.remove(&key);
                    }
                    Err(error) => {
                        tracing::warn!(pod = %name, %error, "finishing failed");
                        finish_at.insert(key, Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
        start_at.retain(|k, _| seen.contains(k));
        remove_at.retain(|k, _| seen.contains(k));
        finish_at.retain(|k, _| live.contains(k));
    }
}
