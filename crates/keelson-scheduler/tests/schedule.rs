//! Scheduling decisions on hand-made and random clusters: what fits where, the reasons
//! kubectl shows when nothing does, and (seeded random property) that no node is ever
//! over-committed and no pod placed twice.

use k8s_openapi::api::core::v1::{Node, Pod};
use keelson_scheduler::plugins::default_profile;
use keelson_scheduler::{Resources, Snapshot, pod_requests, schedule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
    let mut node = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {}, "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}});
    merge(&mut node, extra);
    serde_json::from_value(node).expect("node")
}

fn pod(name: &str, cpu: &str, memory: &str, extra: Value) -> Pod {
    let mut pod = json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}});
    merge(&mut pod, extra);
    serde_json::from_value(pod).expect("pod")
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (k, v) in extra {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, extra) => *base = extra,
    }
}

#[test]
fn a_pod_too_big_for_every_node_says_why() {
    let snapshot = Snapshot::new(
        (0..3)
            .map(|i| node(&format!("n{i}"), "1", "1Gi", json!({})))
            .collect(),
        [],
    );
    let error = schedule(
        &default_profile(),
        &snapshot,
        &pod("big", "2", "100Mi", json!({})),
    )
    .expect_err("nothing fits");
    assert_eq!(
        error.to_string(),
        "0/3 nodes are available: 3 Insufficient cpu."
    );
}

#[test]
fn each_node_passed_over_is_counted_under_its_reason() {
    let snapshot = Snapshot::new(
        vec![
            node(
                "cordoned",
                "4",
                "4Gi",
                json!({"spec": {"unschedulable": true}}),
            ),
            node(
                "gpu",
                "4",
                "4Gi",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node("small", "4", "64Mi", json!({})),
        ],
        [],
    );
    let web = pod("web", "100m", "128Mi", json!({}));
    let error = schedule(&default_profile(), &snapshot, &web).expect_err("nothing fits");
    assert_eq!(
        error.to_string(),
        "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable."
    );
    // Tolerating the taint opens that node.
    let tolerant = pod(
        "web",
        "100m",
        "128Mi",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
    );
    let placed = schedule(&default_profile(), &snapshot, &tolerant).expect("fits");
    assert_eq!(placed.node, "gpu");
}

#[test]
fn selectors_and_affinity_choose_the_node() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z, "disk": if z == "a" { "ssd" } else { "hdd" }}}});
    let snapshot = Snapshot::new(
        vec![
            node("a", "4", "4Gi", zone("a")),
            node("b", "4", "4Gi", zone("b")),
            node("c", "4", "4Gi", zone("c")),
        ],
        [],
    );
    let profile = default_profile();
    let by_selector = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"topology.kubernetes.io/zone": "b"}}}),
    );
    assert_eq!(
        schedule(&profile, &snapshot, &by_selector)
            .expect("fits")
            .node,
        "b"
    );
    let required = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["a", "b"]}]}]}}}}}),
    );
    assert_eq!(
        schedule(&profile, &snapshot, &required).expect("fits").node,
        "c"
    );
    let preferred = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}}),
    );
    assert_eq!(
        schedule(&profile, &snapshot, &preferred)
            .expect("fits")
            .node,
        "a"
    );
    // A DaemonSet's pod names its node by field, not by label.
    let by_name = |name: &str| {
        pod(
            "p",
            "1",
            "1Gi",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]}}}}}),
        )
    };
    for name in ["a", "b", "c"] {
        assert_eq!(
            schedule(&profile, &snapshot, &by_name(name))
                .expect("fits")
                .node,
            name
        );
    }
    assert!(schedule(&profile, &snapshot, &by_name("gone")).is_err());
    let nowhere = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"topology.kubernetes.io/zone": "z"}}}),
    );
    assert_eq!(
        schedule(&profile, &snapshot, &nowhere)
            .expect_err("no match")
            .to_string(),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn pods_spread_over_empty_nodes_and_host_ports_do_not_collide() {
    let mut snapshot = Snapshot::new(
        vec![
            node("n0", "2", "4Gi", json!({})),
            node("n1", "2", "4Gi", json!({})),
        ],
        [],
    );
    let profile = default_profile();
    let mut placed = vec![];
    for i in 0..4 {
        let p = pod(&format!("p{i}"), "500m", "256Mi", json!({}));
        let placement = schedule(&profile, &snapshot, &p).expect("fits");
        placed.push(placement.node.clone());
        snapshot.assume(p, placement.index);
    }
    placed.sort();
    assert_eq!(placed, ["n0", "n0", "n1", "n1"], "least-allocated spreads");
    let with_port = |name: &str| {
        pod(
            name,
            "10m",
            "10Mi",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        )
    };
    let first = schedule(&profile, &snapshot, &with_port("h0")).expect("fits");
    snapshot.assume(with_port("h0"), first.index);
    let second = schedule(&profile, &snapshot, &with_port("h1")).expect("fits");
    assert_ne!(first.node, second.node);
    snapshot.assume(with_port("h1"), second.index);
    assert_eq!(
        schedule(&profile, &snapshot, &with_port("h2"))
            .expect_err("ports taken")
            .to_string(),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    );
    let named = pod("pinned", "10m", "10Mi", json!({"spec": {"nodeName": "n1"}}));
    assert_eq!(
        schedule(&profile, &snapshot, &named).expect("fits").node,
        "n1"
    );
}

#[test]
fn requests_count_init_containers_and_sidecars_as_kubernetes_does() {
    let p = pod(
        "p",
        "100m",
        "100Mi",
        json!({"spec": {"initContainers": [
            {"name": "setup", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}},
            {"name": "proxy", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m", "memory": "50Mi"}}}]}}),
    );
    let requests = pod_requests(&p);
    // max(1 cpu init, 100m + 200m sidecar) = 1 cpu; memory: 100Mi + 50Mi.
    assert_eq!(requests.get("cpu"), 1000);
    assert_eq!(requests.get("memory"), 150 * 1024 * 1024 * 1000);
    assert_eq!(requests.pods, 1);
}

/// Seeded random clusters: every placement fits, no node goes over, every refusal is
/// right (no node had room), and each pod is placed once.
#[test]
fn random_pods_never_over_commit_a_node() {
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes: Vec<Node> = (0..rng.random_range(1..8))
            .map(|i| {
                node(
                    &format!("n{i}"),
                    &format!("{}m", rng.random_range(500..4000)),
                    &format!("{}Mi", rng.random_range(256..4096)),
                    json!({"status": {"allocatable": {"pods": rng.random_range(1..12).to_string()}}}),
                )
            })
            .collect();
        let mut snapshot = Snapshot::new(nodes, []);
        let profile = default_profile();
        let mut placements: Vec<(String, usize)> = vec![];
        for i in 0..60 {
            let p = pod(
                &format!("p{i}"),
                &format!("{}m", rng.random_range(50..1500)),
                &format!("{}Mi", rng.random_range(16..1024)),
                json!({}),
            );
            let wanted = pod_requests(&p);
            match schedule(&profile, &snapshot, &p) {
                Ok(placement) => {
                    placements.push((format!("p{i}"), placement.index));
                    snapshot.assume(p, placement.index);
                }
                Err(error) => {
                    for info in &snapshot.nodes {
                        let mut after = info.requested.clone();
                        after.add(&wanted);
                        assert!(
                            !fits(&after, &info.allocatable),
                            "seed {seed}: {} had room for p{i} ({error})",
                            info.name
                        );
                    }
                }
            }
        }
        for info in &snapshot.nodes {
            assert!(
                fits(&info.requested, &info.allocatable),
                "seed {seed}: {} over-committed",
                info.name
            );
        }
        let mut names: Vec<&String> = placements.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            placements.len(),
            "seed {seed}: a pod placed twice"
        );
    }
}

fn fits(used: &Resources, allocatable: &Resources) -> bool {
    used.pods <= allocatable.pods
        && used
            .iter()
            .all(|(name, amount)| amount <= allocatable.get(name))
}

fn anti(app: &str, key: &str) -> Value {
    json!({"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]})
}

#[test]
fn required_anti_affinity_spreads_and_then_refuses() {
    let mut snapshot = Snapshot::new(
        (0..3)
            .map(|i| node(&format!("n{i}"), "4", "4Gi", json!({})))
            .collect(),
        [],
    );
    let profile = default_profile();
    let web = |i: usize| {
        pod(
            &format!("web-{i}"),
            "100m",
            "64Mi",
            json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"affinity": {"podAntiAffinity": anti("web", "kubernetes.io/hostname")}}}),
        )
    };
    let mut used = vec![];
    for i in 0..3 {
        let placement = schedule(&profile, &snapshot, &web(i)).expect("fits");
        used.push(placement.node.clone());
        snapshot.assume(web(i), placement.index);
    }
    used.sort();
    assert_eq!(used, ["n0", "n1", "n2"], "one per node");
    assert_eq!(
        schedule(&profile, &snapshot, &web(3))
            .expect_err("no node left")
            .to_string(),
        // The running replicas' own (identical) terms are checked first, as upstream does.
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
    );
}

#[test]
fn affinity_follows_pods_and_running_pods_can_refuse_newcomers() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    let cache = pod(
        "cache",
        "100m",
        "64Mi",
        json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeName": "b1"}}),
    );
    let quiet = pod(
        "db",
        "100m",
        "64Mi",
        json!({"metadata": {"labels": {"app": "db"}},
            "spec": {"nodeName": "a1", "affinity": {"podAntiAffinity": anti("noisy", "kubernetes.io/hostname")}}}),
    );
    let snapshot = Snapshot::new(
        vec![
            node("a1", "4", "4Gi", zone("a")),
            node("a2", "4", "4Gi", zone("a")),
            node("b1", "4", "4Gi", zone("b")),
            node("b2", "4", "4Gi", zone("b")),
        ],
        [cache, quiet],
    );
    let profile = default_profile();
    let near_cache = pod(
        "web",
        "100m",
        "64Mi",
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}}),
    );
    let placed = schedule(&profile, &snapshot, &near_cache).expect("fits");
    assert!(
        placed.node.starts_with('b'),
        "same zone as the cache: {}",
        placed.node
    );
    // A pod the db's anti-affinity rejects is kept off the db's node.
    let noisy = pod(
        "noisy",
        "100m",
        "64Mi",
        json!({"metadata": {"labels": {"app": "noisy"}}, "spec": {"nodeName": "a1"}}),
    );
    assert_eq!(
        schedule(&profile, &snapshot, &noisy)
            .expect_err("pinned to a1")
            .to_string(),
        "0/4 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, 3 node(s) didn't match the requested node name."
    );
    // The first pod of a group that wants to be with its own kind may start anywhere.
    let first = pod(
        "first",
        "100m",
        "64Mi",
        json!({"metadata": {"labels": {"app": "group"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "group"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}}),
    );
    assert!(schedule(&profile, &snapshot, &first).is_ok());
    // Preferred anti-affinity steers away from the cache's zone.
    let away = pod(
        "away",
        "100m",
        "64Mi",
        json!({"spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}}]}}}}),
    );
    let placed = schedule(&profile, &snapshot, &away).expect("fits");
    assert!(
        placed.node.starts_with('a'),
        "away from the cache's zone: {}",
        placed.node
    );
}

#[test]
fn large_clusters_are_sampled_in_turn_and_a_rare_fit_is_still_found() {
    use keelson_scheduler::{NodeCursor, schedule_sampled};
    // Upstream's adaptive share: all nodes below 100, then 50% less 1% per 125 nodes,
    // never under 5% nor under 100 nodes.
    let cursor = NodeCursor::adaptive();
    assert_eq!(cursor.feasible_to_find(50), 50);
    assert_eq!(cursor.feasible_to_find(1_000), 420);
    assert_eq!(cursor.feasible_to_find(5_000), 500);
    assert_eq!(cursor.feasible_to_find(100_000), 5_000);
    assert_eq!(NodeCursor::all().feasible_to_find(5_000), 5_000);

    // 1,000 equal nodes: each cycle looks at 420 of them, starting where the last stopped,
    // so consecutive pods land in different parts of the cluster.
    let nodes: Vec<Node> = (0..1_000)
        .map(|i| node(&format!("n{i}"), "4", "8Gi", json!({})))
        .collect();
    let mut snapshot = Snapshot::new(nodes, []);
    let profile = default_profile();
    let mut cursor = NodeCursor::adaptive();
    let first = schedule_sampled(
        &profile,
        &snapshot,
        &pod("a", "1", "1Gi", json!({})),
        &mut cursor,
    )
    .expect("fits");
    assert!(first.index < 420, "{first:?}");
    snapshot.assume(pod("a", "1", "1Gi", json!({})), first.index);
    let second = schedule_sampled(
        &profile,
        &snapshot,
        &pod("b", "1", "1Gi", json!({})),
        &mut cursor,
    )
    .expect("fits");
    assert!((420..840).contains(&second.index), "{second:?}");

    // One node in a thousand fits: sampling does not stop before finding it.
    let nodes: Vec<Node> = (0..1_000)
        .map(|i| {
            let labels = if i == 777 {
                json!({"disk": "ssd"})
            } else {
                json!({})
            };
            node(
                &format!("n{i}"),
                "4",
                "8Gi",
                json!({"metadata": {"labels": labels}}),
            )
        })
        .collect();
    let snapshot = Snapshot::new(nodes, []);
    let picky = pod(
        "picky",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    );
    let placed = schedule_sampled(&profile, &snapshot, &picky, &mut cursor).expect("fits");
    assert_eq!(placed.node, "n777");
    // And a pod that fits nowhere has every node counted in its reasons.
    let none = pod(
        "none",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"disk": "nvme"}}}),
    );
    let error = schedule_sampled(&profile, &snapshot, &none, &mut cursor).expect_err("no fit");
    assert_eq!(
        error.to_string(),
        "0/1000 nodes are available: 1000 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn topology_spread_keeps_zones_within_max_skew() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    let nodes = vec![
        node("a1", "8", "8Gi", zone("a")),
        node("a2", "8", "8Gi", zone("a")),
        node("b1", "8", "8Gi", zone("b")),
        node("c1", "8", "8Gi", zone("c")),
        node("unzoned", "8", "8Gi", json!({})),
    ];
    let spread = |name: &str, when: &str| {
        pod(
            name,
            "100m",
            "64Mi",
            json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"topologySpreadConstraints": [{"maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": when,
                    "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        )
    };
    let profile = default_profile();
    // Hard: nine pods over three zones land three per zone, never on the unzoned node,
    // and no zone ever runs more than one ahead of the emptiest.
    let mut snapshot = Snapshot::new(nodes.clone(), []);
    let mut per_zone = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..9 {
        let p = spread(&format!("w{i}"), "DoNotSchedule");
        let placed = schedule(&profile, &snapshot, &p).expect("fits");
        assert_ne!(placed.node, "unzoned");
        *per_zone.entry(placed.node[..1].to_owned()).or_default() += 1;
        let (max, min) = (
            per_zone.values().max().copied().unwrap_or(0),
            ["a", "b", "c"]
                .iter()
                .map(|z| per_zone.get(*z).copied().unwrap_or(0))
                .min()
                .unwrap_or(0),
        );
        assert!(max - min <= 1, "{per_zone:?}");
        snapshot.assume(p, placed.index);
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [3, 3, 3]);

    // With zone c full, a hard constraint refuses the zones already ahead, and says so.
    let nodes_b_c_full: Vec<Node> = vec![
        node("a1", "8", "8Gi", zone("a")),
        node("b1", "8", "8Gi", zone("b")),
        node("c1", "100m", "8Gi", zone("c")),
    ];
    let mut snapshot = Snapshot::new(nodes_b_c_full, []);
    for (i, at) in [(0, 0), (1, 1), (2, 2)] {
        snapshot.assume(spread(&format!("x{i}"), "DoNotSchedule"), at);
    }
    for (i, at) in [(3, 0), (4, 1)] {
        snapshot.assume(spread(&format!("x{i}"), "DoNotSchedule"), at);
    }
    let error = schedule(&profile, &snapshot, &spread("x5", "DoNotSchedule"))
        .expect_err("c is full and a, b are ahead");
    assert_eq!(
        error.to_string(),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match pod topology spread constraints."
    );
    // Soft: the same pod is placed anyway, preferring the emptier of the open zones.
    let placed = schedule(&profile, &snapshot, &spread("x5", "ScheduleAnyway")).expect("fits");
    assert!(placed.node == "a1" || placed.node == "b1", "{placed:?}");

    // Soft spreading alone moves pods to the emptier zone.
    let mut snapshot = Snapshot::new(nodes, []);
    snapshot.assume(spread("y0", "ScheduleAnyway"), 0);
    snapshot.assume(spread("y1", "ScheduleAnyway"), 2);
    let placed = schedule(&profile, &snapshot, &spread("y2", "ScheduleAnyway")).expect("fits");
    assert_eq!(placed.node, "c1");
}

#[test]
fn preemption_picks_the_least_important_victims_on_the_best_node() {
    use keelson_scheduler::preempt;
    let with_priority = |name: &str, cpu: &str, priority: i32| {
        pod(name, cpu, "64Mi", json!({"spec": {"priority": priority}}))
    };
    let nodes = vec![
        node("a", "2", "4Gi", json!({})),
        node("b", "2", "4Gi", json!({})),
    ];
    let mut snapshot = Snapshot::new(nodes, []);
    // a: one pod of priority 100 filling it. b: two pods of priority 10 and 5.
    snapshot.assume(with_priority("a-big", "2", 100), 0);
    snapshot.assume(with_priority("b-1", "1", 10), 1);
    snapshot.assume(with_priority("b-2", "1", 5), 1);
    let profile = default_profile();
    let urgent = with_priority("urgent", "1", 1000);
    assert!(schedule(&profile, &snapshot, &urgent).is_err());
    // b costs less (its most important victim is 10, not 100), and one victim is enough
    // there: the priority-5 pod; the priority-10 one is reprieved.
    let plan = preempt(&profile, &snapshot, &urgent).expect("a plan");
    assert_eq!(plan.node, "b");
    let victims: Vec<&str> = plan
        .victims
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    assert_eq!(victims, ["b-2"]);

    // Needing the whole node takes both.
    let plan = preempt(&profile, &snapshot, &with_priority("wide", "2", 1000)).expect("a plan");
    assert_eq!((plan.node.as_str(), plan.victims.len()), ("b", 2));
    // Nothing of lower priority to take, or a policy of Never: no preemption.
    assert!(preempt(&profile, &snapshot, &with_priority("meek", "1", 1)).is_none());
    let never = pod(
        "never",
        "1",
        "64Mi",
        json!({"spec": {"priority": 1000, "preemptionPolicy": "Never"}}),
    );
    assert!(preempt(&profile, &snapshot, &never).is_none());
    // Too big for any node even when emptied: nothing to gain.
    assert!(preempt(&profile, &snapshot, &with_priority("huge", "3", 1000)).is_none());
}
