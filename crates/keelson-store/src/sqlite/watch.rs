//! Watch streams: history from the log, then live events from the writer.
//!
//! A watch subscribes to the writer's event broadcast *before* it reads the log, so every
//! event is either in the log snapshot it reads or in the broadcast; events it has already
//! delivered are skipped by revision. A watch that falls behind the broadcast buffer does
//! not lose events: it re-subscribes and catches up from the log again. The only way it
//! can fail to continue is compaction overtaking it, and then it ends with `Compacted`.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::metrics::SqliteMetrics;
use super::pool::ReadPool;
use super::read::{Range, Snapshot};
use super::writer::EventBatch;
use crate::StoreError;
use crate::kv::{WatchEvent, WatchStream, prefix_end};

/// Events read from the log per query during catch-up.
const HISTORY_PAGE: usize = 512;

pub(super) struct Watch {
    readers: Arc<ReadPool>,
    metrics: SqliteMetrics,
    prefix: String,
    /// The next revision to deliver; everything below has been delivered or skipped.
    next: i64,
    /// Catching up from the log up to this revision (inclusive).
    catch_up_to: Option<i64>,
    live: broadcast::Receiver<EventBatch>,
    ready: VecDeque<WatchEvent>,
    finished: bool,
}

impl Watch {
    pub async fn start(
        readers: Arc<ReadPool>,
        metrics: SqliteMetrics,
        live: broadcast::Receiver<EventBatch>,
        prefix: &str,
        start: i64,
    ) -> Result<WatchStream, StoreError> {
        if start < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "watch start revision {start} is negative"
            )));
        }
        let (current, compacted) = revisions(&readers).await?;
        if start != 0 && start < compacted {
            return Err(StoreError::Compacted {
                requested: start,
                compacted,
            });
        }
        let next = if start == 0 { current + 1 } else { start };
        let watch = Watch {
            readers,
            metrics,
            prefix: prefix.to_owned(),
            next,
            catch_up_to: Some(current),
            live,
            ready: VecDeque::new(),
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(watch, Watch::next_item)))
    }

    async fn next_item(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished {
                return None;
            }
            let step = match self.catch_up_to {
                Some(to) if self.next <= to => self.catch_up(to).await,
                Some(_) => {
                    self.catch_up_to = None;
                    Ok(())
                }
                None => self.follow().await,
            };
            if let Err(error) = step {
                self.finished = true;
                return Some((Err(error), self));
            }
        }
    }

    /// Reads the next page of history up to `to`.
    async fn catch_up(&mut self, to: i64) -> Result<(), StoreError> {
        let from = self.next;
        let prefix = self.prefix.clone();
        let events = self
            .readers
            .run(move |conn| {
                let upper = prefix_end(prefix.as_bytes());
                let range = Range {
                    lower: prefix.as_bytes(),
                    upper: upper.as_deref(),
                };
                Snapshot::begin(conn)?.history(&range, from, to, HISTORY_PAGE)
            })
            .await?;
        self.next = match events.last() {
            Some(last) if events.len() == HISTORY_PAGE => last.revision() + 1,
            _ => to + 1,
        };
        self.ready.extend(events);
        Ok(())
    }

    /// Waits for the next live batch.
    async fn follow(&mut self) -> Result<(), StoreError> {
        match self.live.recv().await {
            Ok(batch) => {
                for event in batch.iter() {
                    if event.revision() >= self.next && event.kv.key.starts_with(&self.prefix) {
                        self.ready.push_back(event.clone());
                    }
                }
                if let Some(last) = batch.last() {
                    self.next = self.next.max(last.revision() + 1);
                }
                Ok(())
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind the live buffer: start over from the log where we are.
                self.metrics.watch_catchups.inc();
                self.live = self.live.resubscribe();
                let (current, _) = revisions(&self.readers).await?;
                self.catch_up_to = Some(current);
                Ok(())
            }
            Err(broadcast::error::RecvError::Closed) => Err(StoreError::Closed),
        }
    }
}

/// The latest and compacted revisions.
pub(super) async fn revisions(readers: &Arc<ReadPool>) -> Result<(i64, i64), StoreError> {
    readers
        .run(|conn| {
            let snapshot = Snapshot::begin(conn)?;
            Ok((snapshot.revision, snapshot.compacted))
        })
        .await
}
