//! Automatic compaction: keeps a bounded history on any [`Store`].
//!
//! The policy keeps at least `retain_revisions` revisions *and* everything written during
//! the last `retain_for` (whichever keeps more). Age is judged from periodic samples of the
//! current revision, as kube-apiserver does for etcd: a revision sampled at least
//! `retain_for` ago is old enough to compact to. The decision is the pure function
//! [`compaction_target`]; [`Compactor`] is the task that samples and calls `compact`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{Store, StoreError};

/// How much history automatic compaction keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Keep at least this many of the latest revisions.
    pub retain_revisions: i64,
    /// Keep at least everything written this recently.
    pub retain_for: Duration,
    /// How often to sample the revision and consider compacting.
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    /// 10,000 revisions or 5 minutes, whichever is larger; checked every 30 s.
    fn default() -> Self {
        CompactionPolicy {
            retain_revisions: 10_000,
            retain_for: Duration::from_secs(300),
            interval: Duration::from_secs(30),
        }
    }
}

/// The store's revision as seen at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionSample {
    pub at: Instant,
    pub revision: i64,
}

/// The revision to compact to now, or `None` when there is nothing worth compacting.
///
/// `samples` are in time order. Everything written after a sample was taken has a larger
/// revision than the sample, so compacting to a sample at least `retain_for` old keeps all
/// younger writes.
pub fn compaction_target(
    policy: &CompactionPolicy,
    samples: &[RevisionSample],
    now: Instant,
    current: i64,
    compacted: i64,
) -> Option<i64> {
    let by_count = current - policy.retain_revisions;
    let by_age = samples
        .iter()
        .rev()
        .find(|sample| now.saturating_duration_since(sample.at) >= policy.retain_for)?
        .revision;
    let target = by_count.min(by_age);
    (target > compacted).then_some(target)
}

/// Drops samples that can no longer be the newest one old enough to compact to.
fn prune(samples: &mut VecDeque<RevisionSample>, now: Instant, retain_for: Duration) {
    while samples.len() >= 2 && now.saturating_duration_since(samples[1].at) >= retain_for {
        samples.pop_front();
    }
}

/// The background task applying a [`CompactionPolicy`]; stops when dropped.
pub struct Compactor {
    task: JoinHandle<()>,
}

impl Compactor {
    /// Starts compacting `store` by `policy` on the current tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, policy: CompactionPolicy) -> Self {
        Compactor {
            task: tokio::spawn(run(store, policy)),
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(store: Arc<dyn Store>, policy: CompactionPolicy) {
    let mut samples = VecDeque::new();
    let mut ticks = tokio::time::interval(policy.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = step(&*store, &policy, &mut samples).await {
            tracing::warn!(backend = store.backend(), %error, "automatic compaction failed");
        }
    }
}

async fn step(
    store: &dyn Store,
    policy: &CompactionPolicy,
    samples: &mut VecDeque<RevisionSample>,
) -> Result<(), StoreError> {
    let now = Instant::now();
    let current = store.current_revision().await?;
    samples.push_back(RevisionSample {
        at: now,
        revision: current,
    });
    prune(samples, now, policy.retain_for);
    let compacted = store.compacted_revision().await?;
    let Some(target) =
        compaction_target(policy, samples.make_contiguous(), now, current, compacted)
    else {
        return Ok(());
    };
    match store.compact(target).await {
        Ok(()) => {
            tracing::debug!(backend = store.backend(), target, "compacted");
            Ok(())
        }
        // Another server compacted further already: nothing to do.
        Err(StoreError::Compacted { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(revisions: i64, secs: u64) -> CompactionPolicy {
        CompactionPolicy {
            retain_revisions: revisions,
            retain_for: Duration::from_secs(secs),
            interval: Duration::from_secs(1),
        }
    }

    fn samples(now: Instant, points: &[(u64, i64)]) -> Vec<RevisionSample> {
        points
            .iter()
            .map(|&(ago, revision)| RevisionSample {
                at: now - Duration::from_secs(ago),
                revision,
            })
            .collect()
    }

    #[test]
    fn nothing_is_old_enough_at_first() {
        let now = Instant::now();
        let s = samples(now, &[(10, 50_000), (0, 60_000)]);
        assert_eq!(
            compaction_target(&policy(100, 300), &s, now, 60_000, 0),
            None
        );
    }

    #[test]
    fn age_limits_when_writes_are_fast() {
        // 50k revisions in the last 5 minutes: keep them all although far more than 10k.
        let now = Instant::now();
        let s = samples(
            now,
            &[(400, 10_000), (300, 20_000), (100, 50_000), (0, 70_000)],
        );
        assert_eq!(
            compaction_target(&policy(10_000, 300), &s, now, 70_000, 0),
            Some(20_000)
        );
    }

    #[test]
    fn count_limits_when_writes_are_slow() {
        // Only 3k revisions in the last hour: the 10k floor keeps more than 5 minutes.
        let now = Instant::now();
        let s = samples(now, &[(3600, 11_000), (600, 13_000), (0, 14_000)]);
        assert_eq!(
            compaction_target(&policy(10_000, 300), &s, now, 14_000, 0),
            Some(4_000)
        );
    }

    #[test]
    fn never_goes_backwards() {
        let now = Instant::now();
        let s = samples(now, &[(600, 20_000), (0, 40_000)]);
        assert_eq!(
            compaction_target(&policy(10_000, 300), &s, now, 40_000, 20_000),
            None
        );
        assert_eq!(
            compaction_target(&policy(10_000, 300), &s, now, 40_000, 19_999),
            Some(20_000)
        );
    }

    #[test]
    fn prune_keeps_the_newest_old_sample() {
        let now = Instant::now();
        let mut s: VecDeque<_> =
            samples(now, &[(900, 1), (600, 2), (400, 3), (200, 4), (0, 5)]).into();
        prune(&mut s, now, Duration::from_secs(300));
        let kept: Vec<i64> = s.iter().map(|x| x.revision).collect();
        assert_eq!(kept, vec![3, 4, 5]);
    }
}
