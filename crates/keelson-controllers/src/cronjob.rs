//! CronJob controller: creates a Job from `jobTemplate` at each time `schedule` names
//! (read in `timeZone`, UTC when unset), as upstream's does.
//!
//! - Jobs are named `<cronjob>-<scheduled minutes since the epoch>` (the name is the lock
//!   against creating one twice), annotated `batch.kubernetes.io/cronjob-scheduled-timestamp`
//!   (RFC 3339, in the time zone) and owned by the CronJob.
//! - Of the times missed since `lastScheduleTime` (or creation) only the most recent runs;
//!   with `startingDeadlineSeconds`, only if it is at most that late (else `MissSchedule`).
//! - `concurrencyPolicy`: `Allow`; `Forbid` skips a run while a Job is active
//!   (`JobAlreadyActive`); `Replace` deletes the active Jobs first.
//! - `suspend` stops new runs (Jobs already running go on).
//! - Finished Jobs beyond `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1)
//!   are deleted, oldest first (their pods go in the background).
//! - Status: `active` (references to its unfinished Jobs it started), `lastScheduleTime`,
//!   `lastSuccessfulTime`.
//!
//! What to do at a given time is the pure [`decide`], tested with explicit times.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job, JobCondition};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use keelson_api::cron::{Schedule, time_zone};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::ControllerError;
use crate::events;
use crate::workload::{controller_ref, controller_uid};

const COMPONENT: &str = "cronjob-controller";
/// The annotation naming the time a Job was scheduled for.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Past this many missed start times the controller warns (`TooManyMissedTimes`).
const MANY_MISSED: u64 = 100;

struct Context {
    client: Client,
    jobs: Store<Job>,
}

pub async fn run(client: Client) {
    // One watch of Jobs fills the cache reconciles read and triggers them.
    let (jobs, writer) = reflector::store();
    let job_events = watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let context = Arc::new(Context {
        client: client.clone(),
        jobs,
    });
    Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .owns_stream(job_events)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<CronJob>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "cronjob controller");
    Action::requeue(Duration::from_secs(1))
}

/// What a CronJob's schedule asks for at a moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; look again at `next` (never, when `None`).
    Wait { next: Option<Timestamp> },
    /// Start the run scheduled for `scheduled`, deleting the active Jobs first when
    /// `replace`; `missed` start times were due since the last run (the latest counted).
    Run {
        scheduled: Timestamp,
        replace: bool,
        missed: u64,
        next: Option<Timestamp>,
    },
    /// The run for `scheduled` is later than `startingDeadlineSeconds` allows.
    TooLate {
        scheduled: Timestamp,
        next: Option<Timestamp>,
    },
    /// The run for `scheduled` is skipped: a Job is still active and the policy is Forbid.
    Forbidden {
        scheduled: Timestamp,
        next: Option<Timestamp>,
    },
}

/// What [`decide`] reads of a CronJob.
#[derive(Clone, Debug)]
pub struct CronState<'a> {
    pub schedule: &'a Schedule,
    pub zone: &'a TimeZone,
    pub created: Timestamp,
    pub last_schedule: Option<Timestamp>,
    pub starting_deadline_seconds: Option<i64>,
    pub concurrency_policy: &'a str,
    /// Its Jobs still running.
    pub active: usize,
}

/// The latest start time due at `now` after `earliest`, and how many were due.
pub fn most_recent(
    schedule: &Schedule,
    zone: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, u64) {
    let Some(first) = schedule.next_after(earliest, zone).filter(|t| *t <= now) else {
        return (None, 0);
    };
    let Some(second) = schedule.next_after(first, zone).filter(|t| *t <= now) else {
        return (Some(first), 1);
    };
    // Many missed (the controller was down): estimate how many from the interval, start
    // close to now, and step to the latest; step from the first if that finds none.
    let interval = second.as_second().saturating_sub(first.as_second()).max(1);
    let missed = u64::try_from((now.as_second() - first.as_second()) / interval + 1).unwrap_or(1);
    let latest_from = |start: Timestamp| {
        let mut latest = None;
        let mut t = start;
        while let Some(next) = schedule.next_after(t, zone).filter(|n| *n <= now) {
            latest = Some(next);
            t = next;
        }
        latest
    };
    let near = Timestamp::from_second(now.as_second() - 2 * interval)
        .ok()
        .filter(|t| *t > first);
    let latest = near
        .and_then(latest_from)
        .or_else(|| latest_from(first))
        .unwrap_or(second);
    (Some(latest), missed)
}

/// What to do at `now`.
pub fn decide(state: &CronState<'_>, now: Timestamp) -> Decision {
    let next = state.schedule.next_after(now, state.zone);
    let mut earliest = state.last_schedule.unwrap_or(state.created);
    if let Some(deadline) = state.starting_deadline_seconds {
        // Nothing earlier than the deadline allows is considered at all.
        let horizon = now
            .checked_sub(SignedDuration::from_secs(deadline))
            .unwrap_or(now);
        earliest = earliest.max(horizon);
    }
    let (latest, missed) = most_recent(state.schedule, state.zone, earliest, now);
    let Some(scheduled) = latest else {
        return Decision::Wait { next };
    };
    if state.last_schedule == Some(scheduled) {
        return Decision::Wait { next };
    }
    if let Some(deadline) = state.starting_deadline_seconds {
        let late = scheduled
            .checked_add(SignedDuration::from_secs(deadline))
            .is_ok_and(|d| d < now);
        if late {
            return Decision::TooLate { scheduled, next };
        }
    }
    if state.active > 0 && state.concurrency_policy == "Forbid" {
        return Decision::Forbidden { scheduled, next };
    }
    Decision::Run {
        scheduled,
        replace: state.active > 0 && state.concurrency_policy == "Replace",
        missed,
        next,
    }
}

/// The Job of the run scheduled at `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// `at` in RFC 3339 in `zone` (`Z` for UTC), as the scheduled-timestamp annotation has it.
pub fn rfc3339_in(at: Timestamp, zone: &TimeZone) -> String {
    let zoned = at.to_zoned(zone.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job's finishing condition (Complete or Failed), if it has one.
fn finished(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Now, to the second (as the API stores times).
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

async fn reconcile(cron_job: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if ctx.jobs.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let cj = cron_job.as_ref();
    let name = cj.name_any();
    let namespace = cj.namespace().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = cj.status.clone().unwrap_or_default();
    let mut status = current.clone();
    let mut active = current.active.clone().unwrap_or_default();

    let owned: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| {
            j.namespace().as_deref() == Some(namespace.as_str())
                && controller_uid(&j.metadata) == Some(uid.as_str())
        })
        .collect();
    // Active Jobs that finished leave the list; the latest success is remembered.
    for job in &owned {
        let job_uid = job.metadata.uid.as_deref();
        let listed = active.iter().any(|r| r.uid.as_deref() == job_uid);
        match finished(job) {
            Some(condition) => {
                if listed {
                    active.retain(|r| r.uid.as_deref() != job_uid);
                    events::record(
                        &ctx.client,
                        COMPONENT,
                        cj,
                        "Normal",
                        "SawCompletedJob",
                        &format!(
                            "Saw completed job: {}, condition: {}",
                            job.name_any(),
                            condition.type_
                        ),
                    )
                    .await;
                }
                if condition.type_ == "Complete"
                    && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone())
                    && status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
            None if !listed => {
                tracing::debug!(job = %job.name_any(), cronjob = %name, "an active job it did not start");
            }
            None => {}
        }
    }
    // Listed Jobs that are gone (checked live) leave the list.
    let mut kept = Vec::new();
    for r in active {
        let in_cache = owned.iter().any(|j| j.metadata.uid == r.uid);
        let name_of = r.name.clone().unwrap_or_default();
        if in_cache || jobs_api.get_opt(&name_of).await?.is_some() {
            kept.push(r);
        } else {
            events::record(
                &ctx.client,
                COMPONENT,
                cj,
                "Normal",
                "MissingJob",
                &format!("Active job went missing: {name_of}"),
            )
            .await;
        }
    }
    let mut active = kept;

    let mut requeue = None;
    if cj.metadata.deletion_timestamp.is_none() {
        requeue = schedule_runs(&ctx, cj, &jobs_api, &mut active, &mut status).await?;
        clean_up(&ctx, cj, &jobs_api, &owned, &mut active).await?;
    }

    status.active = (!active.is_empty()).then_some(active);
    if status != current {
        let mut patch = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
        if status.active.is_none()
            && let Some(map) = patch.as_object_mut()
        {
            // (A merge patch removes what is null.)
            map.insert("active".into(), Value::Null);
        }
        let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
        cron_jobs
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": patch })),
            )
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Starts the run that is due, if any; returns when to look again.
async fn schedule_runs(
    ctx: &Context,
    cj: &CronJob,
    jobs_api: &Api<Job>,
    active: &mut Vec<ObjectReference>,
    status: &mut CronJobStatus,
) -> Result<Option<Duration>, ControllerError> {
    let spec = &cj.spec;
    let zone = match time_zone(spec.time_zone.as_deref()) {
        Ok(zone) => zone,
        Err(e) => {
            let zone = spec.time_zone.clone().unwrap_or_default();
            let message = format!("invalid timeZone: {zone:?}: {e}");
            events::record(
                &ctx.client,
                COMPONENT,
                cj,
                "Warning",
                "UnknownTimeZone",
                &message,
            )
            .await;
            return Ok(None);
        }
    };
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(schedule) => schedule,
        Err(e) => {
            let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
            events::record(
                &ctx.client,
                COMPONENT,
                cj,
                "Warning",
                "UnparseableSchedule",
                &message,
            )
            .await;
            return Ok(None);
        }
    };
    let now = now();
    let state = CronState {
        schedule: &schedule,
        zone: &zone,
        created: cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0),
        last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
        starting_deadline_seconds: spec.starting_deadline_seconds,
        concurrency_policy: spec.concurrency_policy.as_deref().unwrap_or("Allow"),
        active: active.len(),
    };
    let decision = decide(&state, now);
    let until = |next: Option<Timestamp>| {
        next.map(|t| {
            Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
                + Duration::from_millis(100)
        })
    };
    match decision {
        Decision::Wait { next } => Ok(until(next)),
        Decision::TooLate { scheduled, next } => {
            let message = format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
            );
            events::record(
                &ctx.client,
                COMPONENT,
                cj,
                "Warning",
                "MissSchedule",
                &message,
            )
            .await;
            Ok(until(next))
        }
        Decision::Forbidden { next, .. } => {
            events::record(
                &ctx.client,
                COMPONENT,
                cj,
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            .await;
            Ok(until(next))
        }
        Decision::Run {
            scheduled,
            replace,
            missed,
            next,
        } => {
            if missed > MANY_MISSED {
                let message = format!(
                    "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                );
                events::record(
                    &ctx.client,
                    COMPONENT,
                    cj,
                    "Warning",
                    "TooManyMissedTimes",
                    &message,
                )
                .await;
            }
            let job_name = job_name(&cj.name_any(), scheduled);
            if active
                .iter()
                .any(|r| r.name.as_deref() == Some(job_name.as_str()))
            {
                status.last_schedule_time = Some(Time(scheduled));
                return Ok(until(next));
            }
            if replace {
                for r in std::mem::take(active) {
                    let old = r.name.clone().unwrap_or_default();
                    delete_job(ctx, cj, jobs_api, &old, r.uid.clone()).await?;
                }
            }
            let job = job_from_template(cj, &job_name, scheduled, &zone);
            match jobs_api.create(&PostParams::default(), &job).await {
                Ok(created) => {
                    events::record(
                        &ctx.client,
                        COMPONENT,
                        cj,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created job {job_name}"),
                    )
                    .await;
                    active.push(reference(&created));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Made before (by this controller, whose status write was lost).
                    let existing = jobs_api.get(&job_name).await?;
                    let ours = controller_uid(&existing.metadata) == cj.meta().uid.as_deref();
                    let listed = active.iter().any(|r| r.uid == existing.metadata.uid);
                    if !ours {
                        return Ok(until(next));
                    }
                    if !listed && finished(&existing).is_none() {
                        active.push(reference(&existing));
                    }
                }
                Err(error) => {
                    events::record(
                        &ctx.client,
                        COMPONENT,
                        cj,
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating job: {error}"),
                    )
                    .await;
                    return Err(error.into());
                }
            }
            status.last_schedule_time = Some(Time(scheduled));
            Ok(until(next))
        }
    }
}

/// The Job for the run scheduled at `scheduled`.
fn job_from_template(cj: &CronJob, name: &str, scheduled: Timestamp, zone: &TimeZone) -> Job {
    let template = cj.spec.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED.into(), rfc3339_in(scheduled, zone));
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn delete_job(
    ctx: &Context,
    cj: &CronJob,
    jobs_api: &Api<Job>,
    name: &str,
    uid: Option<String>,
) -> Result<(), ControllerError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match jobs_api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    events::record(
        &ctx.client,
        COMPONENT,
        cj,
        "Normal",
        "SuccessfulDelete",
        &format!("Deleted job {name}"),
    )
    .await;
    Ok(())
}

/// Deletes the finished Jobs beyond the history limits, oldest (by start) first.
async fn clean_up(
    ctx: &Context,
    cj: &CronJob,
    jobs_api: &Api<Job>,
    owned: &[Arc<Job>],
    active: &mut Vec<ObjectReference>,
) -> Result<(), ControllerError> {
    let spec = &cj.spec;
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Arc<Job>> = owned
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| finished(j).is_some_and(|c| c.type_ == kind))
            .collect();
        let excess = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        // Started earliest first; never started last; then by name.
        done.sort_by_key(|j| {
            let start = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (start.is_none(), start, j.name_any())
        });
        for job in done.into_iter().take(excess) {
            delete_job(ctx, cj, jobs_api, &job.name_any(), job.metadata.uid.clone()).await?;
            active.retain(|r| r.uid != job.metadata.uid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    static UTC: TimeZone = TimeZone::UTC;

    fn state<'a>(schedule: &'a Schedule, created: &str) -> CronState<'a> {
        CronState {
            schedule,
            zone: &UTC,
            created: at(created),
            last_schedule: None,
            starting_deadline_seconds: None,
            concurrency_policy: "Allow",
            active: 0,
        }
    }

    fn parse(text: &str) -> Schedule {
        Schedule::parse(text).unwrap_or(Schedule::Every(Duration::from_secs(3600)))
    }

    #[test]
    fn nothing_runs_before_the_first_time() {
        let every_minute = parse("* * * * *");
        let s = state(&every_minute, "2024-05-01T10:00:10Z");
        assert_eq!(
            decide(&s, at("2024-05-01T10:00:50Z")),
            Decision::Wait {
                next: Some(at("2024-05-01T10:01:00Z"))
            }
        );
    }

    #[test]
    fn the_latest_due_time_runs_once() {
        let every_minute = parse("*/1 * * * *");
        let mut s = state(&every_minute, "2024-05-01T10:00:10Z");
        let now = at("2024-05-01T10:01:05Z");
        assert_eq!(
            decide(&s, now),
            Decision::Run {
                scheduled: at("2024-05-01T10:01:00Z"),
                replace: false,
                missed: 1,
                next: Some(at("2024-05-01T10:02:00Z"))
            }
        );
        s.last_schedule = Some(at("2024-05-01T10:01:00Z"));
        assert!(matches!(decide(&s, now), Decision::Wait { .. }), "done");
        // Down for a while: only the latest of the missed times runs.
        let later = at("2024-05-01T10:07:30Z");
        match decide(&s, later) {
            Decision::Run {
                scheduled, missed, ..
            } => {
                assert_eq!(scheduled, at("2024-05-01T10:07:00Z"));
                assert_eq!(missed, 6);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_missed_times_still_find_the_latest() {
        let hourly = parse("0 9-17 * * 1-5");
        let mut s = state(&hourly, "2024-01-01T00:00:00Z");
        s.last_schedule = Some(at("2024-01-01T09:00:00Z"));
        // A Sunday: the latest is Friday 17:00.
        match decide(&s, at("2024-05-05T12:00:00Z")) {
            Decision::Run {
                scheduled, missed, ..
            } => {
                assert_eq!(scheduled, at("2024-05-03T17:00:00Z"));
                assert!(missed > MANY_MISSED, "{missed}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn starting_deadline() {
        let every_five = parse("*/5 * * * *");
        let mut s = state(&every_five, "2024-05-01T10:00:00Z");
        s.starting_deadline_seconds = Some(30);
        // 10:05 is 40 s ago: outside the window, so not even considered.
        assert_eq!(
            decide(&s, at("2024-05-01T10:05:40Z")),
            Decision::Wait {
                next: Some(at("2024-05-01T10:10:00Z"))
            }
        );
        // 20 s late: runs.
        assert!(matches!(
            decide(&s, at("2024-05-01T10:05:20Z")),
            Decision::Run { .. }
        ));
    }

    #[test]
    fn concurrency_policies() {
        let every_minute = parse("* * * * *");
        let mut s = state(&every_minute, "2024-05-01T10:00:10Z");
        s.active = 1;
        let now = at("2024-05-01T10:01:05Z");
        assert!(matches!(
            decide(&s, now),
            Decision::Run { replace: false, .. }
        ));
        s.concurrency_policy = "Forbid";
        assert_eq!(
            decide(&s, now),
            Decision::Forbidden {
                scheduled: at("2024-05-01T10:01:00Z"),
                next: Some(at("2024-05-01T10:02:00Z"))
            }
        );
        s.concurrency_policy = "Replace";
        assert!(matches!(
            decide(&s, now),
            Decision::Run { replace: true, .. }
        ));
        s.active = 0;
        assert!(matches!(
            decide(&s, now),
            Decision::Run { replace: false, .. }
        ));
    }

    #[test]
    fn jobs_are_named_by_their_minute_and_annotated_in_their_zone() -> Result<(), String> {
        let t = at("2024-05-01T10:01:00Z");
        assert_eq!(job_name("backup", t), "backup-28575961");
        assert_eq!(rfc3339_in(t, &TimeZone::UTC), "2024-05-01T10:01:00Z");
        let tokyo = time_zone(Some("Asia/Tokyo")).map_err(|e| e.to_string())?;
        assert_eq!(rfc3339_in(t, &tokyo), "2024-05-01T19:01:00+09:00");
        Ok(())
    }

    #[test]
    fn time_zones_move_the_runs() -> Result<(), String> {
        let nine = parse("0 9 * * *");
        let tokyo = time_zone(Some("Asia/Tokyo")).map_err(|e| e.to_string())?;
        let mut s = state(&nine, "2024-05-01T00:30:00Z");
        s.zone = &tokyo;
        // 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            decide(&s, at("2024-05-01T01:00:00Z")),
            Decision::Wait {
                next: Some(at("2024-05-02T00:00:00Z"))
            }
        );
        Ok(())
    }
}
