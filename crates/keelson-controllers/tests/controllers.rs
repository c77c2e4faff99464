//! Controllers against a real, in-process API server, with the scheduler and simulated
//! nodes running as they do in `keelson server` and `keelson agent --simulate`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use keelson_agent::{SimConfig, SimulatedNodes};
use keelson_apiserver::{ApiServer, BuildInfo, ServerConfig};
use keelson_store::{SqliteConfig, SqliteStore, Store};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

struct Cluster {
    client: Client,
    _nodes: SimulatedNodes,
}

async fn start(dir: &std::path::Path, nodes: usize) -> Result<Cluster> {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.join("db/state.db"))).await?);
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tls_sans: vec![],
        build: BuildInfo {
            version: "test".into(),
            commit: "test".into(),
        },
        cache: Default::default(),
    };
    let server = ApiServer::bind(config, store, Default::default()).await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path())?;
    tokio::spawn(server.serve(std::future::pending()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    tokio::spawn(keelson_scheduler::run(
        client.clone(),
        keelson_scheduler::plugins::default_profile(),
        keelson_scheduler::SchedulerConfig::default(),
    ));
    tokio::spawn(keelson_controllers::run(client.clone()));
    let mut sim = SimConfig::new("node", nodes);
    sim.max_termination = Duration::from_millis(300);
    let nodes = SimulatedNodes::start(client.clone(), sim).await?;
    Ok(Cluster {
        client,
        _nodes: nodes,
    })
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sets_keep_their_count_of_pods() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}]}}}}))?;
    sets.create(&PostParams::default(), &rs).await?;
    let web = ListParams::default().labels("app=web");
    eventually("3 ready replicas", || async {
        let status = sets.get("web").await?.status;
        Ok(status
            .filter(|s| s.ready_replicas == Some(3) && s.available_replicas == Some(3))
            .map(|_| ()))
    })
    .await?;
    let listed = pods.list(&web).await?;
    ensure!(listed.items.len() == 3, "{}", listed.items.len());
    ensure!(
        listed
            .items
            .iter()
            .all(|p| ready(p) && p.name_any().starts_with("web-"))
    );
    ensure!(
        listed.items.iter().all(|p| p
            .owner_references()
            .iter()
            .any(|o| o.kind == "ReplicaSet" && o.controller == Some(true))),
        "owned by the ReplicaSet"
    );

    // A deleted pod is replaced.
    let victim = listed.items[0].name_any();
    pods.delete(&victim, &DeleteParams::default()).await?;
    eventually("a replacement", || async {
        let list = pods.list(&web).await?;
        let active: Vec<_> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .collect();
        Ok((active.len() == 3 && active.iter().all(|p| p.name_any() != victim)).then_some(()))
    })
    .await?;

    // Scaled down: the extra pods go, and the count holds (no flapping back up).
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await?;
    eventually("one pod left", || async {
        let list = pods.list(&web).await?;
        Ok((list.items.len() == 1).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(pods.list(&web).await?.items.len() == 1);
    let status = sets.get("web").await?.status;
    ensure!(
        status.as_ref().is_some_and(|s| s.replicas == 1),
        "{status:?}"
    );

    // Every namespace gets a default ServiceAccount.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}}))?,
        )
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    eventually("the default ServiceAccount", || async {
        Ok(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    Ok(())
}
