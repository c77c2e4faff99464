//! Namespace deletion against a real, in-process API server with the scheduler, the
//! controllers and simulated nodes: a deleted namespace is Terminating while the namespace
//! controller empties it, refuses new content, reports what holds it, and is gone once
//! empty.

mod support;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use keelson_apiserver::testing::eventually;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::start;

fn condition(namespace: &Namespace, kind: &str) -> Option<(String, String, String)> {
    namespace
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_namespaces_are_emptied_then_removed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), 2).await?;
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}}))?;
    let created = namespaces.create(&PostParams::default(), &ns).await?;
    ensure!(
        created.spec.as_ref().and_then(|s| s.finalizers.clone()) == Some(vec!["kubernetes".into()]),
        "{:?}",
        created.spec
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "shop");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let deploy: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))?;
    deployments.create(&PostParams::default(), &deploy).await?;
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}))?,
    )
    .await?;
    // One object a finalizer holds: the namespace waits for it, and says so.
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "held", "finalizers": ["example.com/keep"]}}),
        )?,
    )
    .await?;
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "token"}, "stringData": {"k": "v"}}),
            )?,
        )
        .await?;
    eventually("two running pods", || async {
        let running = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok((running == 2).then_some(()))
    })
    .await?;

    let deleting = namespaces.delete("shop", &DeleteParams::default()).await?;
    let deleting = deleting
        .left()
        .ok_or_else(|| anyhow::anyhow!("namespace gone at once"))?;
    ensure!(
        deleting.metadata.deletion_timestamp.is_some()
            && deleting.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating"),
        "{deleting:?}"
    );
    let refused = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}}))?,
        )
        .await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403
            && e.message == "configmaps \"late\" is forbidden: unable to create new content in namespace shop because it is being terminated"),
        "{refused:?}"
    );

    // Everything but the held ConfigMap goes; the conditions name what is left.
    let held = eventually("only the held configmap left", || async {
        let namespace = namespaces.get("shop").await?;
        let remaining = condition(&namespace, "NamespaceContentRemaining");
        let finalizers = condition(&namespace, "NamespaceFinalizersRemaining");
        let expected_remaining = Some((
            "True".to_owned(),
            "SomeResourcesRemain".to_owned(),
            "Some resources are remaining: configmaps has 1 resource instances".to_owned(),
        ));
        Ok((remaining == expected_remaining).then_some((namespace, finalizers)))
    })
    .await?;
    ensure!(
        held.1
            == Some((
                "True".to_owned(),
                "SomeFinalizersRemain".to_owned(),
                "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances".to_owned()
            )),
        "{:?}",
        held.1
    );
    ensure!(
        condition(&held.0, "NamespaceDeletionContentFailure").map(|c| c.1)
            == Some("ContentDeleted".to_owned()),
        "{:?}",
        held.0.status
    );
    let everything = ListParams::default();
    ensure!(deployments.list(&everything).await?.items.is_empty());
    ensure!(sets.list(&everything).await?.items.is_empty());
    ensure!(pods.list(&everything).await?.items.is_empty());
    ensure!(secrets.list(&everything).await?.items.is_empty());

    // Its finalizer done, the last object goes, and so does the namespace.
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    eventually("the namespace gone", || async {
        Ok(namespaces.get_opt("shop").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(maps.list(&everything).await?.items.is_empty());
    Ok(())
}
