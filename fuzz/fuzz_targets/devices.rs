//! Device annotations, with the default device kinds (NVIDIA with HAMi's
//! names, Ascend, AMD): a Node's inventory (`strata.io/devices`, HAMi's
//! `hami.io/node-nvidia-register` in its JSON and its text format, or
//! whole devices counted from allocatable) through `NodeDevices::inventory`;
//! a Pod's asks (device, memory, compute resources per container; policy,
//! type and UUID annotations) through `PodAsk::compile`; and what a bound
//! pod holds, read back from `strata.io/device-assignment` or HAMi's
//! assignment annotations (`assign::read_back`, `alloc::grants_from_ids`),
//! as the plugin's reconcile does. Both objects go through the real
//! compile path (`NodeInfo::set_node`, `PodInfo::compile`).
//!
//! Besides no panic, it checks the plugin's own invariants: an inventory,
//! and one with grants applied, passes `NodeDevices::check` (use equals
//! the grants, nothing over capacity); a plan gives each container the
//! devices it asked for; and the assignment annotations a plan writes read
//! back to the same devices and shares.
//!
//! Input: the line format of `strata_fuzz` (`node`, `alloc`, `annotation`,
//! `label`, `container`, `limit`, `request`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use strata_fuzz::Objects;
use strata_plugins::devices::alloc::{UsageBuf, grants_from_ids, plan};
use strata_plugins::devices::args::{DevicePolicy, DevicesArgs};
use strata_plugins::devices::assign::{annotations, matches_ask, read_back};
use strata_plugins::devices::model::{Grants, NodeDevices};
use strata_plugins::devices::request::PodAsk;
use strata_scheduler::intern::Sym;
use strata_scheduler::model::{NodeId, NodeInfo, PodInfo};

static ARGS: LazyLock<DevicesArgs> =
    LazyLock::new(|| DevicesArgs::parse(None).expect("default device args"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let o = Objects::parse(text);
    let args = &*ARGS;
    let kinds = &args.kinds;
    let mut node = NodeInfo::placeholder(NodeId(0), Sym::new("node-0"));
    if node.set_node(&o.node()).is_err() {
        return;
    }
    let nd = NodeDevices::inventory(&node, kinds);
    nd.check().expect("a fresh inventory is consistent");
    let Ok(pod) = PodInfo::compile(&o.pod()) else {
        return;
    };
    let Ok(ask) = PodAsk::compile(&pod, args) else {
        return;
    };
    // The pod as already bound, its devices read back from its annotations.
    if let Some(held) = read_back(&pod, kinds)
        && matches_ask(&held, &ask)
        && let Some(grants) = grants_from_ids(&nd, &held)
    {
        let mut with = nd.clone();
        with.apply(pod.uid.clone(), grants);
        with.check().expect("grants read back fit the inventory");
    }
    // The pod planned anew under each policy; Reserve's annotations read
    // back to the same devices and shares.
    let want: u32 = ask.containers.iter().map(|c| c.count).sum();
    for policy in [
        DevicePolicy::Binpack,
        DevicePolicy::Spread,
        DevicePolicy::Random,
    ] {
        let mut used = UsageBuf::new();
        let mut out = Grants::new();
        if plan(&nd, &ask, kinds, policy, None, &mut used, &mut out).is_err() {
            continue;
        }
        assert_eq!(
            out.len() as u32,
            want,
            "{policy:?}: one grant per device asked"
        );
        let mut with = nd.clone();
        with.apply(pod.uid.clone(), out.clone());
        with.check().expect("planned grants fit the inventory");
        let written = annotations(&pod, "node-0", &nd, &out, kinds, 0);
        let mut bound = pod.clone();
        let mut all = (*pod.annotations).clone();
        all.extend(written);
        bound.annotations = Arc::new(all);
        let held = read_back(&bound, kinds).expect("the written assignment reads back");
        assert!(matches_ask(&held, &ask), "{policy:?}: read back {held:?}");
        let again = grants_from_ids(&nd, &held).expect("the written grants fit again");
        let shares = |g: &Grants| -> Vec<_> {
            g.iter()
                .map(|g| (g.device, g.memory, g.cores, g.exclusive))
                .collect()
        };
        assert_eq!(shares(&again), shares(&out), "{policy:?}");
    }
});
