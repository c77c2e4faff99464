//! The etcd v3 backend, for servers that share state across machines.
//!
//! The contract maps almost one to one onto etcd: revisions are etcd's, create/update/
//! delete are transactions comparing `create_revision`/`mod_revision`, watches are etcd
//! watches with `prev_kv`. Two things are added:
//!
//! * the compaction point, which etcd does not report, is kept in the key
//!   `compact_rev_key` (as kube-apiserver does, and with the same value format), written
//!   before each compaction, so `compacted_revision` and the early `Compacted` check of
//!   `watch` work across servers;
//! * an update or delete of a missing key fails with `NotFound` (etcd would compare a
//!   missing key's `mod_revision` as 0).

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, GetResponse, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::kv::{
    EventKind, KeyValue, ListOptions, ListPage, WatchEvent, WatchStream, list_lower_bound,
    prefix_end,
};
use crate::{Result, Store, StoreError, check_key};

/// Largest response accepted from etcd: a list of every object of a kind can be far beyond
/// gRPC's 4 MiB default (kube-apiserver lifts its limit the same way).
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// Where the compaction point is recorded (kube-apiserver's key).
const COMPACT_KEY: &str = "compact_rev_key";

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A store kept in an etcd cluster.
pub struct EtcdStore {
    client: Client,
}

fn failure(context: &str) -> impl FnOnce(etcd_client::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

/// etcd reports revision problems only in the gRPC status message.
enum RevisionProblem {
    Compacted,
    Future,
}

fn revision_problem(error: &etcd_client::Error) -> Option<RevisionProblem> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    if status
        .message()
        .contains("required revision has been compacted")
    {
        Some(RevisionProblem::Compacted)
    } else if status
        .message()
        .contains("required revision is a future revision")
    {
        Some(RevisionProblem::Future)
    } else {
        None
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = kv
        .key_str()
        .map_err(|e| StoreError::backend("etcd key is not UTF-8", e))?
        .to_owned();
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header.map(|h| h.revision()).ok_or_else(|| {
        StoreError::backend(
            "etcd response",
            std::io::Error::other("missing response header"),
        )
    })
}

/// The `[key, range_end)` pair etcd uses for a prefix range starting at `lower`.
fn etcd_range(lower: Vec<u8>, prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let key = if lower.is_empty() { vec![0] } else { lower };
    // "\0" as range end means "to the end of the keyspace".
    let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
    (key, end)
}

impl EtcdStore {
    /// Connects and checks that etcd answers.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let unreachable = |reason: String| StoreError::Open {
            path: config.endpoints.join(",").into(),
            reason,
        };
        let client = tokio::time::timeout(
            config.connect_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| unreachable("timed out connecting to etcd".into()))?
        .map_err(|e| unreachable(format!("cannot connect to etcd: {e}")))?;
        let store = EtcdStore { client };
        tokio::time::timeout(config.connect_timeout, store.current_revision())
            .await
            .map_err(|_| unreachable("etcd did not answer".into()))?
            .map_err(|e| unreachable(format!("etcd did not answer: {e}")))?;
        Ok(store)
    }

    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<GetResponse, etcd_client::Error> {
        self.kv().get(key, Some(options)).await
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Maps a failed read at `requested` to the contract's error.
    async fn read_error(&self, error: etcd_client::Error, requested: i64) -> StoreError {
        match revision_problem(&error) {
            Some(RevisionProblem::Compacted) => StoreError::Compacted {
                requested,
                compacted: self.compacted_revision().await.unwrap_or(0),
            },
            Some(RevisionProblem::Future) => StoreError::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(0),
            },
            None => StoreError::backend("etcd read", error),
        }
    }

    /// Applies `op` to an existing `key` whose `mod_revision` is `expected`.
    async fn change(&self, key: &str, expected: i64, op: TxnOp) -> Result<i64> {
        let compares = vec![
            Compare::create_revision(key, CompareOp::Greater, 0),
            Compare::mod_revision(key, CompareOp::Equal, expected),
        ];
        match self.guarded(key, compares, op).await? {
            Ok(revision) => Ok(revision),
            Err(None) => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
            Err(Some(current)) => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: current.mod_revision,
            }),
        }
    }

    /// Runs a guarded write: `op` if `compares` hold, else a read of `key`.
    async fn guarded(
        &self,
        key: &str,
        compares: Vec<Compare>,
        op: TxnOp,
    ) -> Result<std::result::Result<i64, Option<KeyValue>>> {
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![op])
            .or_else(vec![TxnOp::get(key, None)]);
        let response = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(failure("etcd txn"))?;
        if response.succeeded() {
            return Ok(Ok(header_revision(response.header())?));
        }
        let current = match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(convert).transpose()?,
            _ => None,
        };
        Ok(Err(current))
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn current_revision(&self) -> Result<i64> {
        let response = self
            .range(COMPACT_KEY.into(), GetOptions::new().with_count_only())
            .await
            .map_err(failure("etcd read"))?;
        header_revision(response.header())
    }

    async fn compacted_revision(&self) -> Result<i64> {
        let response = self
            .range(COMPACT_KEY.into(), GetOptions::new())
            .await
            .map_err(failure("etcd read"))?;
        match response.kvs().first() {
            None => Ok(0),
            Some(kv) => kv
                .value_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    StoreError::backend(
                        "etcd read",
                        std::io::Error::other(format!("{COMPACT_KEY} does not hold a revision")),
                    )
                }),
        }
    }

    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>> {
        check_key(key)?;
        let mut options = GetOptions::new();
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        match self.range(key.into(), options).await {
            Ok(response) => response.kvs().first().map(convert).transpose(),
            Err(error) => Err(self.read_error(error, revision.unwrap_or(0)).await),
        }
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage> {
        let lower = list_lower_bound(prefix, options.start_after.as_deref());
        let (key, end) = etcd_range(lower, prefix);
        let mut get = GetOptions::new().with_range(end);
        if let Some(limit) = options.limit.filter(|&n| n > 0) {
            get = get.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        if let Some(revision) = options.revision {
            get = get.with_revision(revision);
        }
        let response = match self.range(key, get).await {
            Ok(response) => response,
            Err(error) => return Err(self.read_error(error, options.revision.unwrap_or(0)).await),
        };
        let kvs = response
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>>>()?;
        let revision = match options.revision {
            Some(revision) => revision,
            None => header_revision(response.header())?,
        };
        Ok(ListPage {
            kvs,
            revision,
            more: response.more(),
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let (key, end) = etcd_range(prefix.as_bytes().to_vec(), prefix);
        let response = self
            .range(key, GetOptions::new().with_range(end).with_count_only())
            .await
            .map_err(failure("etcd count"))?;
        Ok(response.count())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        check_key(key)?;
        let absent = Compare::create_revision(key, CompareOp::Equal, 0);
        match self
            .guarded(key, vec![absent], TxnOp::put(key, value.to_vec(), None))
            .await?
        {
            Ok(revision) => Ok(revision),
            Err(_) => Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            }),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64> {
        check_key(key)?;
        self.change(key, expected, TxnOp::put(key, value.to_vec(), None))
            .await
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64> {
        check_key(key)?;
        self.change(key, expected, TxnOp::delete(key, None)).await
    }

    async fn watch(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        if start_revision < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "watch start revision {start_revision} is negative"
            )));
        }
        if start_revision > 0 {
            let compacted = self.compacted_revision().await?;
            if start_revision < compacted {
                return Err(StoreError::Compacted {
                    requested: start_revision,
                    compacted,
                });
            }
        }
        let (key, end) = etcd_range(prefix.as_bytes().to_vec(), prefix);
        let mut options = WatchOptions::new().with_range(end).with_prev_key();
        if start_revision > 0 {
            options = options.with_start_revision(start_revision);
        }
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(key, Some(options))
            .await
            .map_err(failure("etcd watch"))?;
        let state = EtcdWatch {
            stream,
            ready: VecDeque::new(),
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            EtcdWatch::next_item,
        )))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        loop {
            let response = self
                .range(COMPACT_KEY.into(), GetOptions::new())
                .await
                .map_err(failure("etcd read"))?;
            let current = header_revision(response.header())?;
            let (compacted, recorded_at) = match response.kvs().first() {
                Some(kv) => (
                    kv.value_str()
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0),
                    kv.mod_revision(),
                ),
                None => (0, 0),
            };
            if revision <= compacted {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted,
                });
            }
            if revision > current {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current,
                });
            }
            // Record the new floor first, so no reader trusts history about to go.
            let unchanged = Compare::mod_revision(COMPACT_KEY, CompareOp::Equal, recorded_at);
            let record = TxnOp::put(COMPACT_KEY, revision.to_string(), None);
            if self
                .guarded(COMPACT_KEY, vec![unchanged], record)
                .await?
                .is_err()
            {
                continue; // another server moved it; look again
            }
            return match self.kv().compact(revision, None).await {
                Ok(_) => Ok(()),
                Err(error) => match revision_problem(&error) {
                    // Compacted there already (etcd's own auto-compaction): same outcome.
                    Some(RevisionProblem::Compacted) => Ok(()),
                    _ => Err(StoreError::backend("etcd compact", error)),
                },
            };
        }
    }
}

/// An etcd watch as a stream of contract events.
struct EtcdWatch {
    stream: etcd_client::WatchStream,
    ready: VecDeque<WatchEvent>,
    finished: bool,
}

impl EtcdWatch {
    async fn next_item(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished {
                return None;
            }
            if let Err(error) = self.receive().await {
                self.finished = true;
                return Some((Err(error), self));
            }
        }
    }

    async fn receive(&mut self) -> Result<()> {
        let message = self.stream.message().await.map_err(failure("etcd watch"))?;
        let Some(response) = message else {
            return Err(StoreError::backend(
                "etcd watch",
                std::io::Error::other("watch stream ended"),
            ));
        };
        if response.compact_revision() > 0 {
            let requested = response.header().map(|h| h.revision()).unwrap_or(0);
            return Err(StoreError::Compacted {
                requested,
                compacted: response.compact_revision(),
            });
        }
        if response.canceled() {
            return Err(StoreError::backend(
                "etcd watch",
                std::io::Error::other(format!("canceled: {}", response.cancel_reason())),
            ));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let kv = convert(kv)?;
            let prev = event.prev_kv().map(convert).transpose()?;
            self.ready.push_back(match event.event_type() {
                EventType::Delete => match prev {
                    Some(prev) => WatchEvent::deleted(prev, kv.mod_revision),
                    None => WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            value: Bytes::new(),
                            create_revision: 0,
                            version: 0,
                            ..kv
                        },
                        prev: None,
                    },
                },
                EventType::Put => {
                    let kind = if kv.version == 1 {
                        EventKind::Create
                    } else {
                        EventKind::Modify
                    };
                    WatchEvent { kind, kv, prev }
                }
            });
        }
        Ok(())
    }
}
