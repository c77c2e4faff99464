//! Events as `kubectl describe` shows them (`Normal  Killing  Stopping container web`):
//! one builder for every component that records them — scheduler, controllers, kubelet.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

/// Who reports an event: a component (`default-scheduler`, `kubelet`), and for a
/// kubelet the node it runs on.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    pub component: &'a str,
    pub host: Option<&'a str>,
}

/// A new event about `about` (type `Normal` or `Warning`), named as upstream names them:
/// the object's name and a unique suffix.
pub fn event(
    reporter: Reporter<'_>,
    about: ObjectReference,
    kind: &str,
    reason: &str,
    message: &str,
) -> Event {
    let now = Timestamp::now();
    let name = about.name.clone().unwrap_or_default();
    let namespace = about
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let instance = reporter.host.unwrap_or(reporter.component);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: about,
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(kind.to_owned()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some(reporter.component.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        source: Some(EventSource {
            component: Some(reporter.component.to_owned()),
            host: reporter.host.map(str::to_owned),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_object_reporter_and_a_unique_name() {
        let about = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("web".into()),
            namespace: Some("shop".into()),
            field_path: Some("spec.containers{web}".into()),
            ..Default::default()
        };
        let reporter = Reporter {
            component: "kubelet",
            host: Some("node-1"),
        };
        let first = event(
            reporter,
            about.clone(),
            "Normal",
            "Killing",
            "Stopping container web",
        );
        let second = event(
            reporter,
            about,
            "Normal",
            "Killing",
            "Stopping container web",
        );
        assert_eq!(first.metadata.namespace.as_deref(), Some("shop"));
        assert!(
            first
                .metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web."))
        );
        assert_ne!(first.metadata.name, second.metadata.name);
        assert_eq!(
            first.involved_object.field_path.as_deref(),
            Some("spec.containers{web}")
        );
        let source = first.source.unwrap_or_default();
        assert_eq!(source.component.as_deref(), Some("kubelet"));
        assert_eq!(source.host.as_deref(), Some("node-1"));
        assert_eq!(first.reporting_instance.as_deref(), Some("node-1"));
    }
}
