//! The resource REST API against an in-process server, through HTTPS: object lifecycle,
//! errors as `Status` (and nothing stored), selectors, paging on one snapshot, watch and
//! WatchList, finalizers, namespace termination, evictions, tables.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use keelson_apiserver::testing::{Client, WatchEvents};
use keelson_store::Store;
use serde_json::{Value, json};
use support::start;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}).to_string()
}

fn rv(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

async fn names(client: &Client, path: &str) -> Result<Vec<String>> {
    let list = client.get(path).await?.json();
    Ok(list["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect())
}

async fn next_event(events: &mut WatchEvents) -> Result<Value> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await??
        .context("watch ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lifecycle() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();

    let created = client
        .post(CMS, &cm("game", json!({"app": "game"})))
        .await?;
    ensure!(created.code == 201, "{created:?}");
    let object = created.json();
    ensure!(object["metadata"]["namespace"] == "default");
    ensure!(
        object["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    ensure!(
        object["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20)
    );
    ensure!(
        object["metadata"].get("generation").is_none(),
        "no spec, no generation"
    );
    let first = rv(&object);

    let got = client.get(&format!("{CMS}/game")).await?;
    ensure!(got.code == 200 && got.json() == object, "{got:?}");

    // Optimistic concurrency: a stale resourceVersion is a Conflict, and changes nothing.
    let mut changed = object.clone();
    changed["data"]["k"] = json!("v2");
    let ok = client
        .put(&format!("{CMS}/game"), &changed.to_string())
        .await?;
    ensure!(ok.code == 200 && rv(&ok.json()) > first, "{ok:?}");
    let stale = client
        .put(&format!("{CMS}/game"), &changed.to_string())
        .await?;
    ensure!(stale.code == 409, "{stale:?}");
    ensure!(
        stale.body
            == "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Operation cannot be fulfilled on configmaps \\\"game\\\": the object has been modified; please apply your changes to the latest version and try again\",\"reason\":\"Conflict\",\"details\":{\"name\":\"game\",\"kind\":\"configmaps\"},\"code\":409}\n",
        "{}",
        stale.body
    );
    // Without a resourceVersion an update is unconditional; server fields are kept.
    let mut unconditional = changed.clone();
    unconditional["metadata"]
        .as_object_mut()
        .context("metadata")?
        .remove("resourceVersion");
    unconditional["metadata"]["uid"] = json!("forged");
    unconditional["data"]["k"] = json!("v3");
    let ok = client
        .put(&format!("{CMS}/game"), &unconditional.to_string())
        .await?
        .json();
    ensure!(
        ok["data"]["k"] == "v3" && ok["metadata"]["uid"] == object["metadata"]["uid"],
        "{ok}"
    );
    // An update that changes nothing writes nothing.
    let same = client
        .put(&format!("{CMS}/game"), &ok.to_string())
        .await?
        .json();
    ensure!(rv(&same) == rv(&ok));

    let deleted = client.delete(&format!("{CMS}/game")).await?;
    ensure!(deleted.code == 200 && deleted.json()["data"]["k"] == "v3");
    let gone = client.get(&format!("{CMS}/game")).await?;
    ensure!(gone.code == 404);
    ensure!(
        gone.body
            == "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"game\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"game\",\"kind\":\"configmaps\"},\"code\":404}\n",
        "{}",
        gone.body
    );
    ensure!(client.delete(&format!("{CMS}/game")).await?.code == 404);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_status_and_stores_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    ensure!(client.post(CMS, &cm("taken", json!({}))).await?.code == 201);
    let before = server.store.current_revision().await?;

    let dup = client.post(CMS, &cm("taken", json!({}))).await?;
    ensure!(
        dup.code == 409 && dup.json()["reason"] == "AlreadyExists",
        "{dup:?}"
    );
    ensure!(dup.json()["message"] == "configmaps \"taken\" already exists");

    let bad_name = client.post(CMS, &cm("Bad_Name", json!({}))).await?;
    let status = bad_name.json();
    ensure!(
        bad_name.code == 422 && status["reason"] == "Invalid",
        "{bad_name:?}"
    );
    ensure!(
        status["details"]["causes"][0]["field"] == "metadata.name",
        "{status}"
    );
    ensure!(status["message"].as_str().is_some_and(|m| m.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")), "{status}");

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (CMS, "{not json".into(), 400, "BadRequest"),
        (CMS, "[1,2]".into(), 400, "BadRequest"),
        (
            CMS,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}).to_string(),
            400,
            "BadRequest",
        ),
        (
            CMS,
            json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
                .to_string(),
            400,
            "BadRequest",
        ),
        (
            CMS,
            json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}})
                .to_string(),
            400,
            "BadRequest",
        ),
        (
            CMS,
            json!({"kind": "ConfigMap", "metadata": {}}).to_string(),
            422,
            "Invalid",
        ),
        (
            "/api/v1/namespaces/nope/configmaps",
            cm("x", json!({})),
            404,
            "NotFound",
        ),
        ("/api/v1/widgets", cm("x", json!({})), 404, "NotFound"),
        (
            "/api/v1/configmaps",
            cm("x", json!({})),
            405,
            "MethodNotAllowed",
        ),
        (
            CMS,
            format!(
                "{{\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}",
                "a".repeat(4 * 1024 * 1024)
            ),
            413,
            "RequestEntityTooLarge",
        ),
    ];
    for (path, body, code, reason) in cases {
        let response = client.post(path, &body).await?;
        let status = response.json();
        ensure!(
            response.code == code && status["reason"] == reason,
            "{path} {}: {} {}",
            &body[..body.len().min(80)],
            response.code,
            response.body
        );
        ensure!(status["kind"] == "Status" && response.content_type == "application/json");
    }
    let missing_ns = client
        .post("/api/v1/namespaces/nope/configmaps", &cm("x", json!({})))
        .await?
        .json();
    ensure!(
        missing_ns["message"] == "namespaces \"nope\" not found",
        "{missing_ns}"
    );
    let wrong_type = client
        .request(
            "POST",
            CMS,
            &[("Content-Type", "application/xml")],
            Some("<x/>"),
        )
        .await?;
    ensure!(wrong_type.code == 415 && wrong_type.json()["reason"] == "UnsupportedMediaType");
    let mismatch = client
        .put(&format!("{CMS}/taken"), &cm("other", json!({})))
        .await?;
    ensure!(
        mismatch.code == 400
            && mismatch.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not match the name on the URL"))
    );
    ensure!(
        server.store.current_revision().await? == before,
        "a refused request stored something"
    );
    // The Python client sends bodies without a Content-Type.
    let untyped = client
        .request("POST", CMS, &[], Some(&cm("untyped", json!({}))))
        .await?;
    ensure!(untyped.code == 201, "{untyped:?}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_names_generation_and_dry_run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let body = json!({"kind": "ConfigMap", "metadata": {"generateName": "web-"}}).to_string();
    let a = client.post(CMS, &body).await?.json();
    let b = client.post(CMS, &body).await?.json();
    let (a, b) = (
        a["metadata"]["name"].as_str().context("a")?.to_owned(),
        b["metadata"]["name"].as_str().context("b")?.to_owned(),
    );
    ensure!(a.starts_with("web-") && a.len() == 9 && a != b, "{a} {b}");

    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}});
    let created = client.post(deploys, &deploy.to_string()).await?.json();
    ensure!(created["metadata"]["generation"] == 1, "{created}");
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"x": "y"});
    let labelled = client
        .put(&format!("{deploys}/web"), &labelled.to_string())
        .await?
        .json();
    ensure!(
        labelled["metadata"]["generation"] == 1,
        "metadata changes keep the generation"
    );
    let mut scaled = labelled.clone();
    scaled["spec"]["replicas"] = json!(3);
    let scaled = client
        .put(&format!("{deploys}/web"), &scaled.to_string())
        .await?
        .json();
    ensure!(
        scaled["metadata"]["generation"] == 2,
        "spec changes bump it: {scaled}"
    );
    let missing = client
        .get("/apis/apps/v1/namespaces/default/deployments/none")
        .await?
        .json();
    ensure!(
        missing["message"] == "deployments.apps \"none\" not found"
            && missing["details"]["group"] == "apps",
        "{missing}"
    );

    let dry = client
        .post(&format!("{CMS}?dryRun=All"), &cm("dry", json!({})))
        .await?;
    ensure!(dry.code == 201 && dry.json()["metadata"]["name"] == "dry");
    ensure!(
        client.get(&format!("{CMS}/dry")).await?.code == 404,
        "dryRun stores nothing"
    );
    ensure!(
        client
            .request("DELETE", &format!("{CMS}/{a}?dryRun=All"), &[], None)
            .await?
            .code
            == 200
    );
    ensure!(
        client.get(&format!("{CMS}/{a}")).await?.code == 200,
        "dryRun deletes nothing"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_select_and_page_over_one_snapshot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    for i in 0..6 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        ensure!(
            client
                .post(
                    CMS,
                    &cm(
                        &format!("cm-{i}"),
                        json!({"tier": tier, "n": i.to_string()})
                    )
                )
                .await?
                .code
                == 201
        );
    }
    ensure!(
        names(&client, &format!("{CMS}?labelSelector=tier%3Dfront")).await?
            == ["cm-0", "cm-2", "cm-4"]
    );
    ensure!(
        names(
            &client,
            &format!("{CMS}?labelSelector=tier%20in%20(back),n!%3D3")
        )
        .await?
            == ["cm-1", "cm-5"]
    );
    ensure!(
        names(
            &client,
            &format!("{CMS}?fieldSelector=metadata.name%3Dcm-3")
        )
        .await?
            == ["cm-3"]
    );
    ensure!(
        names(
            &client,
            "/api/v1/configmaps?fieldSelector=metadata.name%3Dcm-3"
        )
        .await?
            == ["cm-3"],
        "across namespaces"
    );
    ensure!(
        names(
            &client,
            "/api/v1/namespaces?fieldSelector=metadata.name%3Ddefault"
        )
        .await?
            == ["default"]
    );
    let unsupported = client
        .get(&format!("{CMS}?fieldSelector=spec.foo%3D1"))
        .await?;
    ensure!(
        unsupported.code == 400
            && unsupported.json()["message"] == "field label not supported: spec.foo"
    );
    let bad_selector = client.get(&format!("{CMS}?labelSelector=in%20(")).await?;
    ensure!(bad_selector.code == 400, "{bad_selector:?}");
    let all = names(&client, "/api/v1/configmaps").await?;
    ensure!(all.len() == 6, "all namespaces: {all:?}");

    // Pages of two, with changes in between: every page shows the first page's snapshot.
    let first = client.get(&format!("{CMS}?limit=2")).await?.json();
    let snapshot = first["metadata"]["resourceVersion"].clone();
    let mut token = first["metadata"]["continue"]
        .as_str()
        .context("continue")?
        .to_owned();
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(client.delete(&format!("{CMS}/cm-4")).await?.code == 200);
    ensure!(client.post(CMS, &cm("cm-3a", json!({}))).await?.code == 201);
    loop {
        let page = client
            .get(&format!("{CMS}?limit=2&continue={token}"))
            .await?
            .json();
        ensure!(page["metadata"]["resourceVersion"] == snapshot, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .context("items")?
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned)),
        );
        match page["metadata"]["continue"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    ensure!(
        seen == ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4", "cm-5"],
        "{seen:?}"
    );
    // A continue token from before compaction has expired.
    let current = server.store.current_revision().await?;
    server.store.compact(current).await?;
    let expired = client
        .get(&format!("{CMS}?limit=2&continue={token}"))
        .await?;
    let first = client.get(&format!("{CMS}?limit=2")).await?.json();
    let old_token = first["metadata"]["continue"]
        .as_str()
        .context("continue")?
        .to_owned();
    ensure!(client.post(CMS, &cm("later", json!({}))).await?.code == 201);
    server
        .store
        .compact(server.store.current_revision().await?)
        .await?;
    let gone = client
        .get(&format!("{CMS}?limit=2&continue={old_token}"))
        .await?;
    ensure!(
        gone.code == 410 && gone.json()["reason"] == "Expired",
        "{gone:?} (earlier: {})",
        expired.code
    );
    let forged = client
        .get(&format!("{CMS}?continue=bm90LWEtdG9rZW4"))
        .await?;
    ensure!(forged.code == 400, "{forged:?}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_replay_select_and_bookmark() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let created = client
        .post(CMS, &cm("w", json!({"app": "a"})))
        .await?
        .json();
    let start_rv = rv(&created);

    // From a resourceVersion: every later change, in order.
    let mut events = client
        .watch(&format!("{CMS}?watch=true&resourceVersion={start_rv}"), &[])
        .await?;
    let mut changed = created.clone();
    changed["data"]["k"] = json!("2");
    let modified = client
        .put(&format!("{CMS}/w"), &changed.to_string())
        .await?
        .json();
    ensure!(client.delete(&format!("{CMS}/w")).await?.code == 200);
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "MODIFIED" && rv(&e["object"]) == rv(&modified),
        "{e}"
    );
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "DELETED"
            && e["object"]["data"]["k"] == "2"
            && rv(&e["object"]) > rv(&modified),
        "{e}"
    );

    // Without a resourceVersion: current objects first, as ADDED.
    client.post(CMS, &cm("x", json!({"app": "a"}))).await?;
    client.post(CMS, &cm("y", json!({"app": "b"}))).await?;
    let mut events = client
        .watch(&format!("{CMS}?watch=1&labelSelector=app%3Da"), &[])
        .await?;
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "x",
        "{e}"
    );
    // Selectors see both sides of a change.
    let mut y = client.get(&format!("{CMS}/y")).await?.json();
    y["metadata"]["labels"]["app"] = json!("a");
    let y = client
        .put(&format!("{CMS}/y"), &y.to_string())
        .await?
        .json();
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "y",
        "moved into the selection: {e}"
    );
    let mut y2 = y.clone();
    y2["metadata"]["labels"]["app"] = json!("c");
    client.put(&format!("{CMS}/y"), &y2.to_string()).await?;
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "DELETED" && e["object"]["metadata"]["name"] == "y",
        "moved out of the selection: {e}"
    );

    // WatchList: initial events, then a bookmark that says they are done.
    let mut events = client
        .watch(&format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dx"), &[])
        .await?;
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "x",
        "{e}"
    );
    let e = next_event(&mut events).await?;
    ensure!(
        e["type"] == "BOOKMARK"
            && e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true",
        "{e}"
    );
    let refused = client
        .get(&format!("{CMS}?watch=true&sendInitialEvents=true"))
        .await?;
    ensure!(
        refused.code == 422,
        "sendInitialEvents without NotOlderThan: {refused:?}"
    );

    // timeoutSeconds ends a watch.
    let mut events = client
        .watch(
            &format!(
                "{CMS}?watch=true&resourceVersion={}&timeoutSeconds=1",
                server.store.current_revision().await?
            ),
            &[],
        )
        .await?;
    ensure!(
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await??
            .is_none()
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_and_namespaces_terminate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let held = json!({"kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/keep"]}});
    ensure!(client.post(CMS, &held.to_string()).await?.code == 201);
    let deleting = client.delete(&format!("{CMS}/held")).await?.json();
    ensure!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "{deleting}"
    );
    ensure!(
        client.get(&format!("{CMS}/held")).await?.code == 200,
        "a finalizer keeps the object"
    );
    let mut released = client.get(&format!("{CMS}/held")).await?.json();
    released["metadata"]["finalizers"] = json!([]);
    ensure!(
        client
            .put(&format!("{CMS}/held"), &released.to_string())
            .await?
            .code
            == 200
    );
    ensure!(
        client.get(&format!("{CMS}/held")).await?.code == 404,
        "removing the last finalizer completes the delete"
    );

    // The cluster starts with its namespaces.
    let namespaces = names(&client, "/api/v1/namespaces").await?;
    ensure!(
        namespaces == ["default", "kube-node-lease", "kube-public", "kube-system"],
        "{namespaces:?}"
    );
    let ns = client
        .post(
            "/api/v1/namespaces",
            &json!({"kind": "Namespace", "metadata": {"name": "team"}}).to_string(),
        )
        .await?
        .json();
    ensure!(
        ns["status"]["phase"] == "Active"
            && ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team",
        "{ns}"
    );
    ensure!(
        client
            .post(
                "/api/v1/namespaces",
                &json!({"kind": "Namespace", "metadata": {"name": "a.b"}}).to_string()
            )
            .await?
            .code
            == 422,
        "namespace names are DNS labels"
    );
    client
        .post(
            "/api/v1/namespaces/team/configmaps",
            &cm("inside", json!({})),
        )
        .await?;
    let selected = client
        .request(
            "DELETE",
            &format!("{CMS}?labelSelector=none%3Dmatch"),
            &[],
            None,
        )
        .await?;
    ensure!(
        selected.code == 200
            && selected.json()["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
    );
    // Deleting a namespace starts its termination; without a namespace controller (this
    // server runs none) it stays Terminating with its contents, as kube-apiserver does.
    let terminating = client.delete("/api/v1/namespaces/team").await?;
    ensure!(terminating.code == 200, "{terminating:?}");
    let terminating = terminating.json();
    ensure!(
        terminating["status"]["phase"] == "Terminating"
            && terminating["metadata"]["deletionTimestamp"].is_string()
            && terminating["spec"]["finalizers"] == json!(["kubernetes"]),
        "{terminating}"
    );
    let again = client.delete("/api/v1/namespaces/team").await?;
    ensure!(
        again.code == 200 && client.get("/api/v1/namespaces/team").await?.code == 200,
        "the kubernetes finalizer holds it: {again:?}"
    );
    ensure!(
        names(&client, "/api/v1/namespaces/team/configmaps").await? == ["inside"],
        "the namespace controller, not the API server, removes contents"
    );
    let refused = client
        .post("/api/v1/namespaces/team/configmaps", &cm("late", json!({})))
        .await?;
    ensure!(
        refused.code == 403
            && refused.json()
                == json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated",
                    "reason": "Forbidden",
                    "details": {"name": "late", "kind": "configmaps", "causes": [{"reason": "NamespaceTerminating",
                        "message": "namespace team is being terminated", "field": "metadata.namespace"}]},
                    "code": 403}),
        "{refused:?}"
    );
    // Updates of a terminating namespace that leave its finalizer keep it.
    let mut labelled = client.get("/api/v1/namespaces/team").await?.json();
    labelled["metadata"]["labels"]["x"] = json!("y");
    ensure!(
        client
            .put("/api/v1/namespaces/team", &labelled.to_string())
            .await?
            .code
            == 200
            && client.get("/api/v1/namespaces/team").await?.code == 200
    );
    // Only PUT writes `finalize`; emptying the finalizers there removes the namespace.
    ensure!(client.get("/api/v1/namespaces/team/finalize").await?.code == 405);
    let mut finalized = client.get("/api/v1/namespaces/team").await?.json();
    finalized["spec"]["finalizers"] = json!([]);
    finalized["metadata"]["labels"]["ignored"] = json!("yes");
    let done = client
        .put("/api/v1/namespaces/team/finalize", &finalized.to_string())
        .await?;
    ensure!(done.code == 200, "{done:?}");
    ensure!(
        client.get("/api/v1/namespaces/team").await?.code == 404,
        "finalized: gone"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_for_kubectl_get() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let table = client
        .request("GET", "/api/v1/namespaces", &[("Accept", accept)], None)
        .await?;
    ensure!(
        table.content_type == "application/json;as=Table;v=v1;g=meta.k8s.io",
        "{}",
        table.content_type
    );
    let table = table.json();
    ensure!(table["kind"] == "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .context("columns")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(columns == ["Name", "Status", "Age"], "{columns:?}");
    ensure!(table["rows"][0]["cells"][0] == "default" && table["rows"][0]["cells"][1] == "Active");
    ensure!(table["rows"][0]["object"]["kind"] == "PartialObjectMetadata");
    // `kubectl get namespace default`: one object, one row.
    let one = client
        .request(
            "GET",
            "/api/v1/namespaces/kube-system",
            &[("Accept", accept)],
            None,
        )
        .await?
        .json();
    ensure!(
        one["kind"] == "Table"
            && one["rows"].as_array().map(Vec::len) == Some(1)
            && one["rows"][0]["cells"][0] == "kube-system"
            && one["columnDefinitions"].as_array().map(Vec::len) == Some(3),
        "{one}"
    );

    // `kubectl get -w`: Table events, the columns only in the first.
    let mut events = client
        .watch(&format!("{CMS}?watch=true"), &[("Accept", accept)])
        .await?;
    client.post(CMS, &cm("one", json!({}))).await?;
    client.post(CMS, &cm("two", json!({}))).await?;
    let first = next_event(&mut events).await?;
    ensure!(
        first["type"] == "ADDED" && first["object"]["kind"] == "Table",
        "{first}"
    );
    ensure!(
        first["object"]["columnDefinitions"].is_array()
            && first["object"]["rows"][0]["cells"][0] == "one",
        "{first}"
    );
    let second = next_event(&mut events).await?;
    ensure!(
        second["object"].get("columnDefinitions").is_none()
            && second["object"]["rows"][0]["cells"][0] == "two",
        "{second}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_of_every_kind() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "busybox"}]}}}});
    let created = client.post(deploys, &deploy.to_string()).await?.json();
    let patch = |kind: &'static str, body: Value| {
        let client = client.clone();
        async move {
            client
                .request(
                    "PATCH",
                    &format!("{deploys}/web"),
                    &[("Content-Type", kind)],
                    Some(&body.to_string()),
                )
                .await
        }
    };

    let merged = patch(
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"team": "blue", "app": null}}}),
    )
    .await?;
    ensure!(
        merged.code == 200 && merged.json()["metadata"]["labels"] == json!({"team": "blue"}),
        "{merged:?}"
    );
    ensure!(rv(&merged.json()) > rv(&created) && merged.json()["metadata"]["generation"] == 1);

    let strategic = patch("application/strategic-merge-patch+json", json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}, {"name": "log"}], "containers": [{"name": "app", "image": "nginx:2"}]}}}})).await?;
    let containers = strategic.json()["spec"]["template"]["spec"]["containers"].clone();
    let images: Vec<(&str, &str)> = containers
        .as_array()
        .context("containers")?
        .iter()
        .filter_map(|c| Some((c["name"].as_str()?, c["image"].as_str()?)))
        .collect();
    ensure!(
        images == [("app", "nginx:2"), ("log", "busybox")],
        "{containers}"
    );
    ensure!(
        strategic.json()["metadata"]["generation"] == 2,
        "a spec patch bumps the generation"
    );

    let json_patch = patch(
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
    )
    .await?;
    ensure!(json_patch.code == 200 && json_patch.json()["spec"]["replicas"] == 3);
    let failed_test = patch("application/json-patch+json", json!([{"op": "test", "path": "/spec/replicas", "value": 9}, {"op": "replace", "path": "/spec/replicas", "value": 1}])).await?;
    ensure!(
        failed_test.code == 409 && failed_test.json()["reason"] == "Conflict",
        "{failed_test:?}"
    );
    let bad_path = patch(
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/spec/nothing"}]),
    )
    .await?;
    ensure!(bad_path.code == 422, "{bad_path:?}");

    // A patch naming an old resourceVersion is a conflict; patches cannot rename.
    let stale = patch("application/merge-patch+json", json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"replicas": 7}})).await?;
    ensure!(stale.code == 409, "{stale:?}");
    let rename = patch(
        "application/merge-patch+json",
        json!({"metadata": {"name": "other"}}),
    )
    .await?;
    ensure!(rename.code == 400, "{rename:?}");
    let unknown = patch("application/apply-patch+cbor", json!({})).await?;
    ensure!(unknown.code == 415, "{unknown:?}");
    let missing = client
        .request(
            "PATCH",
            &format!("{deploys}/none"),
            &[("Content-Type", "application/merge-patch+json")],
            Some("{}"),
        )
        .await?;
    ensure!(missing.code == 404);
    let after = client.get(&format!("{deploys}/web")).await?.json();
    ensure!(
        after["spec"]["replicas"] == 3 && after["metadata"]["name"] == "web",
        "refused patches change nothing: {after}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_field_validation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let index = client.get("/openapi/v3").await?.json();
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .context("apps/v1 in the index")?
        .to_owned();
    let doc = client.get(&url).await?;
    ensure!(doc.code == 200 && doc.content_type == "application/json");
    let doc = doc.json();
    ensure!(
        doc["openapi"] == "3.0.0"
            && doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object()
    );
    ensure!(client.get("/openapi/v3/apis/nope/v1").await?.code == 404);
    ensure!(
        client.get("/openapi/v2").await?.code == 404,
        "kubectl only accepts v2 as protobuf"
    );

    let typo = json!({"kind": "ConfigMap", "metadata": {"name": "t"}, "data": {"a": "b"}, "dta": {"x": "y"}}).to_string();
    let strict = client
        .post(&format!("{CMS}?fieldValidation=Strict"), &typo)
        .await?;
    ensure!(
        strict.code == 400
            && strict.json()["message"] == "strict decoding error: unknown field \"dta\"",
        "{strict:?}"
    );
    ensure!(
        client.get(&format!("{CMS}/t")).await?.code == 404,
        "nothing stored"
    );
    let bad_mode = client
        .post(&format!("{CMS}?fieldValidation=Loose"), &typo)
        .await?;
    ensure!(bad_mode.code == 400, "{bad_mode:?}");
    // Warn (the default) and Ignore accept the object.
    let warned = client
        .post(&format!("{CMS}?fieldValidation=Warn"), &typo)
        .await?;
    ensure!(warned.code == 201, "{warned:?}");
    let patched = client
        .request(
            "PATCH",
            &format!("{CMS}/t?fieldValidation=Strict"),
            &[("Content-Type", "application/merge-patch+json")],
            Some(r#"{"metadata":{"labelz":{"a":"b"}}}"#),
        )
        .await?;
    ensure!(
        patched.code == 400
            && patched.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains("metadata.labelz")),
        "{patched:?}"
    );

    // Fields given twice: named by path, refused when Strict, the last kept otherwise.
    let twice = r#"{"kind": "ConfigMap", "metadata": {"name": "d", "name": "d"}, "data": {"a": "1", "a": "2"}}"#;
    let strict = client
        .post(&format!("{CMS}?fieldValidation=Strict"), twice)
        .await?;
    ensure!(
        strict.code == 400
            && strict.json()["message"]
                == "strict decoding error: duplicate field \"metadata.name\", duplicate field \"data.a\"",
        "{strict:?}"
    );
    ensure!(client.get(&format!("{CMS}/d")).await?.code == 404);
    let kept = client.post(CMS, twice).await?;
    ensure!(
        kept.code == 201 && kept.json()["data"]["a"] == "2",
        "{kept:?}"
    );

    // YAML bodies are read like JSON ones; bad YAML is a 400.
    let yaml = [("Content-Type", "application/yaml")];
    let created = client
        .request(
            "POST",
            CMS,
            &yaml,
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  n: \"1\"\n"),
        )
        .await?;
    ensure!(
        created.code == 201 && created.json()["data"]["n"] == "1",
        "{created:?}"
    );
    let broken = client
        .request("POST", CMS, &yaml, Some("metadata: [unclosed\n"))
        .await?;
    ensure!(
        broken.code == 400 && broken.json()["kind"] == "Status",
        "{broken:?}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_scale_write_only_their_part() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
        "status": {"replicas": 99}});
    let created = client.post(deploys, &deploy.to_string()).await?.json();
    ensure!(
        created["status"] == json!({}),
        "clients do not set status on create: {created}"
    );

    // The controller's view: /status changes status, nothing else.
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 2, "readyReplicas": 1});
    with_status["spec"]["replicas"] = json!(50);
    let status = client
        .put(&format!("{deploys}/web/status"), &with_status.to_string())
        .await?;
    ensure!(status.code == 200, "{status:?}");
    let after = status.json();
    ensure!(
        after["status"]["readyReplicas"] == 1
            && after["spec"]["replicas"] == 2
            && after["metadata"]["generation"] == 1,
        "{after}"
    );

    // The user's view: the main resource never changes status.
    let mut main = after.clone();
    main["status"] = json!({"replicas": 0});
    main["metadata"]["labels"] = json!({"edited": "yes"});
    let main = client
        .put(&format!("{deploys}/web"), &main.to_string())
        .await?
        .json();
    ensure!(
        main["status"]["readyReplicas"] == 1 && main["metadata"]["labels"]["edited"] == "yes",
        "{main}"
    );

    // Scale: an autoscaling/v1 Scale, writing only spec.replicas.
    let scale = client.get(&format!("{deploys}/web/scale")).await?.json();
    ensure!(
        scale["kind"] == "Scale" && scale["apiVersion"] == "autoscaling/v1",
        "{scale}"
    );
    ensure!(
        scale["spec"]["replicas"] == 2
            && scale["status"] == json!({"replicas": 2, "selector": "app=web"}),
        "{scale}"
    );
    let scaled = client
        .request(
            "PATCH",
            &format!("{deploys}/web/scale"),
            &[("Content-Type", "application/merge-patch+json")],
            Some(r#"{"spec":{"replicas":5},"status":{"replicas":0}}"#),
        )
        .await?;
    ensure!(
        scaled.code == 200
            && scaled.json()["kind"] == "Scale"
            && scaled.json()["spec"]["replicas"] == 5,
        "{scaled:?}"
    );
    let now = client.get(&format!("{deploys}/web")).await?.json();
    ensure!(
        now["spec"]["replicas"] == 5
            && now["status"]["replicas"] == 2
            && now["metadata"]["generation"] == 2,
        "{now}"
    );
    let mut stale = scale.clone();
    stale["spec"]["replicas"] = json!(1);
    let stale = client
        .put(&format!("{deploys}/web/scale"), &stale.to_string())
        .await?;
    ensure!(
        stale.code == 409,
        "a Scale with an old resourceVersion conflicts: {stale:?}"
    );
    let negative = client
        .put(
            &format!("{deploys}/web/scale"),
            &json!({"kind": "Scale", "spec": {"replicas": -1}}).to_string(),
        )
        .await?;
    ensure!(negative.code == 400, "{negative:?}");

    ensure!(
        client.get(&format!("{CMS}/x/status")).await?.code == 404,
        "configmaps have no status subresource"
    );
    ensure!(client.get(&format!("{CMS}/x/scale")).await?.code == 404);
    ensure!(client.delete(&format!("{deploys}/web/status")).await?.code == 405);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion_and_propagation_are_recorded() -> Result<()> {
    const PODS: &str = "/api/v1/namespaces/default/pods";
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let json_body = [("content-type", "application/json")];
    let delete_with = |path: String, body: Value| {
        let client = client.clone();
        async move {
            client
                .request("DELETE", &path, &json_body, Some(&body.to_string()))
                .await
        }
    };
    let pod = |name: &str, node: Option<&str>| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}], "terminationGracePeriodSeconds": 20});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
            .to_string()
    };

    // A pod on no node has nothing to stop: it goes at once.
    ensure!(client.post(PODS, &pod("loose", None)).await?.code == 201);
    ensure!(client.delete(&format!("{PODS}/loose")).await?.code == 200);
    ensure!(client.get(&format!("{PODS}/loose")).await?.code == 404);

    // A pod on a node is marked with its grace period; its node removes it.
    ensure!(client.post(PODS, &pod("bound", Some("n1"))).await?.code == 201);
    let marked = delete_with(
        format!("{PODS}/bound"),
        json!({"propagationPolicy": "Background"}),
    )
    .await?;
    ensure!(marked.code == 200, "{marked:?}");
    let marked = marked.json();
    ensure!(
        marked["metadata"]["deletionGracePeriodSeconds"] == 20,
        "{marked}"
    );
    let when = keelson_api::meta::parse_timestamp(
        marked["metadata"]["deletionTimestamp"]
            .as_str()
            .unwrap_or_default(),
    )
    .context("deletionTimestamp")?;
    let now = keelson_api::meta::parse_timestamp(
        marked["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default(),
    )
    .context("creationTimestamp")?;
    ensure!((18..=22).contains(&(when - now)), "20 s from now: {marked}");
    ensure!(client.get(&format!("{PODS}/bound")).await?.code == 200);
    // A second delete may shorten the period, never lengthen it.
    let shorter = delete_with(format!("{PODS}/bound"), json!({"gracePeriodSeconds": 5}))
        .await?
        .json();
    ensure!(
        shorter["metadata"]["deletionGracePeriodSeconds"] == 5,
        "{shorter}"
    );
    let longer = client
        .delete(&format!("{PODS}/bound?gracePeriodSeconds=10"))
        .await?
        .json();
    ensure!(
        longer["metadata"]["deletionGracePeriodSeconds"] == 5 && rv(&longer) == rv(&shorter),
        "unchanged: {longer}"
    );
    // Grace period 0 (what `--force` and the node send) removes it.
    let forced = delete_with(format!("{PODS}/bound"), json!({"gracePeriodSeconds": 0})).await?;
    ensure!(forced.code == 200, "{forced:?}");
    ensure!(client.get(&format!("{PODS}/bound")).await?.code == 404);

    // Orphan and Foreground are recorded as finalizers for the garbage collector.
    for (name, policy, finalizer) in [
        ("o", "Orphan", "orphan"),
        ("f", "Foreground", "foregroundDeletion"),
    ] {
        client.post(CMS, &cm(name, json!({}))).await?;
        let held = client
            .delete(&format!("{CMS}/{name}?propagationPolicy={policy}"))
            .await?
            .json();
        ensure!(
            held["metadata"]["finalizers"] == json!([finalizer])
                && held["metadata"]["deletionTimestamp"].is_string(),
            "{held}"
        );
        // Removing the finalizer completes the deletion.
        let patched = client
            .request(
                "PATCH",
                &format!("{CMS}/{name}"),
                &[("content-type", "application/merge-patch+json")],
                Some(r#"{"metadata":{"finalizers":null}}"#),
            )
            .await?;
        ensure!(patched.code == 200, "{patched:?}");
        ensure!(client.get(&format!("{CMS}/{name}")).await?.code == 404);
    }
    // orphanDependents (deprecated) means the same as Orphan.
    client.post(CMS, &cm("legacy", json!({}))).await?;
    let held = delete_with(format!("{CMS}/legacy"), json!({"orphanDependents": true}))
        .await?
        .json();
    ensure!(
        held["metadata"]["finalizers"] == json!(["orphan"]),
        "{held}"
    );

    // Bad options: 422, and the object is untouched.
    client.post(CMS, &cm("kept", json!({}))).await?;
    for (body, field, message) in [
        (
            json!({"propagationPolicy": "Sideways"}),
            "propagationPolicy",
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Sideways\": supported values: \"Foreground\", \"Background\", \"Orphan\"",
        ),
        (
            json!({"propagationPolicy": "Orphan", "orphanDependents": false}),
            "orphanDependents",
            "DeleteOptions.meta.k8s.io \"\" is invalid: orphanDependents: Invalid value: false: orphanDependents and deletionPropagation cannot be both set",
        ),
    ] {
        let refused = delete_with(format!("{CMS}/kept"), body).await?;
        ensure!(refused.code == 422, "{refused:?}");
        let status = refused.json();
        ensure!(
            status["message"] == message && status["details"]["causes"][0]["field"] == field,
            "{status}"
        );
    }
    let kept = client.get(&format!("{CMS}/kept")).await?.json();
    ensure!(
        kept["metadata"].get("deletionTimestamp").is_none(),
        "{kept}"
    );
    // Background (kubectl's default) deletes at once.
    let gone = delete_with(
        format!("{CMS}/kept"),
        json!({"propagationPolicy": "Background"}),
    )
    .await?;
    ensure!(gone.code == 200 && client.get(&format!("{CMS}/kept")).await?.code == 404);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_422_with_a_cause_per_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let mut deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app"}]}}}});
    let refused = client.post(deploys, &deploy.to_string()).await?;
    ensure!(refused.code == 422, "{refused:?}");
    let status = refused.json();
    ensure!(
        status["reason"] == "Invalid"
            && status["message"]
                == "Deployment.apps \"web\" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.spec.containers[0].image: Required value]",
        "{status}"
    );
    ensure!(
        status["details"]["causes"]
            == json!([
                {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0", "field": "spec.replicas"},
                {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.template.spec.containers[0].image"},
            ]),
        "{status}"
    );
    ensure!(
        client.get(&format!("{deploys}/web")).await?.code == 404,
        "nothing stored"
    );
    // A value of the wrong type cannot be decoded: 400, whatever fieldValidation says.
    let mut typed = deploy.clone();
    typed["spec"]["replicas"] = json!("three");
    let refused = client
        .post(
            &format!("{deploys}?fieldValidation=Ignore"),
            &typed.to_string(),
        )
        .await?;
    ensure!(
        refused.code == 400
            && refused.json()["message"]
                == "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field Deployment.spec.replicas of type int32",
        "{refused:?}"
    );

    // Fixed, it is created; an update that breaks it is refused and changes nothing.
    deploy["spec"]["replicas"] = json!(1);
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx");
    let created = client.post(deploys, &deploy.to_string()).await?;
    ensure!(created.code == 201, "{created:?}");
    let broken = client
        .request(
            "PATCH",
            &format!("{deploys}/web"),
            &[("Content-Type", "application/merge-patch+json")],
            Some(r#"{"spec":{"template":{"metadata":{"labels":{"app":"other"}}}}}"#),
        )
        .await?;
    ensure!(broken.code == 422, "{broken:?}");
    ensure!(
        broken.json()["details"]["causes"][0]["field"] == "spec.template.metadata.labels",
        "{broken:?}"
    );
    let stored = client.get(&format!("{deploys}/web")).await?.json();
    ensure!(
        stored["spec"]["template"]["metadata"]["labels"]["app"] == "web",
        "{stored}"
    );
    ensure!(rv(&stored) == rv(&created.json()));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_merges_and_tracks_owners() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let apply = |name: &str, manager: &str, force: bool, body: String| {
        let client = client.clone();
        let path = format!("{CMS}/{name}?fieldManager={manager}&force={force}");
        async move {
            client
                .request(
                    "PATCH",
                    &path,
                    &[("Content-Type", "application/apply-patch+yaml")],
                    Some(&body),
                )
                .await
        }
    };
    // Missing: created (YAML body), owned by the applier.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels:\n    team: a\ndata:\n  mode: fast\n  level: \"3\"\n";
    let created = apply("app", "alice", false, yaml.into()).await?;
    ensure!(created.code == 201, "{created:?}");
    let created = created.json();
    ensure!(
        created["metadata"]["managedFields"][0]["manager"] == "alice"
            && created["metadata"]["managedFields"][0]["operation"] == "Apply"
            && created["metadata"]["managedFields"][0]["fieldsV1"]["f:data"]
                == json!({"f:mode": {}, "f:level": {}}),
        "{created}"
    );
    // Applied again without `level`: alice's field goes; an unrelated edit stays.
    let edited = client
        .request(
            "PATCH",
            &format!("{CMS}/app"),
            &[("Content-Type", "application/merge-patch+json")],
            Some(r#"{"data":{"extra":"kept"}}"#),
        )
        .await?;
    ensure!(edited.code == 200, "{edited:?}");
    let json_body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "labels": {"team": "a"}}, "data": {"mode": "slow"}});
    let again = apply("app", "alice", false, json_body.to_string()).await?;
    ensure!(again.code == 200, "{again:?}");
    ensure!(
        again.json()["data"] == json!({"mode": "slow", "extra": "kept"}),
        "{again:?}"
    );
    // Another applier changing alice's field: 409 naming it, unless forced.
    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"mode": "turbo"}});
    let refused = apply("app", "bob", false, bob.to_string()).await?;
    ensure!(refused.code == 409, "{refused:?}");
    let status = refused.json();
    ensure!(
        status["message"]
            == "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.mode"
            && status["details"]["causes"][0]["reason"] == "FieldManagerConflict"
            && status["details"]["causes"][0]["field"] == ".data.mode",
        "{status}"
    );
    let forced = apply("app", "bob", true, bob.to_string()).await?;
    ensure!(
        forced.code == 200 && forced.json()["data"]["mode"] == "turbo",
        "{forced:?}"
    );
    // Without a field manager: refused.
    let anonymous = client
        .request(
            "PATCH",
            &format!("{CMS}/app"),
            &[("Content-Type", "application/apply-patch+yaml")],
            Some("data: {a: b}"),
        )
        .await?;
    ensure!(anonymous.code == 400, "{anonymous:?}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_sharing_storage_convert() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let v1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
    let v2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
    let mut watch_v1 = client.watch(&format!("{v1}?watch=true"), &[]).await?;
    let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}});
    let created = client.post(v1, &hpa.to_string()).await?;
    ensure!(created.code == 201, "{created:?}");
    ensure!(
        created.json()["spec"]["targetCPUUtilizationPercentage"] == 80,
        "{created:?}"
    );
    let as_v2 = client.get(&format!("{v2}/web")).await?.json();
    ensure!(
        as_v2["apiVersion"] == "autoscaling/v2"
            && as_v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80,
        "{as_v2}"
    );
    let listed = client.get(v1).await?.json();
    ensure!(
        listed["items"][0]["apiVersion"] == "autoscaling/v1"
            && listed["items"][0]["spec"]["targetCPUUtilizationPercentage"] == 80,
        "{listed}"
    );
    let e = next_event(&mut watch_v1).await?;
    ensure!(
        e["object"]["spec"]["targetCPUUtilizationPercentage"] == 80,
        "{e}"
    );
    // A v2 change shows through v1, and what v1 cannot say survives a v1 update.
    let mut changed = as_v2.clone();
    changed["spec"]["metrics"] = json!([
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]);
    ensure!(
        client
            .put(&format!("{v2}/web"), &changed.to_string())
            .await?
            .code
            == 200
    );
    let mut through_v1 = client.get(&format!("{v1}/web")).await?.json();
    ensure!(
        through_v1["spec"]["targetCPUUtilizationPercentage"] == 60,
        "{through_v1}"
    );
    through_v1["spec"]["maxReplicas"] = json!(7);
    let updated = client
        .put(&format!("{v1}/web"), &through_v1.to_string())
        .await?;
    ensure!(updated.code == 200, "{updated:?}");
    let after = client.get(&format!("{v2}/web")).await?.json();
    ensure!(
        after["spec"]["maxReplicas"] == 7
            && after["spec"]["metrics"].as_array().map(Vec::len) == Some(2),
        "{after}"
    );

    // events.k8s.io Events are core Events.
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "keelson", "reportingInstance": "n1",
        "action": "Scale", "reason": "Scaled", "type": "Normal", "note": "scaled up",
        "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"}});
    let created = client
        .post(
            "/apis/events.k8s.io/v1/namespaces/default/events",
            &event.to_string(),
        )
        .await?;
    ensure!(created.code == 201, "{created:?}");
    let core = client
        .get("/api/v1/namespaces/default/events/web.1")
        .await?
        .json();
    ensure!(
        core["message"] == "scaled up" && core["involvedObject"]["name"] == "web",
        "{core}"
    );
    let new_style = client
        .get("/apis/events.k8s.io/v1/namespaces/default/events")
        .await?
        .json();
    ensure!(new_style["items"][0]["note"] == "scaled up", "{new_style}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_once_through_their_binding() -> Result<()> {
    const PODS: &str = "/api/v1/namespaces/default/pods";
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    ensure!(client.post(PODS, &pod.to_string()).await?.code == 201);
    let binding = |node: &str, kind: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
            "target": {"apiVersion": "v1", "kind": kind, "name": node}})
        .to_string()
    };
    let bound = client
        .post(&format!("{PODS}/web/binding"), &binding("n1", "Node"))
        .await?;
    ensure!(
        bound.code == 201 && bound.json()["status"] == "Success",
        "{bound:?}"
    );
    let pod = client.get(&format!("{PODS}/web")).await?.json();
    ensure!(pod["spec"]["nodeName"] == "n1", "{pod}");
    ensure!(
        pod["status"]["conditions"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")),
        "{pod}"
    );
    let again = client
        .post(&format!("{PODS}/web/binding"), &binding("n2", "Node"))
        .await?;
    ensure!(
        again.code == 409
            && again.json()["message"] == "pod web is already assigned to node \"n1\"",
        "{again:?}"
    );
    let wrong = client
        .post(&format!("{PODS}/web/binding"), &binding("n2", "Widget"))
        .await?;
    ensure!(wrong.code == 422, "{wrong:?}");
    ensure!(client.get(&format!("{PODS}/web/binding")).await?.code == 405);
    let missing = client
        .post(
            &format!("{PODS}/none/binding"),
            &binding("n1", "Node").replace("\"web\"", "\"none\""),
        )
        .await?;
    ensure!(missing.code == 404, "{missing:?}");
    // Discovery lists it, as the scheduler's clients look for it.
    let resources = client.get("/api/v1").await?.json();
    ensure!(
        resources["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "pods/binding")),
        "{resources}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_the_priority_of_their_class() -> Result<()> {
    const PODS: &str = "/api/v1/namespaces/default/pods";
    const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let pod = |name: &str, class: Option<&str>| {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        if let Some(class) = class {
            pod["spec"]["priorityClassName"] = json!(class);
        }
        pod.to_string()
    };
    let system = client
        .get(&format!("{CLASSES}/system-node-critical"))
        .await?;
    ensure!(
        system.code == 200 && system.json()["value"] == 2_000_001_000i64,
        "{system:?}"
    );
    let plain = client.post(PODS, &pod("plain", None)).await?.json();
    ensure!(plain["spec"]["priority"] == 0, "{plain}");
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
    ensure!(client.post(CLASSES, &class.to_string()).await?.code == 201);
    let high = client.post(PODS, &pod("high", Some("high"))).await?.json();
    ensure!(
        high["spec"]["priority"] == 1000 && high["spec"]["preemptionPolicy"] == "Never",
        "{high}"
    );
    let missing = client.post(PODS, &pod("lost", Some("nope"))).await?;
    ensure!(
        missing.code == 403
            && missing.json()["message"]
                == "pods \"lost\" is forbidden: no PriorityClass with name nope was found",
        "{missing:?}"
    );
    ensure!(client.get(&format!("{PODS}/lost")).await?.code == 404);
    let default = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "normal"}, "value": 10, "globalDefault": true});
    ensure!(client.post(CLASSES, &default.to_string()).await?.code == 201);
    let later = client.post(PODS, &pod("later", None)).await?.json();
    ensure!(
        later["spec"]["priority"] == 10 && later["spec"]["priorityClassName"] == "normal",
        "{later}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_respect_disruption_budgets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let client = server.client();
    let pods = "/api/v1/namespaces/default/pods";
    let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let merge = [("Content-Type", "application/merge-patch+json")];
    // Pods as a kubelet reports them: Running and Ready, or Running and not ready.
    for (name, app, ready) in [
        ("a", "web", true),
        ("b", "web", true),
        ("c", "web", false),
        ("lone", "other", true),
    ] {
        let pod = json!({"kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        ensure!(client.post(pods, &pod.to_string()).await?.code == 201);
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        let patched = client
            .request(
                "PATCH",
                &format!("{pods}/{name}/status"),
                &merge,
                Some(&status.to_string()),
            )
            .await?;
        ensure!(patched.code == 200, "{patched:?}");
    }
    ensure!(
        client
            .post(
                pods,
                &json!({"kind": "Pod", "metadata": {"name": "waiting", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
                .to_string()
            )
            .await?
            .code
            == 201
    );
    let evict = |name: &'static str, extra: Value| {
        let client = client.clone();
        async move {
            let mut body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": "default"}});
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            client
                .post(&format!("{pods}/{name}/eviction"), &body.to_string())
                .await
        }
    };
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});

    // Discovery names the subresource as kubectl drain looks for it.
    let core = client.get("/api/v1").await?.json();
    let entry = core["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "pods/eviction"))
        .cloned();
    ensure!(
        entry.as_ref().is_some_and(|e| e["group"] == "policy"
            && e["version"] == "v1"
            && e["kind"] == "Eviction"
            && e["verbs"] == json!(["create"])),
        "{entry:?}"
    );

    // No budget: evicted at once.
    let lone = evict("lone", json!({})).await?;
    ensure!(lone.code == 201 && lone.json() == success, "{lone:?}");
    ensure!(client.get(&format!("{pods}/lone")).await?.code == 404);
    let missing = evict("lone", json!({})).await?;
    ensure!(missing.code == 404, "{missing:?}");
    let mismatch = client
        .post(
            &format!("{pods}/a/eviction"),
            &json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "b"}})
                .to_string(),
        )
        .await?;
    ensure!(
        mismatch.code == 400
            && mismatch.json()["message"] == "name in URL does not match name in Eviction object",
        "{mismatch:?}"
    );
    ensure!(client.get(&format!("{pods}/a/eviction")).await?.code == 405);

    // A budget one disruption above its minimum, as the disruption controller reports it.
    let budget = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    ensure!(client.post(pdbs, &budget.to_string()).await?.code == 201);
    let status = json!({"status": {"observedGeneration": 1, "currentHealthy": 2, "desiredHealthy": 1,
        "expectedPods": 4, "disruptionsAllowed": 1}});
    ensure!(
        client
            .request(
                "PATCH",
                &format!("{pdbs}/web/status"),
                &merge,
                Some(&status.to_string())
            )
            .await?
            .code
            == 200
    );
    // A dry run spends nothing and deletes nothing.
    let dry = evict("a", json!({"deleteOptions": {"dryRun": ["All"]}})).await?;
    ensure!(dry.code == 201, "{dry:?}");
    ensure!(client.get(&format!("{pdbs}/web")).await?.json()["status"]["disruptionsAllowed"] == 1);
    ensure!(client.get(&format!("{pods}/a")).await?.code == 200);

    let first = evict("a", json!({})).await?;
    ensure!(first.code == 201 && first.json() == success, "{first:?}");
    ensure!(client.get(&format!("{pods}/a")).await?.code == 404);
    let spent = client.get(&format!("{pdbs}/web")).await?.json();
    ensure!(
        spent["status"]["disruptionsAllowed"] == 0
            && spent["status"]["disruptedPods"]["a"].is_string()
            && spent["status"]["conditions"][0]["reason"] == "InsufficientPods",
        "{spent}"
    );
    // Nothing left to spare: 429, and the pod stays.
    let refused = evict("b", json!({})).await?;
    ensure!(
        refused.code == 429
            && refused.json()
                == json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                    "reason": "TooManyRequests",
                    "details": {"causes": [{"reason": "DisruptionBudget",
                        "message": "The disruption budget web needs 1 healthy pods and has 2 currently"}]},
                    "code": 429}),
        "{refused:?}"
    );
    ensure!(client.get(&format!("{pods}/b")).await?.code == 200);
    // An unready pod while the budget is met, and a pending pod, go without spending.
    let unready = evict("c", json!({})).await?;
    ensure!(unready.code == 201, "{unready:?}");
    let pending = evict("waiting", json!({})).await?;
    ensure!(pending.code == 201, "{pending:?}");
    ensure!(client.get(&format!("{pods}/c")).await?.code == 404);
    ensure!(client.get(&format!("{pods}/waiting")).await?.code == 404);

    // Two budgets over one pod: upstream refuses with a 500.
    let second = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "also"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    ensure!(client.post(pdbs, &second.to_string()).await?.code == 201);
    let two = evict("b", json!({})).await?;
    ensure!(
        two.code == 500
            && two.body
                == "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.\",\"code\":500}\n",
        "{two:?}"
    );
    server.stop().await
}
