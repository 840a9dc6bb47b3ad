//! Shared test vectors: protocol messages encoded by this side, committed
//! in `proto/testdata/*.binpb`, and decoded and checked by the Go SDK's
//! `vectors_test.go` too (which also answers the Filter request and must
//! produce `filter_response.binpb` byte for byte).
//!
//! `STRATA_UPDATE_VECTORS=1 cargo test -p strata-remote --test vectors`
//! rewrites them after a deliberate change.

use prost::Message;
use std::collections::HashMap;
use std::path::PathBuf;
use strata_remote::pb;

const SESSION: u64 = 0x0123_4567_89ab_cdef;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/testdata")
}

fn one(k: &str, v: &str) -> HashMap<String, String> {
    HashMap::from([(k.to_owned(), v.to_owned())])
}

fn pod() -> pb::Pod {
    pb::Pod {
        uid: "u1".into(),
        namespace: "default".into(),
        name: "p1".into(),
        labels: one("app", "web"),
        annotations: HashMap::new(),
        priority: 5,
        requests: HashMap::from([("cpu".to_owned(), 1000)]),
    }
}

fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let handshake = pb::HandshakeRequest {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        plugin_name: "VendorHealth".into(),
        profile: "default-scheduler".into(),
        plugin_config_json: r#"{"degradedScore":20}"#.into(),
        session: SESSION,
    };
    let full = pb::FilterRequest {
        delta: Some(pb::SnapshotDelta {
            session: SESSION,
            base_version: 0,
            version: 1,
            full: true,
            nodes: vec![
                pb::Node {
                    id: 0,
                    name: "n0".into(),
                    labels: one("zone", "a"),
                    annotations: one("vendor.example.com/health", "ok"),
                    taints: vec![pb::Taint {
                        key: "gpu".into(),
                        value: String::new(),
                        effect: "NoSchedule".into(),
                    }],
                    unschedulable: false,
                    allocatable: HashMap::from([("cpu".to_owned(), 4000)]),
                    requested: HashMap::new(),
                    pods: vec![pb::PodRef {
                        uid: "u0".into(),
                        namespace: "default".into(),
                        name: "p0".into(),
                        priority: 0,
                        requests: HashMap::from([("cpu".to_owned(), 500)]),
                    }],
                },
                pb::Node {
                    id: 3,
                    name: "n3".into(),
                    annotations: one("vendor.example.com/health", "failed"),
                    ..Default::default()
                },
            ],
            removed_nodes: vec![],
        }),
        pod: Some(pod()),
        candidates: Some(pb::NodeSet {
            runs: vec![0, 1, 3, 1],
        }),
        with_scores: false,
    };
    let idle = pb::FilterRequest {
        delta: Some(pb::SnapshotDelta {
            session: SESSION,
            base_version: 1,
            version: 1,
            ..Default::default()
        }),
        pod: Some(pod()),
        candidates: Some(pb::NodeSet {
            runs: vec![0, 1, 3, 1],
        }),
        with_scores: false,
    };
    // A node-local plugin's steady state: the one node that changed, in the
    // delta and as the only candidate.
    let changed = pb::FilterRequest {
        delta: Some(pb::SnapshotDelta {
            session: SESSION,
            base_version: 1,
            version: 2,
            full: false,
            nodes: vec![pb::Node {
                id: 3,
                name: "n3".into(),
                annotations: one("vendor.example.com/health", "ok"),
                ..Default::default()
            }],
            removed_nodes: vec![],
        }),
        pod: Some(pod()),
        candidates: Some(pb::NodeSet { runs: vec![3, 1] }),
        with_scores: false,
    };
    // A node-local plugin that scores with Filter: node 3 failed again, and
    // the answer scores the candidate that passes (node 0) only.
    let with_scores = pb::FilterRequest {
        delta: Some(pb::SnapshotDelta {
            session: SESSION,
            base_version: 2,
            version: 3,
            full: false,
            nodes: vec![pb::Node {
                id: 3,
                name: "n3".into(),
                annotations: one("vendor.example.com/health", "failed"),
                ..Default::default()
            }],
            removed_nodes: vec![],
        }),
        pod: Some(pod()),
        candidates: Some(pb::NodeSet {
            runs: vec![0, 1, 3, 1],
        }),
        with_scores: true,
    };
    let with_scores_resp = pb::FilterResponse {
        resync: false,
        status: Some(pb::Result::default()),
        rejections: vec![pb::Rejection {
            code: pb::Code::Unschedulable as i32,
            reason: "node(s) reported failed by the vendor agent".into(),
            node_ids: vec![3],
        }],
        scores: Some(pb::FilterScores {
            status: Some(pb::Result::default()),
            runs: vec![pb::ScoreRun {
                score: 100,
                count: 1,
            }],
        }),
    };
    // What a plugin serving Filter and Score answers the handshake with
    // (the Go SDK's default requeue events).
    let handshake_resp = pb::HandshakeResponse {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        extension_points: vec![
            pb::ExtensionPoint::Filter as i32,
            pb::ExtensionPoint::Score as i32,
        ],
        requeue_events: vec![pb::RequeueEvent {
            resource: pb::EventResource::Node as i32,
            actions: vec![pb::EventAction::Add as i32, pb::EventAction::Update as i32],
        }],
        error: String::new(),
        node_local: false,
        scores_with_filter: true,
    };
    let filter_resp = pb::FilterResponse {
        resync: false,
        status: Some(pb::Result::default()),
        rejections: vec![pb::Rejection {
            code: pb::Code::Unschedulable as i32,
            reason: "node(s) reported failed by the vendor agent".into(),
            node_ids: vec![3],
        }],
        scores: None,
    };
    let score_req = pb::ScoreRequest {
        delta: idle.delta.clone(),
        pod: Some(pod()),
        nodes: Some(pb::NodeSet { runs: vec![0, 1] }),
    };
    let score_resp = pb::ScoreResponse {
        resync: false,
        status: Some(pb::Result::default()),
        runs: vec![pb::ScoreRun {
            score: 100,
            count: 1,
        }],
    };
    vec![
        ("handshake_request", handshake.encode_to_vec()),
        ("filter_request_full", full.encode_to_vec()),
        ("filter_request_idle", idle.encode_to_vec()),
        ("filter_request_changed", changed.encode_to_vec()),
        ("filter_response", filter_resp.encode_to_vec()),
        ("score_request", score_req.encode_to_vec()),
        ("score_response", score_resp.encode_to_vec()),
        ("handshake_response", handshake_resp.encode_to_vec()),
        ("filter_request_scores", with_scores.encode_to_vec()),
        ("filter_response_scores", with_scores_resp.encode_to_vec()),
    ]
}

#[test]
fn encoded_messages_match_the_committed_vectors() {
    let update = std::env::var_os("STRATA_UPDATE_VECTORS").is_some();
    for (name, bytes) in vectors() {
        let path = dir().join(format!("{name}.binpb"));
        if update {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (STRATA_UPDATE_VECTORS=1 writes it)",
                path.display()
            )
        });
        assert_eq!(committed, bytes, "{name}: the encoding changed");
    }
}

#[test]
fn the_vectors_decode_to_what_they_say() {
    let read = |n: &str| std::fs::read(dir().join(format!("{n}.binpb"))).unwrap();
    let h = pb::HandshakeRequest::decode(read("handshake_request").as_slice()).unwrap();
    assert_eq!(h.session, SESSION);
    assert_eq!(h.plugin_config_json, r#"{"degradedScore":20}"#);
    let f = pb::FilterRequest::decode(read("filter_request_full").as_slice()).unwrap();
    let d = f.delta.unwrap();
    assert!(d.full);
    assert_eq!(d.nodes[0].pods[0].requests["cpu"], 500);
    assert_eq!(
        strata_remote::convert::expand(&f.candidates.unwrap(), 10).unwrap(),
        vec![0, 3]
    );
    // The idle request is what an unchanged cluster costs per cycle.
    assert!(read("filter_request_idle").len() < 80);
    let c = pb::FilterRequest::decode(read("filter_request_changed").as_slice()).unwrap();
    let d = c.delta.unwrap();
    assert_eq!((d.base_version, d.version, d.full), (1, 2, false));
    assert_eq!(d.nodes[0].id, 3);
    assert_eq!(
        strata_remote::convert::expand(&c.candidates.unwrap(), 10).unwrap(),
        vec![3]
    );
    assert!(!c.with_scores);
    let h = pb::HandshakeResponse::decode(read("handshake_response").as_slice()).unwrap();
    assert!(h.scores_with_filter && !h.node_local);
    let w = pb::FilterRequest::decode(read("filter_request_scores").as_slice()).unwrap();
    assert!(w.with_scores);
    let r = pb::FilterResponse::decode(read("filter_response_scores").as_slice()).unwrap();
    let s = r.scores.unwrap();
    assert_eq!((s.runs[0].score, s.runs[0].count), (100, 1));
}
