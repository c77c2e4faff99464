//! What a node is: its name, whether it takes pods, its taints, labels and host ports.

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use crate::framework::{CycleState, Filter, Score};
use crate::snapshot::NodeInfo;

/// Filter: a pod that names its node (`spec.nodeName`) fits only there.
pub struct NodeName;

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(wanted) if !wanted.is_empty() && wanted != node.name => {
                Err(vec!["node(s) didn't match the requested node name".into()])
            }
            _ => Ok(()),
        }
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref() {
        Some("Exists") => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// Filter: a cordoned node (`spec.unschedulable`) takes only pods that tolerate it.
pub struct NodeUnschedulable;

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        if !node.unschedulable {
            return Ok(());
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
            return Err(vec!["node(s) were unschedulable".into()]);
        }
        Ok(())
    }
}

fn taints(node: &NodeInfo) -> &[Taint] {
    &node.taints
}

/// Filter: every NoSchedule and NoExecute taint is tolerated. Score: fewer untolerated
/// PreferNoSchedule taints is better.
pub struct TaintToleration;

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        let untolerated = taints(node).iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerations(pod).iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            Some(taint) => Err(vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            )]),
            None => Ok(()),
        }
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> i64 {
        taints(node)
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule")
            .filter(|taint| !tolerations(pod).iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }

    /// Fewest untolerated taints scores 100.
    fn normalize(&self, scores: &mut [i64]) {
        let most = scores.iter().copied().max().unwrap_or(0);
        for score in scores.iter_mut() {
            *score = if most == 0 {
                100
            } else {
                100 - *score * 100 / most
            };
        }
    }
}

/// The node's label `key`, borrowed (this runs for every node of every cycle).
fn label<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a str> {
    node.node
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether one node selector requirement holds for `value` (the label's, if any).
fn requirement_holds(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if requirement.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term (all its requirements) matches the node; an empty term
/// matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_holds(r, label(node, &r.key)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            requirement_holds(r, value)
        })
}

/// Filter: `nodeSelector` and required node affinity match the node. Score: the weights of
/// the preferred terms it matches.
pub struct NodeAffinity;

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| label(node, k) == Some(v.as_str()));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let affinity_ok = required.is_none_or(|selector| {
            selector
                .node_selector_terms
                .iter()
                .any(|term| term_matches(term, node))
        });
        if selector_ok && affinity_ok {
            Ok(())
        } else {
            Err(vec![
                "node(s) didn't match Pod's node affinity/selector".into(),
            ])
        }
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> i64 {
        pod.spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| term_matches(&p.preference, node))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    /// The best node scores 100.
    fn normalize(&self, scores: &mut [i64]) {
        let most = scores.iter().copied().max().unwrap_or(0);
        if most > 0 {
            for score in scores.iter_mut() {
                *score = *score * 100 / most;
            }
        }
    }
}

/// Filter: the host ports the pod asks for are free on the node.
pub struct NodePorts;

impl Filter for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<(), Vec<String>> {
        let any = |ip: &str| ip == "0.0.0.0" || ip.is_empty();
        let clash = state.host_ports.iter().any(|(ip, protocol, port)| {
            node.used_ports
                .iter()
                .any(|(used_ip, used_protocol, used_port)| {
                    used_port == port
                        && used_protocol == protocol
                        && (used_ip == ip || any(ip) || any(used_ip))
                })
        });
        if clash {
            Err(vec![
                "node(s) didn't have free ports for the requested pod ports".into(),
            ])
        } else {
            Ok(())
        }
    }
}
