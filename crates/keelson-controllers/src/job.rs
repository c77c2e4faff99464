//! Job controller: runs a Job's pods until enough of them succeed, as upstream's does.
//!
//! - `completions` pods must succeed, at most `parallelism` running at once; without
//!   `completions` (a work queue) the Job is done once one pod succeeded and none runs.
//! - `completionMode: Indexed`: each index `0..completions` must succeed once; its pods
//!   carry the index (annotation and label `batch.kubernetes.io/job-completion-index`,
//!   `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`), and `status.completedIndexes`
//!   lists the ones done (`0-2,4`).
//! - Failed pods count against `backoffLimit` (restarts too, for `OnFailure`); replacements
//!   wait an exponential back-off (10 s, doubled per failure since the last success, at
//!   most 10 min). Past the limit, or past `activeDeadlineSeconds`, the Job gets
//!   `FailureTarget`, its running pods are deleted, and then it gets `Failed`
//!   (`BackoffLimitExceeded`, `DeadlineExceeded`).
//! - Success adds `SuccessCriteriaMet`, then `Complete` (and `completionTime`) once no pod
//!   runs or terminates.
//! - `suspend` deletes the running pods (condition `Suspended`); resuming restarts the
//!   clock of `activeDeadlineSeconds`.
//! - `ttlSecondsAfterFinished`: a finished Job is deleted (in the background: the garbage
//!   collector takes its pods) that long after it finished.
//!
//! Finished pods are kept, and counted from the pod cache (never fewer than the status
//! already says); the pod-tracking finalizer is not used.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::ControllerError;
use crate::events;
use crate::expectations::Expectations;
use crate::workload::{
    controller_ref, controller_uid, count, deletion_rank, is_active, pod_from_template,
    ready_since, selector_matches,
};

const COMPONENT: &str = "job-controller";
/// The annotation and label of an Indexed Job's pod's index.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// `spec.managedBy` of the Jobs this controller runs (unset means the same).
const MANAGER: &str = "kubernetes.io/job-controller";
/// At most this many pods created or deleted per reconcile.
const BURST: usize = 500;
/// The longest wait before a failed pod is replaced.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

const BACKOFF_MESSAGE: &str = "Job has reached the specified backoff limit";
const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";
const COMPLETIONS_REACHED: &str = "CompletionsReached";
const SUCCESS_MESSAGE: &str = "Reached expected number of succeeded pods";

struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations<Option<u32>>,
    /// The first back-off before a failed pod is replaced.
    backoff: Duration,
}

pub async fn run(client: Client, backoff: Duration) {
    // One watch of pods fills the cache reconciles read and triggers them.
    let (pods, writer) = reflector::store();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let context = Arc::new(Context {
        client: client.clone(),
        pods,
        expectations: Expectations::new(),
        backoff,
    });
    Controller::new(Api::<Job>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<Job>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "job controller");
    Action::requeue(Duration::from_secs(1))
}

/// Now, to the second (as the API stores times).
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn has_condition<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == "True")
}

fn condition(kind: &str, reason: &str, message: &str, at: Timestamp) -> JobCondition {
    JobCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(at)),
        last_transition_time: Some(Time(at)),
    }
}

/// Sets condition `kind` (replacing one of that type).
fn set_condition(status: &mut JobStatus, new: JobCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => *old = new,
        None => conditions.push(new),
    }
}

/// When the Job finished (Complete or Failed), if it did.
fn finished_at(status: &JobStatus) -> Option<Timestamp> {
    if let Some(c) = has_condition(status, "Complete") {
        return status
            .completion_time
            .as_ref()
            .or(c.last_transition_time.as_ref())
            .map(|t| t.0);
    }
    has_condition(status, "Failed").map(|c| {
        c.last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

/// The index of an Indexed Job's pod.
fn pod_index(pod: &Pod) -> Option<u32> {
    pod.annotations()
        .get(INDEX)
        .or_else(|| pod.labels().get(INDEX))
        .and_then(|i| i.parse().ok())
}

/// Indexes as upstream writes them: runs of three or more as `a-b`, others listed.
pub fn format_indexes(indexes: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &i in indexes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The indexes in `completedIndexes` (what does not parse is skipped).
pub fn parse_indexes(text: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// When the pod's containers finished (the latest of them), else when it was created.
fn finish_time(pod: &Pod) -> Timestamp {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The wait before replacing a pod after `failures` failures in a row: `base`, doubled for
/// each failure after the first, at most [`MAX_BACKOFF`].
pub fn backoff_delay(base: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// How many pods a NonIndexed Job wants running: what is left to complete, at most
/// `parallelism`; a work queue (no `completions`) keeps `parallelism` until a pod
/// succeeded, then starts no more.
pub fn wanted_active(spec: &JobSpec, succeeded: i32, active: i32) -> i32 {
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    match spec.completions {
        Some(completions) => (completions - succeeded).clamp(0, parallelism),
        None if succeeded > 0 => active.min(parallelism),
        None => parallelism,
    }
}

/// Sum of the restarts of the pods still running (what `OnFailure` Jobs count as failures).
fn restarts(pods: &[&Arc<Pod>]) -> i32 {
    pods.iter()
        .filter(|p| matches!(phase(p), "Pending" | "Running"))
        .flat_map(|p| {
            let status = p.status.as_ref();
            status
                .into_iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .chain(
                    status
                        .into_iter()
                        .flat_map(|s| s.init_container_statuses.iter().flatten()),
                )
                .map(|c| c.restart_count)
        })
        .sum()
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = job.name_any();
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| ControllerError::Invalid(format!("job {name} has no spec")))?;
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGER) {
        return Ok(Action::await_change());
    }
    let current = job.status.clone().unwrap_or_default();
    let now = now();
    if let Some(finished) = finished_at(&current) {
        return expire(&ctx, &job, spec, finished, now).await;
    }
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = owned_pods(&ctx, &job, spec, &pods).await?;

    // What the cache does not show yet.
    let (pending_creates, pending_deletes) = ctx.expectations.outstanding(&uid, &owned);
    let mut active: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| is_active(p) && !pending_deletes.contains(&p.name_any()))
        .collect();
    let mut terminating = owned
        .iter()
        .filter(|p| {
            !matches!(phase(p), "Succeeded" | "Failed")
                && (p.metadata.deletion_timestamp.is_some()
                    || pending_deletes.contains(&p.name_any()))
        })
        .count();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(1).max(0);
    let succeeded_pods: Vec<&Arc<Pod>> = owned.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Arc<Pod>> = owned.iter().filter(|p| phase(p) == "Failed").collect();
    let mut completed = BTreeSet::new();
    let succeeded = if indexed {
        completed = parse_indexes(current.completed_indexes.as_deref().unwrap_or_default());
        completed.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| pod_index(p))
                .filter(|&i| i64::from(i) < i64::from(completions)),
        );
        completed.retain(|&i| i64::from(i) < i64::from(completions));
        count(completed.len())
    } else {
        i32::try_from(succeeded_pods.len())
            .unwrap_or(i32::MAX)
            .max(current.succeeded.unwrap_or(0))
    };
    let failed = i32::try_from(failed_pods.len())
        .unwrap_or(i32::MAX)
        .max(current.failed.unwrap_or(0));

    let mut status = current.clone();
    let mut requeue: Option<Duration> = None;
    let mut soon = |after: Duration| {
        requeue = Some(requeue.map_or(after, |r: Duration| r.min(after)));
    };

    // Suspended or resumed.
    let suspended = spec.suspend == Some(true);
    let was_suspended = has_condition(&current, "Suspended").is_some();
    if suspended && !was_suspended {
        set_condition(
            &mut status,
            condition("Suspended", "JobSuspended", "Job suspended", now),
        );
        events::record(
            &ctx.client,
            COMPONENT,
            job.as_ref(),
            "Normal",
            "Suspended",
            "Job suspended",
        )
        .await;
    } else if !suspended && was_suspended {
        let mut resumed = condition("Suspended", "JobResumed", "Job resumed", now);
        resumed.status = "False".into();
        set_condition(&mut status, resumed);
        // The deadline counts time active, from now.
        status.start_time = Some(Time(now));
        events::record(
            &ctx.client,
            COMPONENT,
            job.as_ref(),
            "Normal",
            "Resumed",
            "Job resumed",
        )
        .await;
    }
    if !suspended && status.start_time.is_none() {
        status.start_time = Some(Time(now));
    }

    // Failure: past the back-off limit, or the deadline.
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarted = restarts(&active);
    let past_restarts = on_failure
        && if backoff_limit == 0 {
            restarted > 0
        } else {
            restarted >= backoff_limit
        };
    let deadline = match (spec.active_deadline_seconds, &status.start_time) {
        (Some(seconds), Some(start)) if !suspended => start
            .0
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
            .ok(),
        _ => None,
    };
    let failure: Option<(String, String)> = if let Some(c) = has_condition(&status, "FailureTarget")
    {
        Some((
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ))
    } else if failed > backoff_limit || past_restarts {
        Some(("BackoffLimitExceeded".into(), BACKOFF_MESSAGE.into()))
    } else if deadline.is_some_and(|d| now >= d) {
        Some(("DeadlineExceeded".into(), DEADLINE_MESSAGE.into()))
    } else {
        None
    };
    let success = failure.is_none()
        && match (indexed, spec.completions) {
            (true, _) => succeeded >= completions,
            (false, Some(completions)) => succeeded >= completions,
            (false, None) => succeeded > 0 && active.is_empty(),
        };
    if let Some((reason, message)) = &failure
        && has_condition(&status, "FailureTarget").is_none()
    {
        set_condition(
            &mut status,
            condition("FailureTarget", reason, message, now),
        );
        events::record(
            &ctx.client,
            COMPONENT,
            job.as_ref(),
            "Warning",
            reason,
            message,
        )
        .await;
    }
    if success && has_condition(&status, "SuccessCriteriaMet").is_none() {
        set_condition(
            &mut status,
            condition(
                "SuccessCriteriaMet",
                COMPLETIONS_REACHED,
                SUCCESS_MESSAGE,
                now,
            ),
        );
    }

    // The pods: none when suspended or done, else as many as wanted.
    let stop_all = suspended || failure.is_some() || success;
    let mut to_delete: Vec<&Arc<Pod>> = Vec::new();
    if stop_all {
        to_delete.extend(active.iter().copied());
    } else if indexed {
        // Duplicates of an index, and indexes out of range, go; then any beyond parallelism.
        let mut seen = BTreeSet::new();
        active.sort_by_key(|p| (pod_index(p), std::cmp::Reverse(deletion_rank(p))));
        for pod in &active {
            match pod_index(pod) {
                Some(i) if i64::from(i) < i64::from(completions) && seen.insert(i) => {}
                _ => to_delete.push(pod),
            }
        }
    } else {
        let want = wanted_active(spec, succeeded, i32::try_from(active.len()).unwrap_or(0));
        let excess = active
            .len()
            .saturating_sub(usize::try_from(want).unwrap_or(0));
        active.sort_by_key(|p| deletion_rank(p));
        to_delete.extend(active.iter().take(excess).copied());
    }
    for pod in to_delete.iter().take(BURST) {
        let pod_name = pod.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod_name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        ctx.expectations.deleted(&uid, pod_name.clone());
        events::record(
            &ctx.client,
            COMPONENT,
            job.as_ref(),
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted pod: {pod_name}"),
        )
        .await;
        terminating += 1;
    }
    let deleted: Vec<String> = to_delete.iter().map(|p| p.name_any()).collect();
    active.retain(|p| !deleted.contains(&p.name_any()));

    // New pods, after the back-off if pods failed since the last success.
    if !stop_all {
        let last_success = succeeded_pods.iter().map(|p| finish_time(p)).max();
        let recent: Vec<Timestamp> = failed_pods
            .iter()
            .map(|p| finish_time(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let wait = backoff_delay(ctx.backoff, u32::try_from(recent.len()).unwrap_or(u32::MAX));
        let ready_at = recent
            .iter()
            .max()
            .and_then(|t| t.checked_add(wait).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let mut new_indexes: Vec<Option<u32>> = Vec::new();
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
        let have = active.len() + pending_creates.len();
        if indexed {
            let running: BTreeSet<u32> = active
                .iter()
                .filter_map(|p| pod_index(p))
                .chain(pending_creates.iter().flatten().copied())
                .collect();
            let room = parallelism.saturating_sub(have);
            new_indexes.extend(
                (0..u32::try_from(completions).unwrap_or(0))
                    .filter(|i| !completed.contains(i) && !running.contains(i))
                    .take(room)
                    .map(Some),
            );
        } else {
            let want = usize::try_from(wanted_active(
                spec,
                succeeded,
                i32::try_from(active.len()).unwrap_or(0),
            ))
            .unwrap_or(0);
            new_indexes.resize(want.saturating_sub(have), None);
        }
        if !new_indexes.is_empty() && now < ready_at {
            let left = ready_at.duration_since(now);
            soon(Duration::try_from(left).unwrap_or(Duration::from_secs(1)));
        } else {
            for index in new_indexes.into_iter().take(BURST) {
                let pod = new_pod(&job, spec, index);
                let created = pods.create(&PostParams::default(), &pod).await?;
                let pod_name = created.name_any();
                ctx.expectations.created(&uid, pod_name.clone(), index);
                events::record(
                    &ctx.client,
                    COMPONENT,
                    job.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                )
                .await;
            }
        }
    }

    // Finished once nothing runs or terminates any more.
    let quiet = active.is_empty() && terminating == 0;
    if quiet && let Some((reason, message)) = &failure {
        set_condition(&mut status, condition("Failed", reason, message, now));
    }
    if quiet && success {
        set_condition(
            &mut status,
            condition("Complete", COMPLETIONS_REACHED, SUCCESS_MESSAGE, now),
        );
        status.completion_time = Some(Time(now));
        events::record(
            &ctx.client,
            COMPONENT,
            job.as_ref(),
            "Normal",
            "Completed",
            "Job completed",
        )
        .await;
    }
    status.active = Some(count(active.len()));
    status.ready = Some(
        i32::try_from(active.iter().filter(|p| ready_since(p).is_some()).count())
            .unwrap_or(i32::MAX),
    );
    status.terminating = Some(count(terminating));
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    if indexed && !completed.is_empty() {
        status.completed_indexes = Some(format_indexes(&completed));
    }
    if status != current {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        jobs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    }
    if let Some(finished) = finished_at(&status) {
        return expire(&ctx, &job, spec, finished, now).await;
    }
    if let Some(deadline) = deadline.filter(|_| failure.is_none()) {
        let left = Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO);
        soon(left + Duration::from_millis(100));
    }
    if !pending_creates.is_empty() || !pending_deletes.is_empty() || terminating > 0 {
        soon(Duration::from_secs(5));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The pods the Job owns, after adopting orphans its selector matches.
async fn owned_pods(
    ctx: &Context,
    job: &Job,
    spec: &JobSpec,
    pods: &Api<Pod>,
) -> Result<Vec<Arc<Pod>>, ControllerError> {
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let in_namespace: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    let mut owned: Vec<Arc<Pod>> = in_namespace
        .iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .cloned()
        .collect();
    let Some(selector) = &spec.selector else {
        return Ok(owned);
    };
    for orphan in in_namespace.iter().filter(|p| {
        controller_uid(&p.metadata).is_none()
            && is_active(p)
            && selector_matches(selector, &p.labels().clone())
    }) {
        let mut owners = orphan.metadata.owner_references.clone().unwrap_or_default();
        owners.push(controller_ref(job));
        let patch = json!({"metadata": {"ownerReferences": owners, "uid": orphan.metadata.uid}});
        match pods
            .patch(
                &orphan.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(adopted) => owned.push(Arc::new(adopted)),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(owned)
}

/// A new pod of the Job (of `index`, for Indexed Jobs).
fn new_pod(job: &Job, spec: &JobSpec, index: Option<u32>) -> Pod {
    let name = job.name_any();
    let prefix = match index {
        Some(i) => format!("{name}-{i}"),
        None => name.clone(),
    };
    let mut pod = pod_from_template(&spec.template, controller_ref(job), &prefix);
    if let Some(index) = index {
        let value = index.to_string();
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX.into(), value.clone());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(INDEX.into(), value);
        if let Some(pod_spec) = pod.spec.as_mut() {
            pod_spec.hostname = Some(format!("{name}-{index}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            for container in pod_spec
                .containers
                .iter_mut()
                .chain(pod_spec.init_containers.iter_mut().flatten())
            {
                let vars = container.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == env.name) {
                    vars.push(env.clone());
                }
            }
        }
    }
    pod
}

/// A finished Job with `ttlSecondsAfterFinished` is deleted (its pods in the background)
/// once that has passed.
async fn expire(
    ctx: &Context,
    job: &Job,
    spec: &JobSpec,
    finished: Timestamp,
    now: Timestamp,
) -> Result<Action, ControllerError> {
    let Some(ttl) = spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let expires = finished
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl)))
        .unwrap_or(finished);
    if now < expires {
        let left = Duration::try_from(expires.duration_since(now)).unwrap_or(Duration::ZERO);
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match jobs.delete(&job.name_any(), &params).await {
        Ok(_) => tracing::info!(job = %job.name_any(), "deleted after ttlSecondsAfterFinished"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_written_as_upstream_writes_them() {
        let set: BTreeSet<u32> = [0, 1, 2, 4, 6, 7, 9, 10, 11, 12].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-2,4,6,7,9-12");
        assert_eq!(parse_indexes("0-2,4,6,7,9-12"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("").is_empty());
    }

    #[test]
    fn back_off_doubles_up_to_ten_minutes() {
        let base = Duration::from_secs(10);
        assert_eq!(backoff_delay(base, 0), Duration::ZERO);
        assert_eq!(backoff_delay(base, 1), Duration::from_secs(10));
        assert_eq!(backoff_delay(base, 3), Duration::from_secs(40));
        assert_eq!(backoff_delay(base, 12), Duration::from_secs(600));
        assert_eq!(backoff_delay(base, 100), Duration::from_secs(600));
    }

    #[test]
    fn wanted_pods() {
        let spec = |completions: Option<i32>, parallelism: i32| JobSpec {
            completions,
            parallelism: Some(parallelism),
            ..Default::default()
        };
        assert_eq!(wanted_active(&spec(Some(3), 2), 0, 0), 2);
        assert_eq!(wanted_active(&spec(Some(3), 2), 2, 1), 1);
        assert_eq!(wanted_active(&spec(Some(3), 2), 3, 0), 0);
        assert_eq!(wanted_active(&spec(None, 4), 0, 4), 4, "a work queue");
        assert_eq!(
            wanted_active(&spec(None, 4), 1, 3),
            3,
            "no new pods once one succeeded"
        );
    }
}
