//! Choosing devices on one node for one pod, by identity.
//!
//! [`plan`] is deterministic: for the same node state, ask and policy it
//! gives the same grants, so Score can rank a node by the plan Reserve will
//! later take. It allocates nothing while a node has at most
//! [`INLINE_DEVICES`] devices.
//!
//! For each container ask, in order:
//! 1. candidates are the devices of the kind that pass the pod's type/UUID
//!    filters and still [`fit`](super::model::Device::fits) the per-device
//!    share on top of what earlier containers of this pod took;
//! 2. one device: the policy's best (`Binpack`: least free; `Spread`: most
//!    free; `Fragmentation`: least increase of the node's fragmentation for
//!    the mix, ties as `Binpack`);
//! 3. several devices: interconnect groups first. The smallest group that
//!    can take them all (best fit, so large islands stay whole for large
//!    pods); else the fewest groups, largest first. Within a group, by the
//!    policy, then devices sharing a PCIe switch together, then index.

use super::args::{DevicePolicy, KindSpec};
use super::fragmentation::{Class, ClassStat, fragmentation_after_change, node_fragmentation};
use super::model::{Device, Grant, Grants, NodeDevices, Usage};
use super::request::{ContainerAsk, PodAsk};
use smallvec::SmallVec;
use strata_scheduler::rng::mix64;

/// Devices per node handled without heap allocation.
pub const INLINE_DEVICES: usize = 16;

/// Scratch usage vector.
pub type UsageBuf = SmallVec<[Usage; INLINE_DEVICES]>;

/// Why a node cannot take the pod's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A static reason.
    Reason(&'static str),
    /// The node's device annotation is malformed.
    NodeError,
}

/// Reason when type/UUID filters exclude every device of the node.
pub const REASON_FILTERED: &str =
    "node(s) had no device matching the pod's device type or UUID selection";
/// Reason when an absolute memory ask meets devices of unknown memory.
pub const REASON_MEMORY_UNKNOWN: &str =
    "node(s) do not report device memory (annotate strata.io/devices) for a memory ask in MiB";

/// Fragmentation context: the mix and the node's cpu and memory left once
/// the pod is placed.
#[derive(Clone, Copy)]
pub struct FragCtx<'a> {
    /// The expected workload mix.
    pub mix: &'a [Class],
    /// The node's class statistics before the pod, if cached.
    pub stats: Option<&'a [ClassStat]>,
    /// Cpu (millicores) free after placing the pod.
    pub cpu_free_after: i64,
    /// Memory (bytes) free after placing the pod.
    pub mem_free_after: i64,
}

#[inline]
fn per_device(ask: &ContainerAsk, d: &Device) -> Option<u64> {
    ask.memory.units(d.memory, d.memory_known)
}

/// Plans `ask` on `node`. On success `out` holds the grants and `used` the
/// node's use with them applied. `kinds` gives reason strings.
pub fn plan(
    node: &NodeDevices,
    ask: &PodAsk,
    kinds: &[KindSpec],
    policy: DevicePolicy,
    frag: Option<&FragCtx<'_>>,
    used: &mut UsageBuf,
    out: &mut Grants,
) -> Result<(), Reject> {
    used.clear();
    used.extend_from_slice(&node.used);
    out.clear();
    if node.error.is_some() {
        return Err(Reject::NodeError);
    }
    for c in &ask.containers {
        let kind = &kinds[c.kind as usize];
        if node.per_kind.get(c.kind as usize).copied().unwrap_or(0) == 0 {
            return Err(Reject::Reason(kind.reason_none));
        }
        let filters = ask.filters_of(c.kind);
        let mut cands: SmallVec<[u16; INLINE_DEVICES]> = SmallVec::new();
        let mut any_allowed = false;
        let mut memory_unknown = false;
        for (i, d) in node.devices.iter().enumerate() {
            if d.kind != c.kind {
                continue;
            }
            if let Some(f) = filters
                && !f.allows(&d.model, &d.id)
            {
                continue;
            }
            any_allowed = true;
            let Some(mem) = per_device(c, d) else {
                memory_unknown = true;
                continue;
            };
            if d.fits(&used[i], mem, c.cores, c.exclusive) {
                cands.push(i as u16);
            }
        }
        if (cands.len() as u32) < c.count {
            return Err(Reject::Reason(if !any_allowed {
                REASON_FILTERED
            } else if memory_unknown && cands.is_empty() {
                REASON_MEMORY_UNKNOWN
            } else {
                kind.reason_insufficient
            }));
        }
        let start = out.len();
        if c.count == 1 {
            // Cached statistics describe the node before this pod: usable
            // only for the pod's first grant.
            let fresh = out.is_empty();
            let best = choose_one(node, c, &cands, policy, frag, fresh, ask.seed, used);
            push(node, c, best, used, out);
        } else {
            choose_many(node, c, &mut cands, policy, ask.seed, used, out);
        }
        debug_assert_eq!(out.len() - start, c.count as usize);
    }
    Ok(())
}

fn push(node: &NodeDevices, c: &ContainerAsk, i: u16, used: &mut UsageBuf, out: &mut Grants) {
    let d = &node.devices[i as usize];
    let g = Grant {
        container: c.container,
        device: i,
        memory: per_device(c, d).unwrap_or(0),
        cores: c.cores,
        exclusive: c.exclusive,
    };
    used[i as usize].add(&g);
    out.push(g);
}

/// Sort key of a device under a policy: smaller is preferred.
#[inline]
fn key(policy: DevicePolicy, d: &Device, u: &Usage, seed: u64, i: u16) -> i64 {
    let free = d.free_percent(u) as i64;
    match policy {
        DevicePolicy::Spread => -free,
        DevicePolicy::Binpack | DevicePolicy::Fragmentation => free,
        DevicePolicy::Random => {
            (mix64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 2) as i64
        }
    }
}

// The arguments are the planner's state, passed down without a wrapper.
#[allow(clippy::too_many_arguments)]
fn choose_one(
    node: &NodeDevices,
    c: &ContainerAsk,
    cands: &[u16],
    policy: DevicePolicy,
    frag: Option<&FragCtx<'_>>,
    fresh: bool,
    seed: u64,
    used: &mut UsageBuf,
) -> u16 {
    let by_key = |i: &u16, used: &UsageBuf| {
        (
            key(
                policy,
                &node.devices[*i as usize],
                &used[*i as usize],
                seed,
                *i,
            ),
            *i,
        )
    };
    if let (DevicePolicy::Fragmentation, Some(f)) = (policy, frag)
        && !c.exclusive
        && cands.len() > 1
        && !f.mix.is_empty()
    {
        let mut best: Option<(f64, (i64, u16))> = None;
        // Devices in the same state give the same result: try one of each.
        let mut tried: SmallVec<[(u32, Usage); INLINE_DEVICES]> = SmallVec::new();
        for &i in cands {
            let d = &node.devices[i as usize];
            let state = (
                d.memory as u32 ^ d.cores.rotate_left(16) ^ d.shares.rotate_left(24),
                used[i as usize],
            );
            if tried.contains(&state) {
                continue;
            }
            tried.push(state);
            let g = Grant {
                container: c.container,
                device: i,
                memory: per_device(c, d).unwrap_or(0),
                cores: c.cores,
                exclusive: c.exclusive,
            };
            let before = used[i as usize];
            let mut after = before;
            after.add(&g);
            let f_after = match f.stats {
                Some(st) if fresh => fragmentation_after_change(
                    f.mix,
                    st,
                    d,
                    &before,
                    &after,
                    f.cpu_free_after,
                    f.mem_free_after,
                ),
                _ => {
                    used[i as usize] = after;
                    let v = node_fragmentation(
                        f.mix,
                        &node.devices,
                        used,
                        f.cpu_free_after,
                        f.mem_free_after,
                    );
                    used[i as usize] = before;
                    v
                }
            };
            let k = by_key(&i, used);
            let better = match &best {
                None => true,
                Some((bf, bk)) => {
                    f_after < *bf - 1e-9 || ((f_after - *bf).abs() <= 1e-9 && k < *bk)
                }
            };
            if better {
                best = Some((f_after, k));
            }
        }
        if let Some((_, (_, i))) = best {
            return i;
        }
    }
    cands
        .iter()
        .copied()
        .min_by_key(|i| by_key(i, used))
        .unwrap_or(cands[0])
}

fn choose_many(
    node: &NodeDevices,
    c: &ContainerAsk,
    cands: &mut SmallVec<[u16; INLINE_DEVICES]>,
    policy: DevicePolicy,
    seed: u64,
    used: &mut UsageBuf,
    out: &mut Grants,
) {
    let want = c.count as usize;
    // Candidates per group and per PCIe switch.
    let mut groups: SmallVec<[(u16, u16); 8]> = SmallVec::new();
    let mut pcies: SmallVec<[(u16, u16); 8]> = SmallVec::new();
    for &i in cands.iter() {
        let d = &node.devices[i as usize];
        match groups.iter_mut().find(|(g, _)| *g == d.group) {
            Some(e) => e.1 += 1,
            None => groups.push((d.group, 1)),
        }
        match pcies.iter_mut().find(|(p, _)| *p == d.pcie) {
            Some(e) => e.1 += 1,
            None => pcies.push((d.pcie, 1)),
        }
    }
    let count_of = |list: &SmallVec<[(u16, u16); 8]>, g: u16| {
        list.iter().find(|(x, _)| *x == g).map(|x| x.1).unwrap_or(0)
    };
    // Group order: a single group that fits all (the smallest such), else
    // largest groups first.
    let fitting = groups
        .iter()
        .filter(|(_, n)| *n as usize >= want)
        .min_by_key(|(g, n)| (*n, *g))
        .map(|(g, _)| *g);
    let group_rank = |g: u16| -> (u8, i32, u16) {
        match fitting {
            Some(f) if f == g => (0, 0, g),
            Some(_) => (1, 0, g),
            None => (0, -(count_of(&groups, g) as i32), g),
        }
    };
    cands.sort_unstable_by_key(|&i| {
        let d = &node.devices[i as usize];
        let u = &used[i as usize];
        (
            group_rank(d.group),
            key(policy, d, u, seed, i),
            -(count_of(&pcies, d.pcie) as i32),
            d.pcie,
            i,
        )
    });
    for &i in cands.iter().take(want) {
        push(node, c, i, used, out);
    }
}

/// Grants on `node` read back from device ids (an assignment annotation):
/// `None` when an id is unknown or a share no longer fits.
pub fn grants_from_ids(node: &NodeDevices, items: &[super::assign::Held]) -> Option<Grants> {
    let mut used: UsageBuf = node.used.iter().copied().collect();
    let mut out = Grants::new();
    for (container, id, memory, cores, exclusive) in items {
        let (container, memory, cores, exclusive) = (*container, *memory, *cores, *exclusive);
        let idx = node.index_of(id)?;
        let d = &node.devices[idx as usize];
        if !d.fits(&used[idx as usize], memory, cores, exclusive) {
            return None;
        }
        let g = Grant {
            container,
            device: idx,
            memory,
            cores,
            exclusive,
        };
        used[idx as usize].add(&g);
        out.push(g);
    }
    Some(out)
}
