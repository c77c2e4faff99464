//! The store contract as tests. Every function takes a fresh store and panics on a
//! violation; `conformance_suite!` runs all of them against a backend.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{EventKind, KeyValue, ListOptions, Store, StoreError, WatchEvent, WatchStream};

const WAIT: Duration = Duration::from_secs(20);

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

async fn next_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(stream).await);
    }
    events
}

async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

async fn list_all(store: &dyn Store, prefix: &str) -> Vec<KeyValue> {
    store
        .list(prefix, ListOptions::default())
        .await
        .unwrap()
        .kvs
}

pub async fn writes_increase_the_revision(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    assert!(
        start >= 1,
        "a store starts at revision 1 or later, got {start}"
    );
    let mut last = start;
    for i in 0..5 {
        let rev = store.create(&format!("/r/{i}"), v("x")).await.unwrap();
        assert!(rev > last, "revision {rev} after {last}");
        assert_eq!(store.current_revision().await.unwrap(), rev);
        last = rev;
    }
    let rev = store
        .update(
            "/r/0",
            v("y"),
            store.get("/r/0", None).await.unwrap().unwrap().mod_revision,
        )
        .await
        .unwrap();
    assert!(rev > last);
    let del = store.delete("/r/0", rev).await.unwrap();
    assert!(del > rev);
    assert_eq!(store.current_revision().await.unwrap(), del);
}

pub async fn create_then_get(store: Arc<dyn Store>) {
    let rev = store.create("/a/one", v("1")).await.unwrap();
    let kv = store
        .get("/a/one", None)
        .await
        .unwrap()
        .expect("created key is readable");
    assert_eq!(
        kv,
        KeyValue {
            key: "/a/one".into(),
            value: v("1"),
            create_revision: rev,
            mod_revision: rev,
            version: 1
        }
    );
    assert_eq!(store.get("/a/two", None).await.unwrap(), None);
    // A prefix of a key is not the key.
    assert_eq!(store.get("/a/on", None).await.unwrap(), None);
}

pub async fn create_of_existing_key_fails(store: Arc<dyn Store>) {
    let rev = store.create("/k", v("first")).await.unwrap();
    match store.create("/k", v("second")).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "/k"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let kv = store.get("/k", None).await.unwrap().unwrap();
    assert_eq!((kv.value, kv.mod_revision), (v("first"), rev));
    assert_eq!(
        store.current_revision().await.unwrap(),
        rev,
        "a refused write has no revision"
    );
}

pub async fn update_guarded_by_mod_revision(store: Arc<dyn Store>) {
    let created = store.create("/k", v("1")).await.unwrap();
    let updated = store.update("/k", v("2"), created).await.unwrap();
    assert!(updated > created);
    let kv = store.get("/k", None).await.unwrap().unwrap();
    assert_eq!(kv.value, v("2"));
    assert_eq!(kv.create_revision, created);
    assert_eq!(kv.mod_revision, updated);
    assert_eq!(kv.version, 2);

    // The old revision no longer matches.
    match store.update("/k", v("3"), created).await {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected, current), ("/k", created, updated));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let kv = store.get("/k", None).await.unwrap().unwrap();
    assert_eq!(
        (kv.value, kv.version),
        (v("2"), 2),
        "a refused update changes nothing"
    );
    assert_eq!(store.current_revision().await.unwrap(), updated);
}

pub async fn update_of_missing_key_is_not_found(store: Arc<dyn Store>) {
    for expected in [0, 1, 12345] {
        match store.update("/missing", v("x"), expected).await {
            Err(StoreError::NotFound { key }) => assert_eq!(key, "/missing"),
            other => panic!("expected NotFound for expected={expected}, got {other:?}"),
        }
    }
    assert_eq!(
        store.get("/missing", None).await.unwrap(),
        None,
        "update must not create"
    );
    match store.delete("/missing", 0).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn delete_guarded_by_mod_revision(store: Arc<dyn Store>) {
    let created = store.create("/k", v("1")).await.unwrap();
    let updated = store.update("/k", v("2"), created).await.unwrap();
    match store.delete("/k", created).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, updated),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(
        store.get("/k", None).await.unwrap().is_some(),
        "a refused delete changes nothing"
    );
    let deleted = store.delete("/k", updated).await.unwrap();
    assert!(deleted > updated);
    assert_eq!(store.get("/k", None).await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), deleted);
    match store.delete("/k", updated).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound after delete, got {other:?}"),
    }
}

pub async fn recreate_after_delete_starts_a_new_incarnation(store: Arc<dyn Store>) {
    let first = store.create("/k", v("1")).await.unwrap();
    let first = store.update("/k", v("2"), first).await.unwrap();
    store.delete("/k", first).await.unwrap();
    let again = store.create("/k", v("3")).await.unwrap();
    let kv = store.get("/k", None).await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (again, again, 1)
    );
    assert_eq!(kv.value, v("3"));
}

pub async fn get_at_past_revisions(store: Arc<dyn Store>) {
    let before = store.current_revision().await.unwrap();
    let r1 = store.create("/k", v("1")).await.unwrap();
    let r2 = store.update("/k", v("2"), r1).await.unwrap();
    let other = store.create("/other", v("o")).await.unwrap();
    let r3 = store.delete("/k", r2).await.unwrap();
    let r4 = store.create("/k", v("4")).await.unwrap();

    assert_eq!(store.get("/k", Some(before)).await.unwrap(), None);
    let at = |rev| {
        let store = store.clone();
        async move {
            store
                .get("/k", Some(rev))
                .await
                .unwrap()
                .map(|kv| (kv.value, kv.mod_revision, kv.version))
        }
    };
    assert_eq!(at(r1).await, Some((v("1"), r1, 1)));
    assert_eq!(at(r2).await, Some((v("2"), r2, 2)));
    assert_eq!(
        at(other).await,
        Some((v("2"), r2, 2)),
        "unchanged between writes"
    );
    assert_eq!(at(r3).await, None, "deleted at r3");
    assert_eq!(at(r4).await, Some((v("4"), r4, 1)));
    let current = store.current_revision().await.unwrap();
    match store.get("/k", Some(current + 1000)).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 1000),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

pub async fn list_prefix_in_key_order(store: Arc<dyn Store>) {
    for key in [
        "/a/c",
        "/a/a",
        "/a/b/x",
        "/a",
        "/a0",
        "/ab/z",
        "/b/a",
        "/a/\u{e9}",
    ] {
        store.create(key, v(key)).await.unwrap();
    }
    let keys: Vec<String> = list_all(&*store, "/a/")
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/a/a", "/a/b/x", "/a/c", "/a/\u{e9}"]);
    let page = store.list("/a/", ListOptions::default()).await.unwrap();
    assert!(!page.more);
    assert_eq!(page.revision, store.current_revision().await.unwrap());
    for kv in &page.kvs {
        assert_eq!(kv.value, v(&kv.key), "values belong to their keys");
    }
    assert!(list_all(&*store, "/nothing/").await.is_empty());
    // An empty prefix lists everything, in byte order.
    let all: Vec<String> = list_all(&*store, "")
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert!(all.len() >= 8);
}

pub async fn list_pages_share_one_revision(store: Arc<dyn Store>) {
    let mut revs = BTreeMap::new();
    for i in 0..10 {
        let key = format!("/p/{i:02}");
        revs.insert(
            key.clone(),
            store.create(&key, v(&format!("old{i}"))).await.unwrap(),
        );
    }
    let first = store
        .list(
            "/p/",
            ListOptions {
                limit: Some(3),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.kvs.len(), 3);
    assert!(first.more);
    let snapshot = first.revision;

    // Change the keys while paging: the later pages must not see it.
    store
        .update("/p/05", v("new"), revs["/p/05"])
        .await
        .unwrap();
    store.delete("/p/07", revs["/p/07"]).await.unwrap();
    store.create("/p/04a", v("new")).await.unwrap();
    store.delete("/p/01", revs["/p/01"]).await.unwrap();

    let mut seen = first.kvs.clone();
    let mut more = first.more;
    while more {
        let page = store
            .list(
                "/p/",
                ListOptions {
                    revision: Some(snapshot),
                    limit: Some(3),
                    start_after: seen.last().map(|kv| kv.key.clone()),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, snapshot);
        assert!(page.kvs.len() <= 3);
        more = page.more;
        seen.extend(page.kvs);
    }
    let got: Vec<(String, Bytes)> = seen.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let want: Vec<(String, Bytes)> = (0..10)
        .map(|i| (format!("/p/{i:02}"), v(&format!("old{i}"))))
        .collect();
    assert_eq!(got, want, "all pages show the first page's snapshot");

    // A fresh listing shows the changes.
    let now: Vec<String> = list_all(&*store, "/p/")
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert!(now.contains(&"/p/04a".to_string()) && !now.contains(&"/p/07".to_string()));
}

pub async fn list_at_past_revision(store: Arc<dyn Store>) {
    let a = store.create("/l/a", v("a1")).await.unwrap();
    let b = store.create("/l/b", v("b1")).await.unwrap();
    let then = store.current_revision().await.unwrap();
    store.update("/l/a", v("a2"), a).await.unwrap();
    store.delete("/l/b", b).await.unwrap();
    store.create("/l/c", v("c1")).await.unwrap();

    let old = store
        .list(
            "/l/",
            ListOptions {
                revision: Some(then),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let old: Vec<(String, Bytes, i64)> = old
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect();
    assert_eq!(
        old,
        vec![("/l/a".into(), v("a1"), a), ("/l/b".into(), v("b1"), b)]
    );
    let new: Vec<(String, Bytes)> = list_all(&*store, "/l/")
        .await
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(
        new,
        vec![("/l/a".into(), v("a2")), ("/l/c".into(), v("c1"))]
    );
    // Limits apply to past reads too.
    let page = store
        .list(
            "/l/",
            ListOptions {
                revision: Some(then),
                limit: Some(1),
                start_after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((page.kvs.len(), page.more), (1, true));
}

pub async fn large_lists_are_returned_whole(store: Arc<dyn Store>) {
    // Well past gRPC's 4 MiB default message size, in values etcd accepts (< 1.5 MiB).
    let big = Bytes::from(vec![7u8; 900 * 1024]);
    for i in 0..7 {
        store
            .create(&format!("/big/{i}"), big.clone())
            .await
            .unwrap();
    }
    let page = store.list("/big/", ListOptions::default()).await.unwrap();
    assert_eq!(page.kvs.len(), 7);
    assert!(page.kvs.iter().all(|kv| kv.value == big));
    let mut watch = store.watch("/big/", 1).await.unwrap();
    assert_eq!(next_events(&mut watch, 7).await.len(), 7);
}

pub async fn count_by_prefix(store: Arc<dyn Store>) {
    for i in 0..7 {
        store.create(&format!("/c/x/{i}"), v("x")).await.unwrap();
    }
    let rev = store.create("/c/y/0", v("y")).await.unwrap();
    assert_eq!(store.count("/c/x/").await.unwrap(), 7);
    assert_eq!(store.count("/c/").await.unwrap(), 8);
    assert_eq!(store.count("/none/").await.unwrap(), 0);
    store.delete("/c/y/0", rev).await.unwrap();
    assert_eq!(store.count("/c/").await.unwrap(), 7);
}

pub async fn values_round_trip_exactly(store: Arc<dyn Store>) {
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let large: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cases = [
        ("/v/empty", Bytes::new()),
        ("/v/binary", Bytes::from(binary)),
        ("/v/large", Bytes::from(large)),
        ("/v/utf8", v("h\u{e9}llo \u{1f980}")),
    ];
    for (key, value) in &cases {
        store.create(key, value.clone()).await.unwrap();
    }
    for (key, value) in &cases {
        assert_eq!(
            &store.get(key, None).await.unwrap().unwrap().value,
            value,
            "{key}"
        );
    }
    let mut watch = store.watch("/v/", 1).await.unwrap();
    for (key, value) in &cases {
        let event = next_event(&mut watch).await;
        assert_eq!((&event.kv.key as &str, &event.kv.value), (*key, value));
    }
}

pub async fn empty_key_is_rejected(store: Arc<dyn Store>) {
    assert!(matches!(
        store.create("", v("x")).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get("", None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.update("", v("x"), 1).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.delete("", 1).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

pub async fn concurrent_writers_get_distinct_revisions(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..20 {
                let key = format!("/w/{writer}/{i}");
                let rev = store.create(&key, v(&key)).await.unwrap();
                written.push((key, rev));
            }
            written
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let mut revisions: Vec<i64> = all.iter().map(|(_, rev)| *rev).collect();
    revisions.sort();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        all.len(),
        "every write has its own revision"
    );
    for (key, rev) in &all {
        let kv = store.get(key, None).await.unwrap().unwrap();
        assert_eq!((kv.mod_revision, &kv.value), (*rev, &v(key)));
    }
    assert_eq!(store.count("/w/").await.unwrap(), 320);
}

pub async fn compare_and_swap_loses_no_update(store: Arc<dyn Store>) {
    store.create("/counter", v("0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..15 {
                loop {
                    let kv = store.get("/counter", None).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    match store
                        .update("/counter", v(&(n + 1).to_string()), kv.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = store.get("/counter", None).await.unwrap().unwrap();
    assert_eq!(kv.value, v("120"));
    assert_eq!(kv.version, 121);
}

pub async fn watch_from_now(store: Arc<dyn Store>) {
    let old = store.create("/w/old", v("old")).await.unwrap();
    let mut watch = store.watch("/w/", 0).await.unwrap();
    assert_quiet(&mut watch).await;
    let created = store.create("/w/a", v("1")).await.unwrap();
    store.create("/elsewhere/a", v("x")).await.unwrap();
    let updated = store.update("/w/a", v("2"), created).await.unwrap();
    let deleted = store.delete("/w/old", old).await.unwrap();

    let events = next_events(&mut watch, 3).await;
    assert_eq!(events[0].kind, EventKind::Create);
    assert_eq!(events[0].kv.key, "/w/a");
    assert_eq!((events[0].revision(), events[0].kv.version), (created, 1));
    assert_eq!(events[0].prev, None);

    assert_eq!(events[1].kind, EventKind::Modify);
    assert_eq!(
        (events[1].revision(), &events[1].kv.value),
        (updated, &v("2"))
    );
    let prev = events[1]
        .prev
        .as_ref()
        .expect("modify carries the previous value");
    assert_eq!((&prev.value, prev.mod_revision), (&v("1"), created));

    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(
        (events[2].kv.key.as_str(), events[2].revision()),
        ("/w/old", deleted)
    );
    let prev = events[2]
        .prev
        .as_ref()
        .expect("delete carries the previous value");
    assert_eq!((&prev.value, prev.mod_revision), (&v("old"), old));
    assert_quiet(&mut watch).await;
}

/// A watch of the empty prefix sees every revision the store hands out, in order, with no
/// gaps: the API server's watch cache relies on it to know it has seen everything up to the
/// store's current revision.
pub async fn whole_keyspace_watch_sees_every_revision(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("", start + 1).await.unwrap();
    let a = store.create("/x/a", v("1")).await.unwrap();
    store.create("zzz", v("outside any prefix")).await.unwrap();
    store.update("/x/a", v("2"), a).await.unwrap();
    let b = store.create("/y/b", v("b")).await.unwrap();
    let last = store.delete("/y/b", b).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), last);
    let mut seen = start;
    while seen < last {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision(), seen + 1, "no revision is skipped");
        seen = event.revision();
    }
    assert_quiet(&mut watch).await;
}

pub async fn watch_replays_history_with_previous_values(store: Arc<dyn Store>) {
    let r1 = store.create("/h/a", v("1")).await.unwrap();
    let r2 = store.update("/h/a", v("2"), r1).await.unwrap();
    let r3 = store.create("/h/b", v("b")).await.unwrap();
    let r4 = store.delete("/h/a", r2).await.unwrap();
    store.create("/x/unrelated", v("x")).await.unwrap();

    let mut watch = store.watch("/h/", r1).await.unwrap();
    let events = next_events(&mut watch, 4).await;
    let summary: Vec<(EventKind, &str, i64)> = events
        .iter()
        .map(|e| (e.kind, e.kv.key.as_str(), e.revision()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Create, "/h/a", r1),
            (EventKind::Modify, "/h/a", r2),
            (EventKind::Create, "/h/b", r3),
            (EventKind::Delete, "/h/a", r4),
        ]
    );
    assert_eq!(events[1].prev.as_ref().unwrap().value, v("1"));
    assert_eq!(events[3].prev.as_ref().unwrap().value, v("2"));
    // History flows into live events without a gap or a repeat.
    let r5 = store.create("/h/c", v("c")).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), r5);

    // Starting in the middle skips what came before.
    let mut watch = store.watch("/h/", r3).await.unwrap();
    let revisions: Vec<i64> = next_events(&mut watch, 3)
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    assert_eq!(revisions, vec![r3, r4, r5]);
}

pub async fn watch_sees_every_concurrent_write_in_order(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap() + 1;
    let mut watch = store.watch("/cw/", start).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..25 {
                let key = format!("/cw/{writer}/{i}");
                revs.push(store.create(&key, v(&key)).await.unwrap());
                store
                    .create(&format!("/noise/{writer}/{i}"), v("n"))
                    .await
                    .unwrap();
            }
            revs
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    let events = next_events(&mut watch, 200).await;
    let seen: Vec<i64> = events.iter().map(|e| e.revision()).collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "events in strictly increasing revision order"
    );
    acked.sort();
    assert_eq!(
        seen, acked,
        "exactly the acknowledged writes under the prefix"
    );
    for event in &events {
        assert_eq!(event.kv.value, v(&event.kv.key));
    }
    assert_quiet(&mut watch).await;
}

pub async fn slow_watcher_gets_every_event(store: Arc<dyn Store>) {
    let mut watch = store.watch("/slow/", 0).await.unwrap();
    // Write far more than any live buffer holds while the watcher reads nothing.
    let mut acked = Vec::new();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..150 {
                let key = format!("/slow/{writer}/{i}");
                revs.push(store.create(&key, v("s")).await.unwrap());
            }
            revs
        }));
    }
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked.sort();
    let seen: Vec<i64> = next_events(&mut watch, acked.len())
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    assert_eq!(
        seen, acked,
        "a watcher that falls behind still gets every event, in order"
    );
    let later = store.create("/slow/later", v("l")).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), later);
}

pub async fn compaction_keeps_the_latest_state(store: Arc<dyn Store>) {
    let mut rev = store.create("/cp/kept", v("0")).await.unwrap();
    for i in 1..20 {
        rev = store
            .update("/cp/kept", v(&i.to_string()), rev)
            .await
            .unwrap();
    }
    let gone = store.create("/cp/gone", v("g")).await.unwrap();
    store.delete("/cp/gone", gone).await.unwrap();
    let untouched = store.create("/cp/untouched", v("u")).await.unwrap();
    let floor = store.current_revision().await.unwrap();
    store.compact(floor).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), floor);

    let kv = store.get("/cp/kept", None).await.unwrap().unwrap();
    assert_eq!((kv.value, kv.mod_revision, kv.version), (v("19"), rev, 20));
    assert_eq!(store.get("/cp/gone", None).await.unwrap(), None);
    assert_eq!(
        store
            .get("/cp/untouched", None)
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        untouched
    );
    // The compaction point itself is still readable.
    let at_floor = store.get("/cp/kept", Some(floor)).await.unwrap().unwrap();
    assert_eq!(at_floor.value, v("19"));
    let page = store
        .list(
            "/cp/",
            ListOptions {
                revision: Some(floor),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/cp/kept", "/cp/untouched"]);

    // Writes and watches after compaction work, with previous values.
    let mut watch = store.watch("/cp/", floor + 1).await.unwrap();
    let next = store.update("/cp/kept", v("20"), rev).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!((event.kind, event.revision()), (EventKind::Modify, next));
    assert_eq!(event.prev.unwrap().value, v("19"));
    let recreated = store.create("/cp/gone", v("again")).await.unwrap();
    assert_eq!(
        store
            .get("/cp/gone", None)
            .await
            .unwrap()
            .unwrap()
            .create_revision,
        recreated
    );
}

pub async fn reads_below_the_compaction_point_fail(store: Arc<dyn Store>) {
    let first = store.create("/rc/a", v("1")).await.unwrap();
    let second = store.update("/rc/a", v("2"), first).await.unwrap();
    store.create("/rc/b", v("b")).await.unwrap();
    store.compact(second).await.unwrap();
    match store.get("/rc/a", Some(first)).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, first);
            assert_eq!(compacted, second);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    match store
        .list(
            "/rc/",
            ListOptions {
                revision: Some(first),
                ..ListOptions::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert_eq!(
        store
            .get("/rc/a", Some(second))
            .await
            .unwrap()
            .unwrap()
            .value,
        v("2")
    );
}

pub async fn watch_below_the_compaction_point_fails(store: Arc<dyn Store>) {
    let first = store.create("/wc/a", v("1")).await.unwrap();
    let second = store.update("/wc/a", v("2"), first).await.unwrap();
    let third = store.update("/wc/a", v("3"), second).await.unwrap();
    store.compact(second).await.unwrap();
    match store.watch("/wc/", first).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (first, second));
        }
        Ok(_) => panic!("watch below the compaction point must fail"),
        Err(other) => panic!("expected Compacted, got {other}"),
    }
    // From the compaction point on, history is complete.
    let mut watch = store.watch("/wc/", second + 1).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(event.revision(), third);
    assert_eq!(event.prev.unwrap().value, v("2"));
}

pub async fn compact_rejects_future_and_old_revisions(store: Arc<dyn Store>) {
    let rev = store.create("/cr/a", v("1")).await.unwrap();
    let current = store.current_revision().await.unwrap();
    match store.compact(current + 100).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 100),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
    store.compact(rev).await.unwrap();
    match store.compact(rev).await {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("expected Compacted for a repeated compaction, got {other:?}"),
    }
    assert_eq!(store.compacted_revision().await.unwrap(), rev);
    assert_eq!(
        store.get("/cr/a", None).await.unwrap().unwrap().value,
        v("1")
    );
}

/// A tiny deterministic generator, so both backends see the same operations.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random creates, updates (right and stale), deletes, reads and compactions, checked
/// against an in-memory model after every step, plus the full history replayed by watch.
pub async fn random_operations_match_a_model(store: Arc<dyn Store>) {
    for (run, seed) in [
        0x9e37_79b9_7f4a_7c15u64,
        0x2545_f491_4f6c_dd1d,
        0xdead_beef_cafe_f00d,
    ]
    .into_iter()
    .enumerate()
    {
        model_run(&*store, &format!("/m{run}/"), seed).await;
    }
}

async fn model_run(store: &dyn Store, prefix: &str, seed: u64) {
    let mut rng = Rng(seed);
    let mut model: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut history: Vec<(i64, String, Option<Bytes>)> = Vec::new();
    let mut snapshots: Vec<(i64, BTreeMap<String, KeyValue>)> = Vec::new();
    let start = store.current_revision().await.unwrap() + 1;
    let mut compacted = 0;
    for step in 0..300u64 {
        let key = format!("{prefix}{}", rng.below(12));
        let value = Bytes::from(format!("{step}-{}", rng.below(1000)));
        let existing = model.get(&key).cloned();
        match rng.below(10) {
            0..=2 => match (store.create(&key, value.clone()).await, &existing) {
                (Ok(rev), None) => {
                    model.insert(
                        key.clone(),
                        KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: rev,
                            mod_revision: rev,
                            version: 1,
                        },
                    );
                    history.push((rev, key, Some(value)));
                }
                (Err(StoreError::AlreadyExists { .. }), Some(_)) => {}
                (other, _) => {
                    panic!("step {step}: create {key}: {other:?} with model {existing:?}")
                }
            },
            3..=5 => {
                let stale = rng.below(4) == 0;
                let expected = existing.as_ref().map_or(rng.below(50) as i64, |kv| {
                    kv.mod_revision - i64::from(stale)
                });
                match (store.update(&key, value.clone(), expected).await, &existing) {
                    (Ok(rev), Some(kv)) if !stale => {
                        model.insert(
                            key.clone(),
                            KeyValue {
                                value: value.clone(),
                                mod_revision: rev,
                                version: kv.version + 1,
                                ..kv.clone()
                            },
                        );
                        history.push((rev, key, Some(value)));
                    }
                    (Err(StoreError::Conflict { current, .. }), Some(kv)) if stale => {
                        assert_eq!(current, kv.mod_revision)
                    }
                    (Err(StoreError::NotFound { .. }), None) => {}
                    (other, _) => {
                        panic!("step {step}: update {key}: {other:?} with model {existing:?}")
                    }
                }
            }
            6..=7 => match (
                &existing,
                store
                    .delete(&key, existing.as_ref().map_or(1, |kv| kv.mod_revision))
                    .await,
            ) {
                (Some(_), Ok(rev)) => {
                    model.remove(&key);
                    history.push((rev, key, None));
                }
                (None, Err(StoreError::NotFound { .. })) => {}
                (_, other) => {
                    panic!("step {step}: delete {key}: {other:?} with model {existing:?}")
                }
            },
            8 => {
                // Read a past snapshot that has not been compacted.
                let readable: Vec<_> = snapshots
                    .iter()
                    .filter(|(rev, _)| *rev >= compacted)
                    .collect();
                if let Some((rev, snapshot)) =
                    readable.get(rng.below(readable.len().max(1) as u64) as usize)
                {
                    let page = store
                        .list(
                            prefix,
                            ListOptions {
                                revision: Some(*rev),
                                ..ListOptions::default()
                            },
                        )
                        .await
                        .unwrap();
                    let got: Vec<&KeyValue> = page.kvs.iter().collect();
                    let want: Vec<&KeyValue> = snapshot.values().collect();
                    assert_eq!(got, want, "step {step}: list at {rev}");
                    for k in 0..12 {
                        let key = format!("{prefix}{k}");
                        let got = store.get(&key, Some(*rev)).await.unwrap();
                        assert_eq!(
                            got.as_ref(),
                            snapshot.get(&key),
                            "step {step}: get {key} at {rev}"
                        );
                    }
                }
            }
            _ => {
                if rng.below(3) == 0 {
                    let current = store.current_revision().await.unwrap();
                    let target = current - rng.below(20) as i64;
                    if target > compacted {
                        store.compact(target).await.unwrap();
                        compacted = target;
                    }
                }
            }
        }
        let current = store.current_revision().await.unwrap();
        snapshots.push((current, model.clone()));
        let page = store.list(prefix, ListOptions::default()).await.unwrap();
        let got: Vec<&KeyValue> = page.kvs.iter().collect();
        let want: Vec<&KeyValue> = model.values().collect();
        assert_eq!(got, want, "step {step}: latest list");
    }
    // Replaying what survived compaction reproduces the recorded history exactly.
    let from = start.max(compacted);
    let mut watch = store.watch(prefix, from).await.unwrap();
    let expected: Vec<_> = history
        .into_iter()
        .filter(|(rev, _, _)| *rev >= from)
        .collect();
    for (rev, key, value) in expected {
        let event = next_event(&mut watch).await;
        assert_eq!((event.revision(), &event.kv.key), (rev, &key));
        match value {
            Some(value) => assert_eq!(event.kv.value, value),
            None => assert_eq!(event.kind, EventKind::Delete),
        }
    }
}
