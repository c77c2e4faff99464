//! Pod template revisions: the hash that names a template, and the `ControllerRevision`
//! history StatefulSets and DaemonSets keep of their templates.
//!
//! A revision stores what `kubectl rollout undo` applies to go back to it — a strategic
//! merge patch replacing `spec.template` — under the name `<owner>-<hash>`, labelled
//! with the template's labels and `controller-revision-hash`, numbered one above the
//! newest. Going back to a template that has a revision renumbers that revision instead
//! of creating another; a name taken by a different revision is a collision, counted in
//! the owner's `status.collisionCount`, which is mixed into the next hash.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::ControllerError;
use crate::workload::{controller_ref, controller_uid};

/// The label naming the revision a pod (or a revision) was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// How often a collision is retried with the next count within one reconcile.
const COLLISION_ATTEMPTS: i32 = 5;

/// `value`'s hash as Kubernetes spells such names: FNV-1a over its JSON (object keys
/// sorted), in the consonants-and-digits alphabet.
pub fn template_hash(value: &Value) -> String {
    hash_text(&value.to_string())
}

fn hash_text(text: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = hash;
    while n > 0 {
        out.push(ALPHABET[(n % 27) as usize] as char);
        n /= 27;
    }
    out
}

/// What a revision of `template` stores: the patch that restores it.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(object) = template.as_object_mut() {
        object.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The template a revision restores.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.0.get("spec")?.get("template")?.clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

/// The revision's `controller-revision-hash`.
pub fn hash_of(revision: &ControllerRevision) -> &str {
    revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map_or("", String::as_str)
}

fn number(revision: &ControllerRevision) -> i64 {
    revision.revision.unwrap_or(0)
}

/// The revisions `owner` controls, oldest first.
pub fn owned_by<K: Resource>(
    store: &Store<ControllerRevision>,
    owner: &K,
) -> Vec<Arc<ControllerRevision>> {
    let namespace = owner.meta().namespace.clone();
    let uid = owner.meta().uid.as_deref();
    let mut owned: Vec<Arc<ControllerRevision>> = store
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace == namespace && controller_uid(&r.metadata) == uid)
        .collect();
    owned.sort_by_key(|r| number(r));
    owned
}

/// The owner's history: its revisions (oldest first), the one of its current template,
/// and the collision count it took to name that one.
pub struct History {
    pub revisions: Vec<Arc<ControllerRevision>>,
    pub update: Arc<ControllerRevision>,
    pub collision_count: i32,
}

impl History {
    pub fn named(&self, name: &str) -> Option<&Arc<ControllerRevision>> {
        self.revisions.iter().find(|r| r.name_any() == name)
    }

    pub fn with_hash(&self, hash: &str) -> Option<&Arc<ControllerRevision>> {
        self.revisions.iter().find(|r| hash_of(r) == hash)
    }
}

/// Finds or makes the revision of `template`, `owner`'s current template, among `owned`
/// (what the cache shows): an equal revision is reused (renumbered newest if it is an old
/// one come back), otherwise one is created.
pub async fn sync<K>(
    client: &Client,
    owner: &K,
    template: &PodTemplateSpec,
    owned: Vec<Arc<ControllerRevision>>,
    collision_count: i32,
) -> Result<History, ControllerError>
where
    K: Resource<DynamicType = ()>,
{
    let namespace = owner.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let data = revision_data(template);
    let newest = owned.iter().map(|r| number(r)).max().unwrap_or(0);
    let mut revisions = owned;
    if let Some(index) = revisions.iter().rposition(|r| r.data.0 == data) {
        let mut update = revisions[index].clone();
        if number(&update) < newest {
            let patch = json!({"revision": newest + 1});
            update = Arc::new(
                api.patch(
                    &update.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?,
            );
            revisions.remove(index);
            revisions.push(update.clone());
        }
        return Ok(History {
            revisions,
            update,
            collision_count,
        });
    }
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut count = collision_count;
    for _ in 0..COLLISION_ATTEMPTS {
        let hash = if count == 0 {
            template_hash(&data)
        } else {
            hash_text(&format!("{data}{count}"))
        };
        labels.insert(HASH_LABEL.into(), hash.clone());
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", owner.name_any())),
                namespace: Some(namespace.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![controller_ref(owner)]),
                ..Default::default()
            },
            data: RawExtension(data.clone()),
            revision: Some(newest + 1),
        };
        let update = match api.create(&PostParams::default(), &revision).await {
            Ok(created) => created,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Made by an earlier reconcile the cache does not show yet, or a collision.
                let existing = api.get(&revision.name_any()).await?;
                let ours = controller_uid(&existing.metadata) == owner.meta().uid.as_deref();
                if ours && existing.data.0 == data {
                    existing
                } else {
                    count += 1;
                    continue;
                }
            }
            Err(error) => return Err(error.into()),
        };
        let update = Arc::new(update);
        revisions.retain(|r| r.metadata.uid != update.metadata.uid);
        revisions.push(update.clone());
        return Ok(History {
            revisions,
            update,
            collision_count: count,
        });
    }
    Err(ControllerError::Invalid(format!(
        "no free revision name for {} after {COLLISION_ATTEMPTS} collisions",
        owner.name_any()
    )))
}

/// Deletes the oldest revisions beyond `limit` that nothing uses (`in_use` names them).
pub async fn prune(
    client: &Client,
    history: &History,
    in_use: &HashSet<String>,
    limit: i32,
) -> Result<(), ControllerError> {
    let unused: Vec<&Arc<ControllerRevision>> = history
        .revisions
        .iter()
        .filter(|r| {
            !in_use.contains(&r.name_any()) && r.metadata.uid != history.update.metadata.uid
        })
        .collect();
    let excess = unused
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    for revision in unused.into_iter().take(excess) {
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), &revision.namespace().unwrap_or_default());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: revision.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&revision.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_names() {
        let a = template_hash(&json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}));
        let b = template_hash(&json!({"spec": {"containers": [{"name": "a", "image": "y"}]}}));
        assert_ne!(a, b);
        assert_eq!(
            a,
            template_hash(&json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}))
        );
        assert!(
            a.bytes()
                .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)),
            "{a}"
        );
    }

    #[test]
    fn revisions_restore_their_template() -> Result<(), serde_json::Error> {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}))?;
        let data = revision_data(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let revision = ControllerRevision {
            metadata: ObjectMeta::default(),
            data: RawExtension(data),
            revision: Some(1),
        };
        assert_eq!(template_of(&revision), Some(template));
        Ok(())
    }
}
