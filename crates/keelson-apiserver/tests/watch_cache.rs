//! Lists and watches served from the watch cache, against an in-process server with a small
//! cache history: consistent reads right after writes, starts inside and before the cache's
//! history, 410 below the store's compaction point, periodic bookmarks, paging that
//! continues from the store on the first page's snapshot, and reads that wait for a
//! revision the server has not reached.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use keelson_apiserver::CacheConfig;
use keelson_apiserver::testing::{Client, WatchEvents};
use keelson_store::Store;
use serde_json::{Value, json};
use support::start_with;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, value: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": value}})
        .to_string()
}

fn rv(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

async fn next_event(events: &mut WatchEvents) -> Result<Value> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await??
        .context("watch ended")
}

fn small_cache() -> CacheConfig {
    CacheConfig {
        history: 2,
        bookmark_interval: Duration::from_millis(200),
        freshness_timeout: Duration::from_millis(500),
    }
}

/// Updates the config map `name` to `value`; returns its new resourceVersion.
async fn set(client: &Client, name: &str, value: &str) -> Result<i64> {
    let mut object = client.get(&format!("{CMS}/{name}")).await?.json();
    object["data"]["k"] = json!(value);
    let response = client
        .put(&format!("{CMS}/{name}"), &object.to_string())
        .await?;
    ensure!(response.code == 200, "{response:?}");
    Ok(rv(&response.json()))
}

async fn cache_reads(client: &Client, source: &str) -> Result<f64> {
    let text = client.get("/metrics").await?.body;
    let wanted = format!("keelson_apiserver_watch_cache_reads_total{{source=\"{source}\"}} ");
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_start_inside_or_before_the_cache_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with(dir.path(), small_cache()).await?;
    let client = server.client();
    let created = client.post(CMS, &cm("a", "0")).await?.json();
    let r0 = rv(&created);
    let mut revisions = vec![];
    for value in ["1", "2", "3"] {
        revisions.push(set(&client, "a", value).await?);
    }
    // The cache keeps the last two changes: a start at r0 is older than its history and is
    // served from the store's; a start at the first update is inside it. Both see every
    // later change, in order.
    for (start, expected) in [(r0, &revisions[..]), (revisions[0], &revisions[1..])] {
        let store_reads = cache_reads(&client, "store").await?;
        let mut events = client
            .watch(&format!("{CMS}?watch=true&resourceVersion={start}"), &[])
            .await?;
        for (revision, value) in expected
            .iter()
            .zip(["1", "2", "3"].iter().rev().take(expected.len()).rev())
        {
            let e = next_event(&mut events).await?;
            ensure!(
                e["type"] == "MODIFIED"
                    && rv(&e["object"]) == *revision
                    && e["object"]["data"]["k"] == *value,
                "from {start}: {e}"
            );
        }
        let from_store = cache_reads(&client, "store").await? > store_reads;
        ensure!(
            from_store == (start == r0),
            "start {start} served from the store: {from_store}"
        );
    }

    // Below the store's compaction point as well: one ERROR event, 410 Expired.
    server
        .store
        .compact(server.store.current_revision().await?)
        .await?;
    let mut events = client
        .watch(&format!("{CMS}?watch=true&resourceVersion={r0}"), &[])
        .await?;
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "ERROR" && e["object"]["code"] == 410 && e["object"]["reason"] == "Expired",
        "{e}"
    );
    ensure!(
        events.next().await?.is_none(),
        "the stream ends after the error"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_follow_writes_to_other_resources() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with(dir.path(), small_cache()).await?;
    let client = server.client();
    let created = client.post(CMS, &cm("a", "0")).await?.json();
    let mut events = client
        .watch(
            &format!(
                "{CMS}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
                rv(&created)
            ),
            &[],
        )
        .await?;
    // A write elsewhere moves the cluster's revision; the config map watch learns it from a
    // bookmark (and gets no event).
    let secret = client
        .post(
            "/api/v1/namespaces/default/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).to_string(),
        )
        .await?
        .json();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ensure!(
            Instant::now() < deadline,
            "no bookmark reached the secret's revision"
        );
        let e = next_event(&mut events).await?;
        ensure!(e["type"] == "BOOKMARK", "only bookmarks are due: {e}");
        ensure!(
            e["object"]["kind"] == "ConfigMap" && e["object"]["apiVersion"] == "v1",
            "{e}"
        );
        if rv(&e["object"]) >= rv(&secret) {
            break;
        }
    }
    // After a bookmark, a change still arrives, with a later revision.
    let changed = set(&client, "a", "1").await?;
    loop {
        let e = next_event(&mut events).await?;
        if e["type"] == "MODIFIED" {
            ensure!(rv(&e["object"]) == changed, "{e}");
            break;
        }
        ensure!(e["type"] == "BOOKMARK" && rv(&e["object"]) < changed, "{e}");
    }

    // Without allowWatchBookmarks, none are sent.
    let mut quiet = client
        .watch(&format!("{CMS}?watch=true&resourceVersion={changed}"), &[])
        .await?;
    client
        .post(
            "/api/v1/namespaces/default/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}}).to_string(),
        )
        .await?;
    ensure!(
        tokio::time::timeout(Duration::from_millis(800), quiet.next())
            .await
            .is_err(),
        "a watch without bookmarks stays quiet"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_fresh_paged_on_one_snapshot_and_wait_for_revisions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with(dir.path(), small_cache()).await?;
    let client = server.client();
    let cache_reads_before = cache_reads(&client, "cache").await?;
    // Every list right after a write sees it (a consistent read from the cache).
    for i in 0..20 {
        let created = client
            .post(CMS, &cm(&format!("c{i:02}"), "x"))
            .await?
            .json();
        let list = client.get(CMS).await?.json();
        let items = list["items"].as_array().context("items")?;
        ensure!(
            items.len() == i + 1,
            "list after create {i}: {} items",
            items.len()
        );
        ensure!(rv(&list) >= rv(&created));
    }
    ensure!(cache_reads(&client, "cache").await? >= cache_reads_before + 20.0);

    // The first page comes from the cache; the rest continue on its snapshot, so writes
    // in between do not show.
    let first = client.get(&format!("{CMS}?limit=8")).await?.json();
    let snapshot = rv(&first);
    client.post(CMS, &cm("zz-late", "x")).await?;
    client.delete(&format!("{CMS}/c05")).await?;
    let mut names: Vec<String> = vec![];
    let mut page = first;
    loop {
        ensure!(
            rv(&page) == snapshot,
            "every page is the same snapshot: {page}"
        );
        for item in page["items"].as_array().context("items")? {
            names.push(
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) if !token.is_empty() => {
                page = client
                    .get(&format!("{CMS}?limit=8&continue={token}"))
                    .await?
                    .json();
            }
            _ => break,
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    ensure!(names == expected, "{names:?}");

    // resourceVersion=N is "not older than N": far ahead, the read waits, then 504.
    let ahead = server.store.current_revision().await? + 1000;
    let started = Instant::now();
    let response = client
        .get(&format!(
            "{CMS}?resourceVersion={ahead}&resourceVersionMatch=NotOlderThan"
        ))
        .await?;
    ensure!(response.code == 504, "{response:?}");
    let status = response.json();
    ensure!(
        status["reason"] == "Timeout"
            && status["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("Too large resource version: {ahead}")),
        "{status}"
    );
    ensure!(started.elapsed() >= Duration::from_millis(400), "it waited");
    // One that is reached meanwhile is answered as soon as it is.
    let next = server.store.current_revision().await? + 1;
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.get(&format!("{CMS}?resourceVersion={next}")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.post(CMS, &cm("reached", "x")).await?;
    let list = waiting.await??.json();
    ensure!(rv(&list) >= next, "{list}");
    ensure!(
        list["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["metadata"]["name"] == "reached")),
        "the list waited for the write"
    );
    server.stop().await
}

/// Watches as informers use them (resume from the last revision seen when a stream ends)
/// while writers race: every watcher sees every write exactly once, in revision order, even
/// with a cache history so small that watchers keep falling behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_reach_every_watcher_once_in_order() -> Result<()> {
    const WRITERS: usize = 4;
    const UPDATES: usize = 25;
    let dir = tempfile::tempdir()?;
    let server = start_with(dir.path(), small_cache()).await?;
    let client = server.client();
    for w in 0..WRITERS {
        client.post(CMS, &cm(&format!("w{w}"), "0")).await?;
    }
    let start = rv(&client.get(CMS).await?.json());
    let mut watchers = vec![];
    for _ in 0..3 {
        let client = client.clone();
        watchers.push(tokio::spawn(async move {
            let mut seen: Vec<i64> = vec![];
            let mut last = start;
            while seen.len() < WRITERS * UPDATES {
                let mut events = client
                    .watch(&format!("{CMS}?watch=true&resourceVersion={last}"), &[])
                    .await?;
                while let Some(e) =
                    tokio::time::timeout(Duration::from_secs(20), events.next()).await??
                {
                    ensure!(e["type"] == "MODIFIED", "{e}");
                    let revision = rv(&e["object"]);
                    ensure!(revision > last, "{revision} after {last}");
                    seen.push(revision);
                    last = revision;
                    if seen.len() == WRITERS * UPDATES {
                        break;
                    }
                }
            }
            anyhow::Ok(seen)
        }));
    }
    let mut writers = vec![];
    for w in 0..WRITERS {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut revisions = vec![];
            for i in 1..=UPDATES {
                revisions.push(set(&client, &format!("w{w}"), &i.to_string()).await?);
            }
            anyhow::Ok(revisions)
        }));
    }
    let mut written = vec![];
    for writer in writers {
        written.extend(writer.await??);
    }
    written.sort_unstable();
    for watcher in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(60), watcher).await???;
        ensure!(seen == written, "seen {seen:?}\nwritten {written:?}");
    }
    server.stop().await
}
