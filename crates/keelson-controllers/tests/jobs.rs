//! The Job and CronJob controllers against a real, in-process API server, with the
//! scheduler and simulated nodes (whose `Never`/`OnFailure` pods run to completion, as the
//! `sim.keelson.io/*` annotations say) running as they do in `keelson server` and
//! `keelson agent --simulate`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod support;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobCondition};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use keelson_apiserver::testing::eventually;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use support::Cluster;

async fn start(dir: &std::path::Path, nodes: usize) -> Result<Cluster> {
    let controllers = keelson_controllers::ControllersConfig {
        job_backoff: Duration::from_millis(100),
        ..support::controllers()
    };
    let mut sim = support::sim("node", nodes);
    sim.run_to_completion = Duration::from_millis(300);
    support::start_with(dir, controllers, sim).await
}

/// A Job spec whose pods run `run_ms` and exit with `exit_code`, restart policy `restart`.
fn job_spec(run_ms: u64, exit_code: i32, restart: &str, extra: Value) -> Value {
    let mut spec = json!({"template": {
        "metadata": {"annotations": {"sim.keelson.io/run-ms": run_ms.to_string(),
            "sim.keelson.io/exit-code": exit_code.to_string()}},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "work", "image": "busybox",
                "resources": {"requests": {"cpu": "10m"}}}]}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

fn job(name: &str, spec: Value) -> Result<Job> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

fn condition(job: &Job, kind: &str) -> Option<JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == "True")
        .cloned()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Waits until the Job has condition `kind` (True); returns the Job.
async fn wait_condition(jobs: &Api<Job>, name: &str, kind: &str) -> Result<Job> {
    Ok(eventually(&format!("job {name} {kind}"), || async {
        let job = jobs.get(name).await?;
        Ok(condition(&job, kind).is_some().then_some(job))
    })
    .await?)
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?
        .items)
}

/// The reasons of the events recorded about `name`.
async fn event_reasons(client: &Client, name: &str) -> Result<BTreeSet<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_with_bounded_parallelism() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Every pod event is watched: never more than 2 pods running at once.
    let most = Arc::new(Mutex::new(0usize));
    let seen_most = most.clone();
    let watch = tokio::spawn(async move {
        let mut running: HashMap<String, bool> = HashMap::new();
        let stream = watcher(
            Api::<Pod>::namespaced(client.clone(), "default"),
            watcher::Config::default().labels("job-name=count"),
        )
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(pod)) = stream.next().await {
            let active = pod.metadata.deletion_timestamp.is_none()
                && matches!(phase(&pod), "Pending" | "Running");
            running.insert(pod.uid().unwrap_or_default(), active);
            let now = running.values().filter(|a| **a).count();
            let mut most = seen_most.lock().unwrap_or_else(PoisonError::into_inner);
            *most = (*most).max(now);
        }
    });
    let client = cluster.client.clone();
    jobs.create(
        &PostParams::default(),
        &job(
            "count",
            job_spec(400, 0, "Never", json!({"completions": 3, "parallelism": 2})),
        )?,
    )
    .await?;
    let done = wait_condition(&jobs, "count", "Complete").await?;
    watch.abort();
    let most = *most.lock().unwrap_or_else(PoisonError::into_inner);
    ensure!(most == 2, "at most 2 running at once, and 2 did: {most}");

    let status = done.status.clone().context("status")?;
    ensure!(
        status.succeeded == Some(3) && status.active == Some(0) && status.failed == Some(0),
        "{status:?}"
    );
    ensure!(status.start_time.is_some() && status.completion_time.is_some());
    ensure!(
        condition(&done, "SuccessCriteriaMet").is_some(),
        "{status:?}"
    );
    let complete = condition(&done, "Complete").context("Complete")?;
    ensure!(complete.reason.as_deref() == Some("CompletionsReached"));

    // The API server gave the Job its selector and its pods' labels.
    let uid = done.uid().context("uid")?;
    let spec = done.spec.clone().context("spec")?;
    let selector = spec
        .selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    ensure!(
        selector.get("batch.kubernetes.io/controller-uid") == Some(&uid),
        "{selector:?}"
    );
    // Finished pods are kept: three, all Succeeded, owned by the Job, with its labels.
    let finished = pods_of(&pods, "count").await?;
    ensure!(finished.len() == 3, "{}", finished.len());
    for pod in &finished {
        ensure!(phase(pod) == "Succeeded", "{:?}", pod.status);
        ensure!(pod.name_any().starts_with("count-"), "{}", pod.name_any());
        let labels = pod.labels();
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", "count"),
            ("job-name", "count"),
        ] {
            ensure!(
                labels.get(key).map(String::as_str) == Some(value),
                "{labels:?}"
            );
        }
        ensure!(
            pod.owner_references()
                .iter()
                .any(|o| o.kind == "Job" && o.uid == uid && o.controller == Some(true)),
            "owned by the Job"
        );
    }
    let reasons = event_reasons(&client, "count").await?;
    ensure!(
        reasons.contains("SuccessfulCreate") && reasons.contains("Completed"),
        "{reasons:?}"
    );

    // A work queue (no completions): parallelism pods, done when one succeeded and none runs.
    jobs.create(
        &PostParams::default(),
        &job(
            "queue",
            job_spec(300, 0, "Never", json!({"parallelism": 2})),
        )?,
    )
    .await?;
    let done = wait_condition(&jobs, "queue", "Complete").await?;
    let status = done.status.clone().context("status")?;
    ensure!(status.succeeded == Some(2), "{status:?}");
    ensure!(pods_of(&pods, "queue").await?.len() == 2);
    ensure!(done.spec.and_then(|s| s.completions).is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_stop_at_their_backoff_limit_or_deadline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Never: each failed pod counts; the second failure is past a limit of 1.
    jobs.create(
        &pp,
        &job(
            "flaky",
            job_spec(100, 1, "Never", json!({"backoffLimit": 1})),
        )?,
    )
    .await?;
    // OnFailure: restarts count; two are the limit of 2.
    jobs.create(
        &pp,
        &job(
            "crashy",
            job_spec(100, 1, "OnFailure", json!({"backoffLimit": 2})),
        )?,
    )
    .await?;
    // A deadline of 2 s for pods that would run a minute.
    jobs.create(
        &pp,
        &job(
            "slow",
            job_spec(
                60_000,
                0,
                "Never",
                json!({"activeDeadlineSeconds": 2, "completions": 2, "parallelism": 2}),
            ),
        )?,
    )
    .await?;

    let flaky = wait_condition(&jobs, "flaky", "Failed").await?;
    let failed = condition(&flaky, "Failed").context("Failed")?;
    ensure!(
        failed.reason.as_deref() == Some("BackoffLimitExceeded"),
        "{failed:?}"
    );
    ensure!(condition(&flaky, "FailureTarget").is_some());
    let status = flaky.status.clone().context("status")?;
    ensure!(
        status.failed == Some(2) && status.active == Some(0) && status.succeeded == Some(0),
        "{status:?}"
    );
    ensure!(
        status.completion_time.is_none(),
        "only success sets completionTime"
    );
    let flaky_pods = pods_of(&pods, "flaky").await?;
    ensure!(
        flaky_pods.len() == 2 && flaky_pods.iter().all(|p| phase(p) == "Failed"),
        "no pod after the limit: {}",
        flaky_pods.len()
    );
    ensure!(
        event_reasons(&client, "flaky")
            .await?
            .contains("BackoffLimitExceeded")
    );

    let crashy = wait_condition(&jobs, "crashy", "Failed").await?;
    ensure!(
        condition(&crashy, "Failed")
            .and_then(|c| c.reason)
            .as_deref()
            == Some("BackoffLimitExceeded")
    );
    // Its running pod was deleted when it failed.
    eventually("crashy's pod removed", || async {
        Ok(pods_of(&pods, "crashy").await?.is_empty().then_some(()))
    })
    .await?;

    let slow = wait_condition(&jobs, "slow", "Failed").await?;
    let failed = condition(&slow, "Failed").context("Failed")?;
    ensure!(
        failed.reason.as_deref() == Some("DeadlineExceeded"),
        "{failed:?}"
    );
    let status = slow.status.clone().context("status")?;
    let start = status.start_time.clone().context("startTime")?.0;
    let at = failed.last_transition_time.context("time")?.0;
    ensure!(
        at.as_second() - start.as_second() >= 2,
        "not before the deadline: {start} → {at}"
    );
    ensure!(
        status.active == Some(0) && status.terminating == Some(0),
        "{status:?}"
    );
    ensure!(
        pods_of(&pods, "slow").await?.is_empty(),
        "its running pods were deleted"
    );
    let reasons = event_reasons(&client, "slow").await?;
    ensure!(
        reasons.contains("DeadlineExceeded") && reasons.contains("SuccessfulDelete"),
        "{reasons:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_suspended_and_expiring_jobs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Indexed: each index succeeds once; pods carry their index.
    jobs.create(
        &pp,
        &job(
            "shards",
            job_spec(
                200,
                0,
                "Never",
                json!({"completionMode": "Indexed", "completions": 4, "parallelism": 2}),
            ),
        )?,
    )
    .await?;
    // Expiring: deleted 1 s after it finished, with its pods.
    jobs.create(
        &pp,
        &job(
            "brief",
            job_spec(200, 0, "Never", json!({"ttlSecondsAfterFinished": 1})),
        )?,
    )
    .await?;
    // Suspended from the start.
    jobs.create(
        &pp,
        &job(
            "later",
            job_spec(60_000, 0, "Never", json!({"suspend": true})),
        )?,
    )
    .await?;

    let shards = wait_condition(&jobs, "shards", "Complete").await?;
    let status = shards.status.clone().context("status")?;
    ensure!(
        status.completed_indexes.as_deref() == Some("0-3") && status.succeeded == Some(4),
        "{status:?}"
    );
    let shard_pods = pods_of(&pods, "shards").await?;
    let mut indexes = BTreeMap::new();
    for pod in &shard_pods {
        let index = pod
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
            .context("index annotation")?
            .clone();
        ensure!(
            pod.labels().get("batch.kubernetes.io/job-completion-index") == Some(&index),
            "index label"
        );
        ensure!(
            pod.name_any().starts_with(&format!("shards-{index}-")),
            "{}",
            pod.name_any()
        );
        let spec = pod.spec.clone().context("spec")?;
        ensure!(spec.hostname == Some(format!("shards-{index}")));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        ensure!(
            env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"),
            "{env:?}"
        );
        *indexes.entry(index).or_insert(0) += 1;
    }
    ensure!(
        indexes.len() == 4 && indexes.values().all(|n| *n == 1),
        "one pod per index: {indexes:?}"
    );

    let brief = wait_condition(&jobs, "brief", "Complete").await?;
    ensure!(!pods_of(&pods, "brief").await?.is_empty());
    let finished = brief
        .status
        .and_then(|s| s.completion_time)
        .context("completionTime")?;
    eventually("brief deleted with its pods", || async {
        let gone =
            jobs.get_opt("brief").await?.is_none() && pods_of(&pods, "brief").await?.is_empty();
        Ok(gone.then_some(()))
    })
    .await?;
    ensure!(
        Timestamp::now().as_second() - finished.0.as_second() >= 1,
        "not before its TTL"
    );

    // Suspended: no pods, no start time; resumed: a pod; suspended again: it is deleted.
    let later = wait_condition(&jobs, "later", "Suspended").await?;
    ensure!(
        later
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_none(),
        "{:?}",
        later.status
    );
    ensure!(pods_of(&pods, "later").await?.is_empty());
    let suspend = |on: bool| Patch::Merge(json!({"spec": {"suspend": on}}));
    jobs.patch("later", &PatchParams::default(), &suspend(false))
        .await?;
    eventually("later's pod running", || async {
        let running = pods_of(&pods, "later")
            .await?
            .iter()
            .any(|p| phase(p) == "Running");
        Ok(running.then_some(()))
    })
    .await?;
    let resumed = jobs.get("later").await?;
    ensure!(condition(&resumed, "Suspended").is_none());
    ensure!(resumed.status.and_then(|s| s.start_time).is_some());
    jobs.patch("later", &PatchParams::default(), &suspend(true))
        .await?;
    wait_condition(&jobs, "later", "Suspended").await?;
    eventually("later's pod removed", || async {
        Ok(pods_of(&pods, "later").await?.is_empty().then_some(()))
    })
    .await?;
    let reasons = event_reasons(&client, "later").await?;
    ensure!(
        reasons.contains("Suspended") && reasons.contains("Resumed"),
        "{reasons:?}"
    );
    Ok(())
}

fn cron_job(name: &str, schedule: &str, extra: Value, job: Value) -> Result<CronJob> {
    let mut spec = json!({"schedule": schedule, "suspend": true, "jobTemplate": {"spec": job}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

/// Pretends the CronJob last ran `minutes` ago, then lets it run: the runs missed since
/// are due at once (the latest of them runs).
async fn missed_since(cron_jobs: &Api<CronJob>, name: &str, minutes: i64) -> Result<()> {
    let then = Timestamp::from_second(Timestamp::now().as_second() - minutes * 60)?;
    cron_jobs
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": then.to_string()}})),
        )
        .await?;
    cron_jobs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await?;
    Ok(())
}

/// The Jobs a CronJob owns.
async fn jobs_of(jobs: &Api<Job>, cron_job: &CronJob) -> Result<Vec<Job>> {
    let uid = cron_job.uid().unwrap_or_default();
    Ok(jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_run_what_is_due() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Every minute, last run five minutes ago: the latest minute runs now, once.
    let tick = cron_jobs
        .create(
            &pp,
            &cron_job(
                "tick",
                "* * * * *",
                json!({}),
                job_spec(200, 0, "OnFailure", json!({})),
            )?,
        )
        .await?;
    missed_since(&cron_jobs, "tick", 5).await?;
    let (scheduled, created) = eventually("tick ran", || async {
        let cj = cron_jobs.get("tick").await?;
        let status = cj.status.unwrap_or_default();
        let owned = jobs_of(&jobs, &tick).await?;
        let Some(at) = status.last_schedule_time else {
            return Ok(None);
        };
        Ok(
            (Timestamp::now().as_second() - at.0.as_second() < 120 && !owned.is_empty())
                .then_some((at.0, owned)),
        )
    })
    .await?;
    let name = format!("tick-{}", scheduled.as_second() / 60);
    let first = created
        .iter()
        .find(|j| j.name_any() == name)
        .context("the job named by its minute")?;
    ensure!(
        first
            .annotations()
            .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
            == Some(&scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        "{:?}",
        first.annotations()
    );
    ensure!(
        first.owner_references().iter().any(|o| o.kind == "CronJob"),
        "owned by its CronJob"
    );
    // It finishes: no longer active, and the success is remembered.
    eventually("tick's success recorded", || async {
        let status = cron_jobs.get("tick").await?.status.unwrap_or_default();
        Ok((status.active.is_none() && status.last_successful_time.is_some()).then_some(()))
    })
    .await?;
    ensure!(
        event_reasons(&client, "tick")
            .await?
            .contains("SuccessfulCreate")
    );

    // Forbid: while its Job runs, a due run is skipped. (The running Job is made by hand
    // and listed as active, as if an earlier run had started it.)
    let long = job_spec(600_000, 0, "Never", json!({}));
    let forbid = cron_jobs
        .create(
            &pp,
            &cron_job(
                "forbid",
                "* * * * *",
                json!({"concurrencyPolicy": "Forbid"}),
                long.clone(),
            )?,
        )
        .await?;
    let running = owned_job(&jobs, &forbid, "forbid-earlier", long.clone()).await?;
    mark_active(&cron_jobs, "forbid", &running).await?;
    missed_since(&cron_jobs, "forbid", 5).await?;
    eventually("forbid skips a run", || async {
        Ok(event_reasons(&client, "forbid")
            .await?
            .contains("JobAlreadyActive")
            .then_some(()))
    })
    .await?;
    let owned = jobs_of(&jobs, &forbid).await?;
    ensure!(
        owned.len() == 1 && owned[0].name_any() == "forbid-earlier",
        "no new job"
    );

    // Replace: the running Job is deleted and a new one started.
    let replace = cron_jobs
        .create(
            &pp,
            &cron_job(
                "replace",
                "* * * * *",
                json!({"concurrencyPolicy": "Replace"}),
                long.clone(),
            )?,
        )
        .await?;
    let running = owned_job(&jobs, &replace, "replace-earlier", long).await?;
    mark_active(&cron_jobs, "replace", &running).await?;
    missed_since(&cron_jobs, "replace", 5).await?;
    eventually("replaced", || async {
        let owned = jobs_of(&jobs, &replace).await?;
        let status = cron_jobs.get("replace").await?.status.unwrap_or_default();
        let active: Vec<String> = status
            .active
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.name)
            .collect();
        let replaced = owned.len() == 1
            && owned[0]
                .name_any()
                .strip_prefix("replace-")
                .is_some_and(|minute| minute.parse::<i64>().is_ok())
            && active == [owned[0].name_any()];
        Ok(replaced.then_some(()))
    })
    .await?;
    let reasons = event_reasons(&client, "replace").await?;
    ensure!(
        reasons.contains("SuccessfulDelete") && reasons.contains("SuccessfulCreate"),
        "{reasons:?}"
    );
    Ok(())
}

/// A Job made by hand, owned by `cron_job` as its own would be.
async fn owned_job(jobs: &Api<Job>, cron_job: &CronJob, name: &str, spec: Value) -> Result<Job> {
    let owner = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": cron_job.name_any(),
        "uid": cron_job.uid(), "controller": true, "blockOwnerDeletion": true}]);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owner}, "spec": spec}))?;
    Ok(jobs.create(&PostParams::default(), &job).await?)
}

/// Lists `job` as the CronJob's active Job.
async fn mark_active(cron_jobs: &Api<CronJob>, name: &str, job: &Job) -> Result<()> {
    let reference = json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": "default",
        "name": job.name_any(), "uid": job.uid()});
    cron_jobs
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": [reference]}})),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_keep_their_history_limits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Suspended (never runs by itself); its Jobs are made by hand, owned by it.
    let cj = cron_jobs
        .create(
            &pp,
            &cron_job(
                "nightly",
                "@yearly",
                json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
                job_spec(100, 0, "Never", json!({})),
            )?,
        )
        .await?;
    let mut names = Vec::new();
    for (name, code) in [
        ("nightly-1", 0),
        ("nightly-2", 0),
        ("nightly-3", 0),
        ("nightly-4", 0),
        ("nightly-5", 1),
        ("nightly-6", 1),
    ] {
        let spec = job_spec(100, code, "Never", json!({"backoffLimit": 0}));
        owned_job(&jobs, &cj, name, spec).await?;
        names.push(name);
    }
    let kept = eventually("history trimmed", || async {
        let owned = jobs_of(&jobs, &cj).await?;
        let count = |kind: &str| {
            owned
                .iter()
                .filter(|j| condition(j, kind).is_some())
                .count()
        };
        let trimmed = owned.len() == 3 && count("Complete") == 2 && count("Failed") == 1;
        Ok(trimmed.then_some(owned))
    })
    .await?;
    let kept: BTreeSet<String> = kept.iter().map(ResourceExt::name_any).collect();
    // The deleted Jobs' pods go too.
    for name in names.iter().filter(|n| !kept.contains(**n)) {
        eventually(&format!("{name}'s pods collected"), || async {
            Ok(pods_of(&pods, name).await?.is_empty().then_some(()))
        })
        .await?;
    }
    let reasons = event_reasons(&client, "nightly").await?;
    ensure!(reasons.contains("SuccessfulDelete"), "{reasons:?}");

    // Deleting the CronJob deletes its Jobs.
    cron_jobs
        .delete("nightly", &DeleteParams::default())
        .await?;
    eventually("nightly's jobs collected", || async {
        Ok(jobs_of(&jobs, &cj).await?.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}
