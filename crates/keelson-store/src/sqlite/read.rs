//! Read queries, each inside one read transaction (one consistent snapshot).
//!
//! Reads at the latest revision use the `current` table. Reads at a past revision R start
//! from the latest state and undo what changed after R: a key changed after R had, at R,
//! the value its first change after R replaced (that row's `prev_revision`; none if the
//! change was a create). This costs time in proportion to the writes since R, which for
//! the reads that ask for the past (the later pages of a list) is small. Compaction keeps
//! exactly these rows for every R at or above the compaction point.
//!
//! Every read first checks the requested revision against the snapshot's `revision` and
//! `compact_revision`.

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::StoreError;
use crate::kv::{EventKind, KeyValue, WatchEvent};

/// A read transaction and the revisions it sees.
pub(super) struct Snapshot<'c> {
    tx: Transaction<'c>,
    pub revision: i64,
    pub compacted: i64,
}

/// A key range `[lower, upper)`; no upper bound when `upper` is `None`.
pub(super) struct Range<'a> {
    pub lower: &'a [u8],
    pub upper: Option<&'a [u8]>,
}

impl Range<'_> {
    /// The SQL condition on `column` for this range, binding `?lower` and `?upper`.
    fn condition(&self, column: &str) -> String {
        match self.upper {
            Some(_) => format!("{column} >= :lower AND {column} < :upper"),
            None => format!("{column} >= :lower"),
        }
    }
}

pub(super) fn sql_error(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

impl<'c> Snapshot<'c> {
    pub fn begin(conn: &'c mut Connection) -> Result<Self, StoreError> {
        let tx = conn.transaction().map_err(sql_error("begin read"))?;
        let (revision, compacted) = tx
            .query_row(
                "SELECT (SELECT value FROM meta WHERE name = 'revision'),
                        (SELECT value FROM meta WHERE name = 'compact_revision')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql_error("read meta"))?;
        Ok(Snapshot {
            tx,
            revision,
            compacted,
        })
    }

    /// Fails unless `requested` is readable in this snapshot.
    pub fn check(&self, requested: i64) -> Result<(), StoreError> {
        if requested > self.revision {
            return Err(StoreError::FutureRevision {
                requested,
                current: self.revision,
            });
        }
        if requested < self.compacted {
            return Err(StoreError::Compacted {
                requested,
                compacted: self.compacted,
            });
        }
        Ok(())
    }

    pub fn get(&self, key: &str, at: Option<i64>) -> Result<Option<KeyValue>, StoreError> {
        let at = match at {
            Some(rev) if rev != self.revision => {
                self.check(rev)?;
                rev
            }
            _ => {
                let sql = "SELECT l.revision, l.create_revision, l.version, l.value, l.name
                           FROM current c JOIN log l ON l.revision = c.revision
                           WHERE c.name = ?1";
                return self.query_one(sql, params![key.as_bytes()]);
            }
        };
        // The key's first change after `at`, if any, says what it was at `at`.
        let first_change: Option<i64> = self
            .tx
            .prepare_cached(
                "SELECT prev_revision FROM log WHERE revision > ?1 AND name = ?2
                 ORDER BY revision LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![at, key.as_bytes()], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_error("get"))?;
        match first_change {
            // Created after `at`: absent then.
            Some(0) => Ok(None),
            Some(prev) => self.query_one(
                "SELECT revision, create_revision, version, value, name FROM log
                 WHERE revision = ?1",
                params![prev],
            ),
            // Unchanged since `at`: its latest state.
            None => self.get(key, None),
        }
    }

    fn query_one(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<KeyValue>, StoreError> {
        let mut stmt = self.tx.prepare_cached(sql).map_err(sql_error("get"))?;
        let row = stmt
            .query_row(params, kv_from_row)
            .optional()
            .map_err(sql_error("get"))?;
        row.transpose()
    }

    /// Up to `limit` keys of `range` at revision `at` (the snapshot's when `None`), plus
    /// whether more follow.
    pub fn list(
        &self,
        range: &Range<'_>,
        at: Option<i64>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, bool), StoreError> {
        // Fetch one extra row to learn whether more follow.
        let fetch = limit.filter(|&n| n > 0).map_or(-1, |n| n as i64 + 1);
        let at = at.unwrap_or(self.revision);
        self.check(at)?;
        let sql = if at == self.revision {
            format!(
                "SELECT l.revision, l.create_revision, l.version, l.value, l.name
                 FROM current c JOIN log l ON l.revision = c.revision
                 WHERE {} ORDER BY c.name LIMIT :limit",
                range.condition("c.name")
            )
        } else {
            format!(
                "WITH changed AS (
                     SELECT name, min(revision) AS first FROM log
                     WHERE revision > :at AND {names} GROUP BY name),
                 visible AS (
                     SELECT l.prev_revision AS revision
                     FROM changed c JOIN log l ON l.revision = c.first
                     WHERE l.prev_revision > 0
                     UNION ALL
                     SELECT revision FROM current
                     WHERE {names} AND name NOT IN (SELECT name FROM changed))
                 SELECT l.revision, l.create_revision, l.version, l.value, l.name
                 FROM visible v JOIN log l ON l.revision = v.revision
                 ORDER BY l.name LIMIT :limit",
                names = range.condition("name")
            )
        };
        let mut stmt = self.tx.prepare_cached(&sql).map_err(sql_error("list"))?;
        let mut bind = vec![
            (":lower", &range.lower as &dyn rusqlite::ToSql),
            (":limit", &fetch),
        ];
        if let Some(upper) = &range.upper {
            bind.push((":upper", upper));
        }
        if at != self.revision {
            bind.push((":at", &at));
        }
        let rows = stmt
            .query_map(bind.as_slice(), kv_from_row)
            .map_err(sql_error("list"))?;
        let mut kvs = Vec::new();
        for row in rows {
            kvs.push(row.map_err(sql_error("list"))??);
        }
        let more = match limit.filter(|&n| n > 0) {
            Some(n) if kvs.len() > n => {
                kvs.truncate(n);
                true
            }
            _ => false,
        };
        Ok((kvs, more))
    }

    pub fn count(&self, range: &Range<'_>) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM current WHERE {}",
            range.condition("name")
        );
        let mut stmt = self.tx.prepare_cached(&sql).map_err(sql_error("count"))?;
        let mut bind = vec![(":lower", &range.lower as &dyn rusqlite::ToSql)];
        if let Some(upper) = &range.upper {
            bind.push((":upper", upper));
        }
        stmt.query_row(bind.as_slice(), |r| r.get(0))
            .map_err(sql_error("count"))
    }

    /// Changes in `range` with revisions in `[from, to]`, oldest first, at most `limit`.
    pub fn history(
        &self,
        range: &Range<'_>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<WatchEvent>, StoreError> {
        if from < self.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: self.compacted,
            });
        }
        let sql = format!(
            "SELECT l.revision, l.create_revision, l.version, l.value, l.name, l.deleted,
                    p.revision, p.create_revision, p.version, p.value
             FROM log l LEFT JOIN log p ON p.revision = l.prev_revision
             WHERE l.revision >= :from AND l.revision <= :to AND {}
             ORDER BY l.revision LIMIT :limit",
            range.condition("l.name")
        );
        let mut stmt = self
            .tx
            .prepare_cached(&sql)
            .map_err(sql_error("watch history"))?;
        let limit = limit as i64;
        let mut bind: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
            (":lower", &range.lower),
            (":from", &from),
            (":to", &to),
            (":limit", &limit),
        ];
        if let Some(upper) = &range.upper {
            bind.push((":upper", upper));
        }
        let rows = stmt
            .query_map(bind.as_slice(), event_from_row)
            .map_err(sql_error("watch history"))?;
        let mut events = Vec::new();
        for row in rows {
            events.push(row.map_err(sql_error("watch history"))??);
        }
        Ok(events)
    }
}

fn key_from(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::backend("stored key is not UTF-8 (corrupt store?)", e))
}

/// Decodes `revision, create_revision, version, value, name` at column `base`.
fn kv_at(r: &Row<'_>, base: usize) -> rusqlite::Result<Result<KeyValue, StoreError>> {
    let mod_revision = r.get(base)?;
    let create_revision = r.get(base + 1)?;
    let version = r.get(base + 2)?;
    let value: Vec<u8> = r.get(base + 3)?;
    let name: Vec<u8> = r.get(base + 4)?;
    Ok(key_from(name).map(|key| KeyValue {
        key,
        value: Bytes::from(value),
        mod_revision,
        create_revision,
        version,
    }))
}

fn kv_from_row(r: &Row<'_>) -> rusqlite::Result<Result<KeyValue, StoreError>> {
    kv_at(r, 0)
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Result<WatchEvent, StoreError>> {
    let kv = match kv_at(r, 0)? {
        Ok(kv) => kv,
        Err(e) => return Ok(Err(e)),
    };
    let deleted: bool = r.get(5)?;
    let prev_revision: Option<i64> = r.get(6)?;
    let prev = match prev_revision {
        Some(revision) => {
            let value: Vec<u8> = r.get(9)?;
            Some(KeyValue {
                key: kv.key.clone(),
                value: Bytes::from(value),
                mod_revision: revision,
                create_revision: r.get(7)?,
                version: r.get(8)?,
            })
        }
        None => None,
    };
    Ok(Ok(match (deleted, prev) {
        (true, Some(prev)) => WatchEvent::deleted(prev, kv.mod_revision),
        (true, None) => WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                value: Bytes::new(),
                create_revision: 0,
                version: 0,
                ..kv
            },
            prev: None,
        },
        (false, prev) => {
            let kind = if kv.version == 1 {
                EventKind::Create
            } else {
                EventKind::Modify
            };
            WatchEvent { kind, kv, prev }
        }
    }))
}
