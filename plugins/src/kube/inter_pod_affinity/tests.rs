//! Tests built from the examples of the Kubernetes documentation ("Assigning
//! Pods to Nodes": inter-pod affinity and anti-affinity) and from
//! kube-scheduler's documented rules, plus the invariant that PreFilter's
//! extensions give the same state as recomputing PreFilter.

use super::scan::Counts;
use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use strata_scheduler::cache::Cache;
use strata_scheduler::sdk::Code;
use strata_scheduler::testing::{PodBuilder, cache_with, node, pod};

const HOST: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// A term selecting pods by exact labels.
fn term(key: &str, labels: Value) -> Value {
    json!({"labelSelector": {"matchLabels": labels}, "topologyKey": key})
}

/// A term with extra fields (namespaces, namespaceSelector).
fn term_with(key: &str, labels: Value, extra: Value) -> Value {
    let mut t = term(key, labels);
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    t
}

fn weighted(weight: i32, t: Value) -> Value {
    json!({"weight": weight, "podAffinityTerm": t})
}

/// A pod's affinity section from its four term lists.
#[derive(Default)]
struct Aff {
    req: Vec<Value>,
    pref: Vec<Value>,
    anti: Vec<Value>,
    pref_anti: Vec<Value>,
}

impl Aff {
    fn apply(self, b: PodBuilder) -> PodBuilder {
        b.spec(json!({"affinity": {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": self.req,
                "preferredDuringSchedulingIgnoredDuringExecution": self.pref,
            },
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": self.anti,
                "preferredDuringSchedulingIgnoredDuringExecution": self.pref_anti,
            },
        }}))
    }
}

fn plugin() -> InterPodAffinity {
    InterPodAffinity::default()
}

/// Short names for Filter outcomes; each also checks the code kube uses.
fn outcome(s: &Status) -> &'static str {
    if s.is_success() {
        return "ok";
    }
    let reasons = s.reasons();
    assert_eq!(reasons.len(), 1, "{s}");
    match (s.code(), reasons[0].as_ref()) {
        (Code::UnschedulableAndUnresolvable, REASON_AFFINITY) => "affinity",
        (Code::Unschedulable, REASON_ANTI_AFFINITY) => "anti",
        (Code::Unschedulable, REASON_EXISTING_ANTI_AFFINITY) => "existing",
        _ => panic!("unexpected status {s}"),
    }
}

/// Runs PreFilter and Filter on every node; a skipped PreFilter passes all.
fn filter_all_with(
    pl: &InterPodAffinity,
    cache: &Cache,
    p: &PodInfo,
) -> BTreeMap<String, &'static str> {
    let snap = cache.snapshot();
    let mut st = CycleState::new();
    let r = pl.pre_filter(&mut st, p, snap);
    assert!(r.nodes.is_none());
    assert!(r.status.is_success() || r.status.is_skip(), "{}", r.status);
    // The per-domain verdicts the engine's fast path reads agree with
    // Filter on every node.
    if !r.status.is_skip()
        && let Some(layers) = pl.domain_verdicts(&st)
    {
        for n in snap.nodes() {
            let by_domain = layers.iter().all(|l| l.passes(n.id.index()));
            assert_eq!(
                by_domain,
                pl.filter(&st, p, n).is_success(),
                "node {}: domain verdicts disagree with Filter",
                n.name
            );
        }
    }
    snap.nodes()
        .map(|n| {
            let o = if r.status.is_skip() {
                "ok"
            } else {
                outcome(&pl.filter(&st, p, n))
            };
            (n.name.as_str().to_owned(), o)
        })
        .collect()
}

fn filter_all(cache: &Cache, p: &PodInfo) -> BTreeMap<String, &'static str> {
    filter_all_with(&plugin(), cache, p)
}

fn expect(pairs: &[(&str, &'static str)]) -> BTreeMap<String, &'static str> {
    pairs.iter().map(|(n, o)| (n.to_string(), *o)).collect()
}

/// Places the pod of `b` on the first node (by name) that passes, as the
/// scheduler would with this plugin alone; returns the node.
fn place(cache: &mut Cache, b: PodBuilder) -> Option<String> {
    let res = filter_all(cache, &b.clone().build());
    let n = res
        .iter()
        .find(|(_, o)| **o == "ok")
        .map(|(n, _)| n.clone())?;
    cache.add_pod(b.on(&n).arc());
    Some(n)
}

/// Raw and normalized scores of every node, or None when PreScore skips.
fn scores_with(
    pl: &InterPodAffinity,
    cache: &Cache,
    p: &PodInfo,
) -> Option<BTreeMap<String, (i64, i64)>> {
    let snap = cache.snapshot();
    let mut st = CycleState::new();
    let ids: Vec<NodeId> = snap.node_ids().to_vec();
    let s = pl.pre_score(&mut st, p, snap, &ids);
    if s.is_skip() {
        return None;
    }
    assert!(s.is_success(), "{s}");
    let mut raw: Vec<NodeScore> = ids
        .iter()
        .map(|&id| NodeScore {
            node: id,
            score: pl.score(&st, p, snap.node(id)).unwrap(),
        })
        .collect();
    let before = raw.clone();
    assert!(pl.has_normalize());
    assert!(pl.normalize(&st, p, &mut raw).is_success());
    Some(
        before
            .iter()
            .zip(&raw)
            .map(|(b, a)| {
                (
                    snap.node(b.node).name.as_str().to_owned(),
                    (b.score, a.score),
                )
            })
            .collect(),
    )
}

fn scores(cache: &Cache, p: &PodInfo) -> Option<BTreeMap<String, (i64, i64)>> {
    scores_with(&plugin(), cache, p)
}

fn expect_scores(pairs: &[(&str, i64, i64)]) -> Option<BTreeMap<String, (i64, i64)>> {
    Some(
        pairs
            .iter()
            .map(|(n, r, s)| (n.to_string(), (*r, *s)))
            .collect(),
    )
}

// ---- Filter: the documentation's examples -------------------------------

/// "More practical use-cases": a redis-cache Deployment that keeps its
/// replicas on different nodes, and a web-store Deployment whose replicas
/// avoid each other and each sit with a cache. Every node ends up with one
/// of each; a fourth replica of either finds no node.
#[test]
fn web_store_and_redis_cache() {
    let mut cache = cache_with(
        vec![node("n1").build(), node("n2").build(), node("n3").build()],
        vec![],
    );
    let redis = |i: usize| {
        Aff {
            anti: vec![term(HOST, json!({"app": "store"}))],
            ..Default::default()
        }
        .apply(pod(&format!("redis-cache-{i}")).label("app", "store"))
    };
    let web = |i: usize| {
        Aff {
            req: vec![term(HOST, json!({"app": "store"}))],
            anti: vec![term(HOST, json!({"app": "web-store"}))],
            ..Default::default()
        }
        .apply(pod(&format!("web-server-{i}")).label("app", "web-store"))
    };

    // Before any cache runs, the web servers cannot go anywhere (and this is
    // not a first-pod case: they do not match their own affinity).
    assert_eq!(
        filter_all(&cache, &web(0).build()),
        expect(&[("n1", "affinity"), ("n2", "affinity"), ("n3", "affinity")])
    );

    for (i, want) in ["n1", "n2", "n3"].iter().enumerate() {
        assert_eq!(place(&mut cache, redis(i + 1)).as_deref(), Some(*want));
    }
    // The fourth cache replica: its own anti-affinity and the others'.
    assert_eq!(
        filter_all(&cache, &redis(4).build()),
        expect(&[("n1", "anti"), ("n2", "anti"), ("n3", "anti")])
    );

    assert_eq!(place(&mut cache, web(1)).as_deref(), Some("n1"));
    assert_eq!(
        filter_all(&cache, &web(2).build()),
        expect(&[("n1", "anti"), ("n2", "ok"), ("n3", "ok")])
    );
    assert_eq!(place(&mut cache, web(2)).as_deref(), Some("n2"));
    assert_eq!(place(&mut cache, web(3)).as_deref(), Some("n3"));
    assert_eq!(place(&mut cache, web(4)), None);

    // A new node without a cache: the web server's affinity fails there,
    // unresolvably; the cache replica may go there.
    cache.upsert_node(&node("n4").build()).unwrap();
    assert_eq!(filter_all(&cache, &web(4).build())["n4"], "affinity");
    assert_eq!(filter_all(&cache, &redis(4).build())["n4"], "ok");
}

/// Anti-affinity at zone level keeps a pod out of every node of a zone that
/// holds a matching pod; a node without the zone label is never in conflict.
#[test]
fn zone_level_anti_affinity() {
    let cache = cache_with(
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z1").build(),
            node("n3").label(ZONE, "z2").build(),
            node("n4").build(),
        ],
        vec![pod("s1").label("security", "S1").on("n1").build()],
    );
    let p = Aff {
        anti: vec![term(ZONE, json!({"security": "S1"}))],
        ..Default::default()
    }
    .apply(pod("p"))
    .build();
    assert_eq!(
        filter_all(&cache, &p),
        expect(&[("n1", "anti"), ("n2", "anti"), ("n3", "ok"), ("n4", "ok")])
    );
}

/// The documentation's `with-pod-affinity` pod: required affinity to
/// security=S1 by zone, preferred anti-affinity (weight 100) to security=S2
/// by zone.
#[test]
fn docs_with_pod_affinity_example() {
    let cache = cache_with(
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z1").build(),
            node("n3").label(ZONE, "z2").build(),
            node("n4").label(ZONE, "z3").build(),
            node("n5").build(),
        ],
        vec![
            pod("a").label("security", "S1").on("n1").build(),
            pod("b").label("security", "S2").on("n2").build(),
            pod("c").label("security", "S1").on("n3").build(),
        ],
    );
    let p = Aff {
        req: vec![term(ZONE, json!({"security": "S1"}))],
        pref_anti: vec![weighted(100, term(ZONE, json!({"security": "S2"})))],
        ..Default::default()
    }
    .apply(pod("with-pod-affinity"))
    .build();
    assert_eq!(
        filter_all(&cache, &p),
        expect(&[
            ("n1", "ok"),
            ("n2", "ok"),
            ("n3", "ok"),
            ("n4", "affinity"),
            ("n5", "affinity")
        ])
    );
    assert_eq!(
        scores(&cache, &p),
        expect_scores(&[
            ("n1", -100, 0),
            ("n2", -100, 0),
            ("n3", 0, 100),
            ("n4", 0, 100),
            ("n5", 0, 100)
        ])
    );
}

// ---- Filter: rules -------------------------------------------------------

/// An existing pod's required anti-affinity rejects matching pods in its
/// domain (symmetry), with its own reason and code.
#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let guard = |key: &str| {
        Aff {
            anti: vec![term(key, json!({"app": "web"}))],
            ..Default::default()
        }
        .apply(pod("guard").label("app", "db").on("n1"))
        .build()
    };
    let nodes = || {
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z1").build(),
            node("n3").label(ZONE, "z2").build(),
        ]
    };
    let web = pod("web").label("app", "web").build();
    let other = pod("other").label("app", "api").build();

    let cache = cache_with(nodes(), vec![guard(HOST)]);
    assert_eq!(
        filter_all(&cache, &web),
        expect(&[("n1", "existing"), ("n2", "ok"), ("n3", "ok")])
    );
    let cache = cache_with(nodes(), vec![guard(ZONE)]);
    assert_eq!(
        filter_all(&cache, &web),
        expect(&[("n1", "existing"), ("n2", "existing"), ("n3", "ok")])
    );
    // A pod the guard does not refer to: PreFilter skips.
    let mut st = CycleState::new();
    assert!(
        plugin()
            .pre_filter(&mut st, &other, cache.snapshot())
            .status
            .is_skip()
    );
    // Another namespace is not covered by the guard's default namespaces.
    let web_elsewhere = pod("web").namespace("shop").label("app", "web").build();
    assert!(
        filter_all(&cache, &web_elsewhere)
            .values()
            .all(|o| *o == "ok")
    );
}

/// Filter reports the pod's own affinity first, then its anti-affinity, then
/// existing pods' anti-affinity.
#[test]
fn filter_reason_order() {
    // n1 holds a guard (app=db) refusing app=web pods; n2 holds app=x.
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build(), node("n3").build()],
        vec![
            Aff {
                anti: vec![term(HOST, json!({"app": "web"}))],
                ..Default::default()
            }
            .apply(pod("guard").label("app", "db").on("n1"))
            .build(),
            pod("x").label("app", "x").on("n2").build(),
        ],
    );
    let web = |req: &str, anti: &str| {
        Aff {
            req: vec![term(HOST, json!({"app": req}))],
            anti: vec![term(HOST, json!({"app": anti}))],
            ..Default::default()
        }
        .apply(pod("web").label("app", "web"))
        .build()
    };
    // On n1 all three checks fail: affinity is reported.
    assert_eq!(
        filter_all(&cache, &web("x", "db")),
        expect(&[("n1", "affinity"), ("n2", "ok"), ("n3", "affinity")])
    );
    // Affinity holds on n1: its own anti-affinity is reported before the
    // guard's.
    assert_eq!(
        filter_all(&cache, &web("db", "db")),
        expect(&[("n1", "anti"), ("n2", "affinity"), ("n3", "affinity")])
    );
    // Only the guard's remains.
    assert_eq!(
        filter_all(&cache, &web("db", "none")),
        expect(&[("n1", "existing"), ("n2", "affinity"), ("n3", "affinity")])
    );
}

/// The first pod of a group that has affinity to itself may start it.
#[test]
fn first_pod_of_a_group() {
    let nodes = || {
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z1").build(),
            node("n3").label(ZONE, "z2").build(),
            node("n4").build(),
        ]
    };
    let group = |name: &str, app: &str| {
        Aff {
            req: vec![term(ZONE, json!({"app": "web"}))],
            ..Default::default()
        }
        .apply(pod(name).label("app", app))
    };
    // Nobody matches yet and the pod matches its own term: every node with
    // the zone key passes; the node without it fails.
    let cache = cache_with(nodes(), vec![]);
    assert_eq!(
        filter_all(&cache, &group("w1", "web").build()),
        expect(&[("n1", "ok"), ("n2", "ok"), ("n3", "ok"), ("n4", "affinity")])
    );
    // A pod that does not match its own term gets no such exception.
    assert!(
        filter_all(&cache, &group("o", "other").build())
            .values()
            .all(|o| *o == "affinity")
    );
    // Once a member runs, the rest must join its zone.
    let cache = cache_with(
        nodes(),
        vec![pod("w1").label("app", "web").on("n2").build()],
    );
    assert_eq!(
        filter_all(&cache, &group("w2", "web").build()),
        expect(&[
            ("n1", "ok"),
            ("n2", "ok"),
            ("n3", "affinity"),
            ("n4", "affinity")
        ])
    );
}

/// An existing pod counts toward affinity only if it matches all required
/// terms; all terms' topology keys must be on the node.
#[test]
fn affinity_needs_one_pod_matching_all_terms() {
    let nodes = || {
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z1").build(),
            node("n3").label(ZONE, "z2").build(),
        ]
    };
    let p = || {
        Aff {
            req: vec![
                term(ZONE, json!({"app": "web"})),
                term(HOST, json!({"tier": "front"})),
            ],
            ..Default::default()
        }
        .apply(pod("p"))
        .build()
    };
    // Two pods each matching one term: neither counts; the pod does not
    // match its own terms, so nothing passes.
    let cache = cache_with(
        nodes(),
        vec![
            pod("a").label("app", "web").on("n1").build(),
            pod("b").label("tier", "front").on("n1").build(),
        ],
    );
    assert!(filter_all(&cache, &p()).values().all(|o| *o == "affinity"));
    // One pod matching both: its zone and host both have to be shared.
    let cache = cache_with(
        nodes(),
        vec![
            pod("a")
                .label("app", "web")
                .label("tier", "front")
                .on("n1")
                .build(),
        ],
    );
    assert_eq!(
        filter_all(&cache, &p()),
        expect(&[("n1", "ok"), ("n2", "affinity"), ("n3", "affinity")])
    );
}

// ---- Namespaces ----------------------------------------------------------

#[test]
fn namespace_selector_and_lists() {
    let nodes = || vec![node("n1").build(), node("n2").build()];
    let db = || {
        pod("db")
            .namespace("team-a")
            .label("app", "db")
            .on("n1")
            .build()
    };
    let with = |extra: Value| {
        Aff {
            req: vec![term_with(HOST, json!({"app": "db"}), extra)],
            ..Default::default()
        }
        .apply(pod("p"))
        .build()
    };
    let found = expect(&[("n1", "ok"), ("n2", "affinity")]);
    let none = expect(&[("n1", "affinity"), ("n2", "affinity")]);

    let mut cache = cache_with(nodes(), vec![db()]);
    // Default: the pod's own namespace only.
    assert_eq!(filter_all(&cache, &with(json!({}))), none);
    // Listed namespaces.
    assert_eq!(
        filter_all(&cache, &with(json!({"namespaces": ["team-a"]}))),
        found
    );
    assert_eq!(
        filter_all(&cache, &with(json!({"namespaces": ["team-b"]}))),
        none
    );
    // An empty selector means every namespace.
    assert_eq!(
        filter_all(&cache, &with(json!({"namespaceSelector": {}}))),
        found
    );
    // A selector by namespace labels.
    let by_team = with(json!({"namespaceSelector": {"matchLabels": {"team": "a"}}}));
    assert_eq!(
        filter_all(&cache, &by_team),
        none,
        "namespace labels unknown"
    );
    cache.upsert_namespace(Sym::new("team-a"), Labels::from_pairs([("team", "a")]));
    assert_eq!(filter_all(&cache, &by_team), found);
    cache.upsert_namespace(Sym::new("team-a"), Labels::from_pairs([("team", "b")]));
    assert_eq!(filter_all(&cache, &by_team), none);
    // Listed namespaces and a selector add up.
    let both = with(
        json!({"namespaces": ["team-a"], "namespaceSelector": {"matchLabels": {"team": "x"}}}),
    );
    assert_eq!(filter_all(&cache, &both), found);
}

/// An existing pod's anti-affinity term selects the incoming pod's namespace
/// by that namespace's labels.
#[test]
fn existing_anti_affinity_with_namespace_selector() {
    let guard = Aff {
        anti: vec![term_with(
            HOST,
            json!({"app": "web"}),
            json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}),
        )],
        ..Default::default()
    }
    .apply(pod("guard").namespace("infra").on("n1"))
    .build();
    let mut cache = cache_with(vec![node("n1").build(), node("n2").build()], vec![guard]);
    let web = pod("web").namespace("shop").label("app", "web").build();
    cache.upsert_namespace(Sym::new("shop"), Labels::from_pairs([("env", "prod")]));
    assert_eq!(
        filter_all(&cache, &web),
        expect(&[("n1", "existing"), ("n2", "ok")])
    );
    cache.upsert_namespace(Sym::new("shop"), Labels::from_pairs([("env", "dev")]));
    assert_eq!(
        filter_all(&cache, &web),
        expect(&[("n1", "ok"), ("n2", "ok")])
    );
}

// ---- PreFilter extensions ------------------------------------------------

/// Preemption's what-if: removing the pod that blocks a node unblocks it;
/// adding one blocks it again.
#[test]
fn add_and_remove_pod_update_filter() {
    let guard = Arc::new(
        Aff {
            anti: vec![term(HOST, json!({"app": "web"}))],
            ..Default::default()
        }
        .apply(pod("guard").on("n1"))
        .build(),
    );
    let cache = cache_with(
        vec![node("n1").build(), node("n2").build()],
        vec![(*guard).clone()],
    );
    let snap = cache.snapshot();
    let n1 = snap.node_by_name(Sym::new("n1")).unwrap();
    let web = Aff {
        anti: vec![term(HOST, json!({"app": "db"}))],
        ..Default::default()
    }
    .apply(pod("web").label("app", "web"))
    .build();
    let pl = plugin();
    assert!(pl.has_extensions());
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &web, snap).status.is_success());
    assert_eq!(outcome(&pl.filter(&st, &web, n1)), "existing");
    let mut what_if = st.clone();
    assert!(pl.remove_pod(&mut what_if, &web, &guard, n1).is_success());
    assert_eq!(outcome(&pl.filter(&what_if, &web, n1)), "ok");
    // The original state is untouched.
    assert_eq!(outcome(&pl.filter(&st, &web, n1)), "existing");
    let db = pod("db").label("app", "db").on("n1").build();
    assert!(pl.add_pod(&mut what_if, &web, &db, n1).is_success());
    assert_eq!(outcome(&pl.filter(&what_if, &web, n1)), "anti");
    // Without state (PreFilter skipped) the extensions do nothing.
    let mut empty = CycleState::new();
    assert!(pl.add_pod(&mut empty, &web, &db, n1).is_success());
    assert!(pl.filter(&empty, &web, n1).code() == Code::Error);
}

/// One random pod for the property test: labels and optional terms.
#[derive(Clone, Debug)]
struct PodSpec {
    ns: usize,
    app: usize,
    tier: usize,
    req: Option<(usize, bool)>,
    anti: Option<(usize, bool)>,
    pref: Option<(usize, bool, i32)>,
    pref_anti: Option<(usize, bool, i32)>,
    node: usize,
}

const APPS: [&str; 3] = ["a", "b", "c"];
const NAMESPACES: [&str; 2] = ["default", "other"];

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    let term = || proptest::option::of((0..3usize, any::<bool>()));
    let weighted = || proptest::option::of((0..3usize, any::<bool>(), 1..100i32));
    (
        0..2usize,
        0..3usize,
        0..2usize,
        term(),
        term(),
        weighted(),
        weighted(),
        0..5usize,
    )
        .prop_map(
            |(ns, app, tier, req, anti, pref, pref_anti, node)| PodSpec {
                ns,
                app,
                tier,
                req,
                anti,
                pref,
                pref_anti,
                node,
            },
        )
}

fn build(name: &str, s: &PodSpec, bound: bool) -> PodInfo {
    let key = |zone: bool| if zone { ZONE } else { HOST };
    let mut b = pod(name)
        .namespace(NAMESPACES[s.ns])
        .label("app", APPS[s.app])
        .label("tier", ["front", "back"][s.tier]);
    // Required affinity also reaches namespaces labelled team=x, required
    // anti-affinity every namespace, preferred terms the pod's own.
    b = Aff {
        req: s
            .req
            .iter()
            .map(|(a, z)| {
                term_with(
                    key(*z),
                    json!({"app": APPS[*a]}),
                    json!({"namespaces": [NAMESPACES[s.ns]], "namespaceSelector": {"matchLabels": {"team": "x"}}}),
                )
            })
            .collect(),
        anti: s
            .anti
            .iter()
            .map(|(a, z)| term_with(key(*z), json!({"app": APPS[*a]}), json!({"namespaceSelector": {}})))
            .collect(),
        // The third app's preferred term has no `In` requirement (the
        // memo's label index cannot name its candidates).
        pref: s
            .pref
            .iter()
            .map(|(a, z, w)| {
                let t = if *a == 2 {
                    json!({"labelSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, "topologyKey": key(*z)})
                } else {
                    term(key(*z), json!({"app": APPS[*a]}))
                };
                weighted(*w, t)
            })
            .collect(),
        pref_anti: s
            .pref_anti
            .iter()
            .map(|(a, z, w)| weighted(*w, term(key(*z), json!({"app": APPS[*a]}))))
            .collect(),
    }
    .apply(b);
    if bound {
        b = b.on(&format!("n{}", s.node));
    }
    b.build()
}

fn prop_node(i: usize, zone: Option<&str>) -> k8s_openapi::api::core::v1::Node {
    let b = node(&format!("n{i}"));
    match zone {
        Some(z) => b.label(ZONE, z).build(),
        None => b.build(),
    }
}

fn prop_nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
    // n4 has no zone label.
    (0..5)
        .map(|i| prop_node(i, ["z0", "z0", "z1", "z2"].get(i).copied()))
        .collect()
}

/// A change to the cluster, or a check of the memo against a fresh walk.
#[derive(Clone, Debug)]
enum Step {
    AddPod(PodSpec),
    RemovePod(proptest::sample::Index),
    /// Node, new zone (None removes the label).
    Relabel(usize, Option<usize>),
    RemoveNode(usize),
    AddNode(usize),
    /// Namespace, whether it is labelled team=x.
    Namespace(usize, bool),
    /// Checks the memo for incoming pod `i` of the run.
    Check(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => pod_spec().prop_map(Step::AddPod),
        2 => any::<proptest::sample::Index>().prop_map(Step::RemovePod),
        1 => (0..5usize, proptest::option::of(0..3usize)).prop_map(|(n, z)| Step::Relabel(n, z)),
        1 => (0..5usize).prop_map(Step::RemoveNode),
        1 => (0..5usize).prop_map(Step::AddNode),
        1 => (0..2usize, any::<bool>()).prop_map(|(n, x)| Step::Namespace(n, x)),
        4 => (0..3usize).prop_map(Step::Check),
    ]
}

fn same_counts(a: &Counts, b: &Counts) -> bool {
    a.existing_anti.same_counts(&b.existing_anti)
        && a.affinity.same_counts(&b.affinity)
        && a.anti.same_counts(&b.anti)
        && a.score.same_counts(&b.score)
}

/// The filter state PreFilter would compute from a fresh walk over every
/// node, whether or not it skips.
fn computed_state(cache: &Cache, p: &PodInfo) -> FilterState {
    let snap = cache.snapshot();
    let w = Walker::new(
        p,
        snap.namespace_labels(),
        InterPodAffinityArgs::default(),
        true,
    );
    FilterState::new(&w, &Counts::scan(&w, snap))
}

fn same_state(a: &FilterState, b: &FilterState) -> bool {
    a.existing_anti.same_counts(&b.existing_anti)
        && a.affinity.same_counts(&b.affinity)
        && a.anti.same_counts(&b.anti)
        && a.self_match == b.self_match
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// add_pod / remove_pod leave the same counts, and Filter gives the
    /// same answers, as PreFilter recomputed on the changed cluster.
    #[test]
    fn extensions_match_recomputation(
        existing in proptest::collection::vec(pod_spec(), 0..8),
        incoming in pod_spec(),
        extra in pod_spec(),
        remove_idx in any::<proptest::sample::Index>(),
    ) {
        let pods: Vec<PodInfo> =
            existing.iter().enumerate().map(|(i, s)| build(&format!("e{i}"), s, true)).collect();
        let p = build("incoming", &incoming, false);
        let pl = plugin();
        let base = cache_with(prop_nodes(), pods.clone());
        let snap = base.snapshot();

        // Add `extra`.
        let added = build("extra", &extra, true);
        let mut with_extra = cache_with(prop_nodes(), pods.clone());
        with_extra.add_pod(Arc::new(added.clone()));
        let node = snap.node_by_name(Sym::new(&format!("n{}", extra.node))).unwrap();
        let mut inc = computed_state(&base, &p);
        inc.update_with_pod(&p, &added, &node.labels, 1);
        prop_assert!(same_state(&inc, &computed_state(&with_extra, &p)));

        let mut st = CycleState::new();
        if !pl.pre_filter(&mut st, &p, snap).status.is_skip() {
            prop_assert!(pl.add_pod(&mut st, &p, &added, node).is_success());
            let mut st2 = CycleState::new();
            let r2 = pl.pre_filter(&mut st2, &p, with_extra.snapshot());
            prop_assert!(!r2.status.is_skip());
            for n in with_extra.snapshot().nodes() {
                prop_assert_eq!(pl.filter(&st, &p, n), pl.filter(&st2, &p, n));
            }
        }

        // Remove one existing pod.
        if !pods.is_empty() {
            let i = remove_idx.index(pods.len());
            let gone = &pods[i];
            let mut without = cache_with(prop_nodes(), pods.clone());
            without.remove_pod(&gone.uid);
            let node = snap.node_by_name(gone.bound_node.unwrap()).unwrap();
            let mut dec = computed_state(&base, &p);
            dec.update_with_pod(&p, gone, &node.labels, -1);
            prop_assert!(same_state(&dec, &computed_state(&without, &p)));

            let mut st = CycleState::new();
            if !pl.pre_filter(&mut st, &p, snap).status.is_skip() {
                prop_assert!(pl.remove_pod(&mut st, &p, gone, node).is_success());
                let mut st2 = CycleState::new();
                let r2 = pl.pre_filter(&mut st2, &p, without.snapshot());
                for n in without.snapshot().nodes() {
                    let want = if r2.status.is_skip() { Status::success() } else { pl.filter(&st2, &p, n) };
                    prop_assert_eq!(pl.filter(&st, &p, n), want);
                }
            }
        }
    }

    /// Through any history of pod, node and namespace changes, the memo's
    /// totals equal a fresh walk over every node.
    #[test]
    fn memo_matches_fresh_walk(
        incoming in proptest::collection::vec(pod_spec(), 3),
        steps in proptest::collection::vec(step(), 1..40),
        args in (0..3i32, any::<bool>()),
    ) {
        let args = InterPodAffinityArgs {
            hard_pod_affinity_weight: args.0,
            ignore_preferred_terms_of_existing_pods: args.1,
        };
        let pl = InterPodAffinity::new(args);
        let incoming: Vec<PodInfo> =
            incoming.iter().enumerate().map(|(i, s)| build(&format!("in{i}"), s, false)).collect();
        let mut cache = cache_with(prop_nodes(), vec![]);
        let mut uids: Vec<Arc<str>> = Vec::new();
        let mut signatures = vec![rustc_hash::FxHashMap::default(); incoming.len()];
        for (i, st) in steps.iter().enumerate() {
            match st {
                Step::AddPod(s) => {
                    let p = build(&format!("p{i}"), s, true);
                    uids.push(p.uid.clone());
                    cache.add_pod(Arc::new(p));
                }
                Step::RemovePod(ix) => {
                    if !uids.is_empty() {
                        let uid = uids.swap_remove(ix.index(uids.len()));
                        cache.remove_pod(&uid);
                    }
                }
                Step::Relabel(n, z) => {
                    cache.upsert_node(&prop_node(*n, z.map(|z| ["z0", "z1", "z2"][z]))).unwrap();
                }
                Step::RemoveNode(n) => {
                    cache.remove_node(Sym::new(&format!("n{n}")));
                }
                Step::AddNode(n) => {
                    cache.upsert_node(&prop_node(*n, Some("z1"))).unwrap();
                }
                Step::Namespace(n, x) => {
                    let labels = if *x { Labels::from_pairs([("team", "x")]) } else { Labels::default() };
                    cache.upsert_namespace(Sym::new(NAMESPACES[*n]), labels);
                }
                Step::Check(k) => {
                    let p = &incoming[*k];
                    let snap = cache.snapshot();
                    // What the engine's fast path relies on to keep scores.
                    let checked = crate::common::testkit::check_domain_scores(&pl, p, snap, &signatures[*k]);
                    prop_assert!(checked.is_ok(), "step {}: {:?}", i, checked.err());
                    signatures[*k] = checked.unwrap_or_default();
                    let w = pl.walker(p, snap);
                    prop_assert!(same_counts(&pl.memo.counts(&w, snap, &[]).0, &Counts::scan(&w, snap)), "step {}", i);
                    // Filter by dense domain ids answers as the checks by
                    // topology pair on every node.
                    let mut st = CycleState::new();
                    if !pl.pre_filter(&mut st, p, snap).status.is_skip() {
                        let mut by_pair = st.clone();
                        let fs = by_pair.get_mut::<FilterState>().unwrap();
                        prop_assert!(fs.fast.is_some(), "step {}", i);
                        fs.fast = None;
                        for n in snap.nodes() {
                            prop_assert_eq!(pl.filter(&st, p, n), pl.filter(&by_pair, p, n), "step {} node {}", i, n.name);
                        }
                    }
                    // PreFilter and PreScore go through the memo too.
                    let fresh = InterPodAffinity::new(args);
                    // A new entry counts from the label index's candidates
                    // (or walks every node): the same totals.
                    prop_assert!(same_counts(&fresh.memo.counts(&w, snap, &[]).0, &Counts::scan(&w, snap)), "step {} (new entry)", i);
                    let fresh = InterPodAffinity::new(args);
                    prop_assert_eq!(filter_all_with(&pl, &cache, p), filter_all_with(&fresh, &cache, p));
                    prop_assert_eq!(scores_with(&pl, &cache, p), scores_with(&fresh, &cache, p));
                }
            }
        }
        prop_assert!(pl.memo.len() <= memo::CAPACITY);
    }

    /// Normalized scores stay in 0..=100, keep the order of raw scores, and
    /// put the best node at 100 and the worst at 0.
    #[test]
    fn normalize_keeps_order_and_range(raw in proptest::collection::vec(-10_000i64..10_000, 1..20)) {
        let mut s: Vec<NodeScore> =
            raw.iter().enumerate().map(|(i, &score)| NodeScore { node: NodeId(i as u32), score }).collect();
        normalize_min_max(&mut s);
        let (min, max) = (*raw.iter().min().unwrap(), *raw.iter().max().unwrap());
        for (a, b) in raw.iter().zip(&s) {
            prop_assert!((0..=MAX_NODE_SCORE).contains(&b.score));
            if min == max { prop_assert_eq!(b.score, 0); }
            else if *a == max { prop_assert_eq!(b.score, MAX_NODE_SCORE); }
            else if *a == min { prop_assert_eq!(b.score, 0); }
        }
        for (i, j) in (0..raw.len()).flat_map(|i| (0..raw.len()).map(move |j| (i, j))) {
            if raw[i] <= raw[j] { prop_assert!(s[i].score <= s[j].score); }
        }
    }
}

/// One plugin used on two clusters whose nodes have identical generations
/// but different pods (two caches, as in tests or simulations) must not mix
/// them up; the memo stays bounded.
#[test]
fn memo_never_crosses_snapshots() {
    let pl = plugin();
    let p = Aff {
        anti: vec![term(HOST, json!({"app": "a"}))],
        ..Default::default()
    }
    .apply(pod("p"))
    .build();
    let nodes = || vec![node("n1").build(), node("n2").build()];
    for round in 0..3 {
        let a = cache_with(nodes(), vec![pod("x").label("app", "a").on("n1").build()]);
        assert_eq!(
            filter_all_with(&pl, &a, &p),
            expect(&[("n1", "anti"), ("n2", "ok")]),
            "round {round}"
        );
        drop(a);
        let b = cache_with(nodes(), vec![pod("x").label("app", "b").on("n1").build()]);
        assert_eq!(
            filter_all_with(&pl, &b, &p),
            expect(&[("n1", "ok"), ("n2", "ok")]),
            "round {round}"
        );
    }
    // Many classes: the least recently used are dropped.
    let cache = cache_with(nodes(), vec![]);
    for i in 0..3 * memo::CAPACITY {
        let q = pod(&format!("q{i}"))
            .label("app", &format!("app-{i}"))
            .build();
        filter_all_with(&pl, &cache, &q);
    }
    assert_eq!(pl.memo.len(), memo::CAPACITY);
}

// ---- Scoring -------------------------------------------------------------

/// Preferred affinity adds its weight, preferred anti-affinity subtracts,
/// each over the domain of the matching pod's node.
#[test]
fn scoring_with_weights_and_negative_weights() {
    let cache = cache_with(
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z1").build(),
            node("n3").label(ZONE, "z2").build(),
            node("n4").label(ZONE, "z2").build(),
        ],
        vec![
            pod("a1").label("app", "a").on("n1").build(),
            pod("b1").label("app", "b").on("n2").build(),
            pod("a2").label("app", "a").on("n3").build(),
        ],
    );
    let p = Aff {
        pref: vec![weighted(80, term(HOST, json!({"app": "a"})))],
        pref_anti: vec![weighted(30, term(ZONE, json!({"app": "b"})))],
        ..Default::default()
    }
    .apply(pod("p"))
    .build();
    // n1 = 80 - 30, n2 = -30, n3 = 80, n4 = 0; min -30, max 80.
    assert_eq!(
        scores(&cache, &p),
        expect_scores(&[
            ("n1", 50, 72),
            ("n2", -30, 0),
            ("n3", 80, 100),
            ("n4", 0, 27)
        ])
    );
    // A pod with no terms where no existing pod has any: nothing to score.
    assert_eq!(scores(&cache, &pod("plain").build()), None);
}

/// Existing pods' required affinity terms that the incoming pod matches
/// attract it with hardPodAffinityWeight; their preferred terms count
/// unless ignorePreferredTermsOfExistingPods.
#[test]
fn existing_pods_terms_and_hard_weight() {
    let nodes = || {
        vec![
            node("n1").build(),
            node("n2").build(),
            node("n3").build(),
            node("n4").build(),
        ]
    };
    let existing = vec![
        Aff {
            req: vec![term(HOST, json!({"app": "web"}))],
            ..Default::default()
        }
        .apply(pod("wants-web").label("app", "db").on("n1"))
        .build(),
        Aff {
            pref: vec![weighted(10, term(HOST, json!({"app": "web"})))],
            ..Default::default()
        }
        .apply(pod("likes-web").label("app", "cache").on("n2"))
        .build(),
        Aff {
            pref_anti: vec![weighted(7, term(HOST, json!({"app": "web"})))],
            ..Default::default()
        }
        .apply(pod("dislikes-web").label("app", "batch").on("n3"))
        .build(),
    ];
    let cache = cache_with(nodes(), existing);
    let web = pod("web").label("app", "web").build();
    let with =
        |args: Value| InterPodAffinity::new(InterPodAffinityArgs::from_json(Some(&args)).unwrap());

    // Default weight 1: n1 = 1, n2 = 10, n3 = -7, n4 = 0; diff 17.
    assert_eq!(
        scores(&cache, &web),
        expect_scores(&[("n1", 1, 47), ("n2", 10, 100), ("n3", -7, 0), ("n4", 0, 41)])
    );
    assert_eq!(
        scores_with(&with(json!({"hardPodAffinityWeight": 20})), &cache, &web),
        expect_scores(&[
            ("n1", 20, 100),
            ("n2", 10, 62),
            ("n3", -7, 0),
            ("n4", 0, 25)
        ])
    );
    assert_eq!(
        scores_with(&with(json!({"hardPodAffinityWeight": 0})), &cache, &web),
        expect_scores(&[("n1", 0, 41), ("n2", 10, 100), ("n3", -7, 0), ("n4", 0, 41)])
    );
    // Ignoring existing pods' preferred terms: a pod without its own
    // preferred terms is not scored at all.
    let ignoring = with(json!({"ignorePreferredTermsOfExistingPods": true}));
    assert_eq!(scores_with(&ignoring, &cache, &web), None);
    // With its own preferred term, only required terms of others count.
    let web_pref = Aff {
        pref: vec![weighted(5, term(HOST, json!({"app": "batch"})))],
        ..Default::default()
    }
    .apply(pod("web").label("app", "web"))
    .build();
    assert_eq!(
        scores_with(&ignoring, &cache, &web_pref),
        expect_scores(&[("n1", 1, 20), ("n2", 0, 0), ("n3", 5, 100), ("n4", 0, 0)])
    );
    // A pod nobody refers to and with no terms: PreScore skips.
    assert_eq!(
        scores(&cache, &pod("api").label("app", "api").build()),
        None
    );
}

/// The score PreFilter gathers for PreScore equals PreScore's own, and a
/// stale one (the snapshot changed) is not used.
#[test]
fn prefilter_stash_equals_fresh_prescore() {
    let mut cache = cache_with(
        vec![
            node("n1").label(ZONE, "z1").build(),
            node("n2").label(ZONE, "z2").build(),
        ],
        vec![pod("a").label("app", "a").on("n1").build()],
    );
    let p = Aff {
        anti: vec![term(HOST, json!({"app": "a"}))],
        pref: vec![weighted(9, term(ZONE, json!({"app": "a"})))],
        ..Default::default()
    }
    .apply(pod("p"))
    .build();
    let pl = plugin();
    let score_of = |st: &CycleState, cache: &Cache| -> Vec<i64> {
        cache
            .snapshot()
            .nodes()
            .map(|n| pl.score(st, &p, n).unwrap())
            .collect()
    };
    let fresh = |cache: &Cache| {
        let mut st = CycleState::new();
        assert!(
            pl.pre_score(&mut st, &p, cache.snapshot(), &[])
                .is_success()
        );
        score_of(&st, cache)
    };
    let mut st = CycleState::new();
    assert!(
        pl.pre_filter(&mut st, &p, cache.snapshot())
            .status
            .is_success()
    );
    let mut st2 = st.clone();
    assert!(
        pl.pre_score(&mut st2, &p, cache.snapshot(), &[])
            .is_success()
    );
    assert_eq!(score_of(&st2, &cache), fresh(&cache));
    // The snapshot changes between PreFilter and PreScore.
    cache.add_pod(pod("a2").label("app", "a").on("n2").arc());
    assert!(
        pl.pre_score(&mut st, &p, cache.snapshot(), &[])
            .is_success()
    );
    assert_eq!(score_of(&st, &cache), fresh(&cache));
    assert_eq!(score_of(&st, &cache), vec![9, 9]);
}

#[test]
fn normalize_matches_kube_arithmetic() {
    let run = |raw: &[i64]| -> Vec<i64> {
        let mut s: Vec<NodeScore> = raw
            .iter()
            .enumerate()
            .map(|(i, &score)| NodeScore {
                node: NodeId(i as u32),
                score,
            })
            .collect();
        normalize_min_max(&mut s);
        s.iter().map(|s| s.score).collect()
    };
    assert_eq!(run(&[5, 5, 5]), vec![0, 0, 0]);
    assert_eq!(run(&[-3, -3]), vec![0, 0]);
    assert_eq!(run(&[]), Vec::<i64>::new());
    // kube computes 100 * (29 / 100.0) in floating point: 28.999… → 28.
    assert_eq!(run(&[0, 29, 57, 100]), vec![0, 28, 56, 100]);
    assert_eq!(run(&[-50, 0, 50]), vec![0, 50, 100]);
}

// ---- Registration, hints, construction -----------------------------------

#[test]
fn registers_the_events_that_can_help() {
    let ev = plugin().events_to_register();
    let has = |r: EventResource, a: ActionType| {
        ev.iter()
            .any(|k| k.resource == r && k.actions.intersects(a))
    };
    for a in [
        ActionType::ADD,
        ActionType::DELETE,
        ActionType::UPDATE_POD_LABEL,
    ] {
        assert!(has(EventResource::AssignedPod, a));
    }
    assert!(!has(EventResource::UnscheduledPod, ActionType::ALL));
    assert!(has(EventResource::Node, ActionType::ADD));
    assert!(has(EventResource::Node, ActionType::UPDATE_NODE_LABEL));
    assert!(!has(EventResource::Node, ActionType::UPDATE_NODE_TAINT));
    assert!(has(EventResource::Namespace, ActionType::ADD));
    assert!(has(EventResource::Namespace, ActionType::UPDATE));
    let pl = plugin();
    assert!(!FilterPlugin::is_node_local(&pl));
    assert!(!ScorePlugin::is_node_local(&pl));
}

#[test]
fn queueing_hints() {
    let pl = plugin();
    let target = Aff {
        req: vec![term(HOST, json!({"app": "db"}))],
        anti: vec![term(HOST, json!({"app": "web"}))],
        ..Default::default()
    }
    .apply(pod("t"))
    .build();
    let db = pod("db").label("app", "db").on("n1").build();
    let web = pod("web").label("app", "web").on("n1").build();
    let other = pod("o").label("app", "o").on("n1").build();
    let guard = Aff {
        anti: vec![term(HOST, json!({"app": "x"}))],
        ..Default::default()
    }
    .apply(pod("g").on("n1"))
    .build();
    let target_x = pod("tx").label("app", "x").build();
    let pod_ev = |action, old, new| ClusterEvent {
        resource: EventResource::AssignedPod,
        action,
        object: EventObject::Pod { old, new },
    };
    use QueueingHint::{Queue, Skip};
    let cases = [
        (&target, pod_ev(ActionType::ADD, None, Some(&db)), Queue),
        (&target, pod_ev(ActionType::ADD, None, Some(&web)), Skip),
        (&target, pod_ev(ActionType::DELETE, Some(&web), None), Queue),
        (
            &target,
            pod_ev(ActionType::DELETE, Some(&other), None),
            Skip,
        ),
        (
            &target_x,
            pod_ev(ActionType::DELETE, Some(&guard), None),
            Queue,
        ),
        (
            &target,
            pod_ev(ActionType::UPDATE_POD_LABEL, Some(&other), Some(&db)),
            Queue,
        ),
        (
            &target,
            pod_ev(ActionType::UPDATE_POD_LABEL, Some(&web), Some(&other)),
            Queue,
        ),
        (
            &target,
            pod_ev(ActionType::UPDATE_POD_LABEL, Some(&other), Some(&web)),
            Skip,
        ),
    ];
    for (i, (p, ev, want)) in cases.iter().enumerate() {
        assert_eq!(pl.queueing_hint(p, ev), *want, "case {i}");
    }
    let cache = cache_with(
        vec![node("n1").build(), node("n2").label(ZONE, "z").build()],
        vec![],
    );
    let (n1, n2) = (
        cache.snapshot().node_by_name(Sym::new("n1")).unwrap(),
        cache.snapshot().node_by_name(Sym::new("n2")).unwrap(),
    );
    let node_ev = |old, new| ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::UPDATE_NODE_LABEL,
        object: EventObject::Node { old, new },
    };
    assert_eq!(pl.queueing_hint(&target, &node_ev(None, Some(n1))), Queue);
    assert_eq!(
        pl.queueing_hint(&target, &node_ev(Some(n1), Some(n2))),
        Queue
    );
    assert_eq!(
        pl.queueing_hint(&target, &node_ev(Some(n1), Some(n1))),
        Skip
    );
}

struct NullCluster;

#[async_trait::async_trait]
impl strata_scheduler::sdk::ClusterPort for NullCluster {
    async fn bind(&self, _: &PodInfo, _: Sym) -> Result<(), strata_scheduler::cluster::BindError> {
        Ok(())
    }
    async fn update_pod_condition(
        &self,
        _: &PodInfo,
        _: strata_scheduler::cluster::PodCondition,
    ) -> Result<(), strata_scheduler::cluster::ClusterError> {
        Ok(())
    }
    async fn delete_pod(
        &self,
        _: &PodInfo,
        _: &str,
    ) -> Result<(), strata_scheduler::cluster::ClusterError> {
        Ok(())
    }
    fn record_event(&self, _: strata_scheduler::cluster::PodEvent) {}
}

#[test]
fn factory_builds_and_rejects_bad_args() {
    let handle = Handle {
        cluster: Arc::new(NullCluster),
        waiting: Default::default(),
        clock: Arc::new(strata_scheduler::clock::ManualClock::default()),
        scheduler_name: Sym::new("strata-scheduler"),
        preemption: Default::default(),
    };
    let p = factory(None, &handle).unwrap();
    assert_eq!(p.name(), NAME);
    assert!(p.as_pre_filter().is_some() && p.as_filter().is_some());
    assert!(p.as_pre_score().is_some() && p.as_score().is_some());
    for bad in [
        json!({"hardPodAffinityWeight": 101}),
        json!({"hardPodAffinityWeight": -1}),
    ] {
        let err = factory(Some(&bad), &handle).err().expect("rejected");
        assert_eq!(err.field, "hardPodAffinityWeight");
    }
}

/// Timing at the target scale: 16,000 nodes, 100,000 existing pods, all
/// with anti-affinity, then replicas of one workload scheduled one after the
/// other, each placed before the next cycle. Run with
/// `cargo test -p strata-plugins --release --lib inter_pod_affinity::tests::scale -- --ignored --nocapture`.
#[test]
#[ignore]
fn scale() {
    use std::time::{Duration, Instant};
    let nodes: Vec<_> = (0..16_000)
        .map(|i| {
            node(&format!("node-{i}"))
                .label(ZONE, &format!("zone-{}", i % 8))
                .build()
        })
        .collect();
    let mut cache = cache_with(nodes, vec![]);
    let apps = 2_000;
    let templates: Vec<PodInfo> = (0..apps)
        .map(|a| {
            Aff {
                anti: vec![term(HOST, json!({"app": format!("app-{a}")}))],
                pref_anti: vec![weighted(10, term(ZONE, json!({"app": format!("app-{a}")})))],
                ..Default::default()
            }
            .apply(
                pod(&format!("t{a}"))
                    .label("app", &format!("app-{a}"))
                    .on("node-0"),
            )
            .build()
        })
        .collect();
    for i in 0..100_000usize {
        let mut p = templates[i % apps].with_identity(&format!("u{i}"), &format!("p{i}"));
        p.bound_node = Some(Sym::new(&format!("node-{}", (i * 7919) % 16_000)));
        cache.add_pod(Arc::new(p));
    }
    let pl = plugin();
    let mut replica = templates[17].clone();
    replica.bound_node = None;

    let t = Instant::now();
    let w = pl.walker(&replica, cache.snapshot());
    std::hint::black_box(Counts::scan(&w, cache.snapshot()));
    println!("fresh walk over 100k pods: {:?}", t.elapsed());

    let mut first = Duration::ZERO;
    let mut steady = Duration::ZERO;
    let mut phases = [Duration::ZERO; 4];
    let replicas = 200;
    for r in 0..replicas {
        let p = replica.with_identity(&format!("r{r}"), &format!("r{r}"));
        let t = Instant::now();
        let snap = cache.snapshot();
        let mut st = CycleState::new();
        assert!(pl.pre_filter(&mut st, &p, snap).status.is_success());
        let t1 = Instant::now();
        let mut ok = Vec::with_capacity(snap.num_nodes());
        for n in snap.nodes() {
            if pl.filter(&st, &p, n).is_success() {
                ok.push(n.id);
            }
        }
        let t2 = Instant::now();
        assert!(pl.pre_score(&mut st, &p, snap, &ok).is_success());
        let t3 = Instant::now();
        let mut best = (i64::MIN, ok[0]);
        for &id in &ok {
            let s = pl.score(&st, &p, snap.node(id)).unwrap();
            if s > best.0 {
                best = (s, id);
            }
        }
        let elapsed = t.elapsed();
        if r > 0 {
            for (ph, d) in phases
                .iter_mut()
                .zip([t1 - t, t2 - t1, t3 - t2, t.elapsed() - (t3 - t)])
            {
                *ph += d;
            }
        }
        if r == 0 {
            first = elapsed
        } else {
            steady += elapsed
        }
        let mut placed = p.clone();
        placed.bound_node = Some(snap.node(best.1).name);
        cache.add_pod(Arc::new(placed));
    }
    println!(
        "InterPodAffinity cycle (PreFilter, Filter x16k, PreScore, Score): first {first:?}, then {:?} per replica",
        steady / (replicas - 1)
    );
    let n = replicas - 1;
    println!(
        "  PreFilter {:?}, Filter {:?}, PreScore {:?}, Score {:?}",
        phases[0] / n,
        phases[1] / n,
        phases[2] / n,
        phases[3] / n
    );
}
