//! Allocating a pod's claims on one node: which devices, for which request.
//!
//! The search is depth-first over the claims of the pod, their requests in
//! order and, for a request with `firstAvailable`, its alternatives in
//! order (the first that can be satisfied wins, as Kubernetes prefers).
//! Devices are tried in index order so the same state gives the same
//! answer in Filter and Reserve. A device is given at most once across the
//! pod's claims and the claims already allocated in the cluster, unless it
//! allows multiple allocations (consumable capacity, KEP-5075), in which
//! case what each allocation consumes is summed against its capacity; admin
//! access takes a device without using it up. `matchAttribute` and
//! `distinctAttribute` constraints are checked as devices are chosen.
//!
//! The search gives up after [`MAX_STEPS`] steps, so a pathological claim
//! costs a bounded amount per node.

use super::index::{Bits, Capacity, Index};
use k8s_openapi::api::resource::v1 as resv1;
use smallvec::SmallVec;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Steps of the search per node before giving up.
pub const MAX_STEPS: u32 = 20_000;

/// How many devices a request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exactly this many.
    Count(u32),
    /// Every matching device on the node.
    All,
}

/// One way to satisfy a request (the request itself, or one of its
/// `firstAvailable` alternatives).
#[derive(Clone, Debug)]
pub struct Alt {
    /// Name in the allocation result (`req` or `req/sub`).
    pub result_name: String,
    /// Matching devices (class and request selectors), cluster-wide.
    pub cands: Arc<Bits>,
    /// How many.
    pub mode: Mode,
    /// Admin access.
    pub admin: bool,
    /// Capacity asked per device (qualified name, milli-units).
    pub capacity: Vec<(String, i128)>,
    /// Tolerations of device taints.
    pub tolerations: Vec<resv1::DeviceToleration>,
}

/// A request of a claim with its alternatives.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The request's name.
    pub name: String,
    /// In order of preference.
    pub alts: Vec<Alt>,
}

/// A constraint across requests.
#[derive(Clone, Debug)]
pub struct Constraint {
    /// Requests it covers (empty: all).
    pub requests: Vec<String>,
    /// All chosen devices have the same value of this attribute.
    pub match_attr: Option<String>,
    /// All chosen devices have different values of this attribute.
    pub distinct_attr: Option<String>,
}

/// A claim to allocate.
#[derive(Clone, Debug)]
pub struct ClaimPlan {
    /// Requests.
    pub slots: Vec<Slot>,
    /// Constraints.
    pub constraints: Vec<Constraint>,
}

impl ClaimPlan {
    /// Feeds `h` with what the allocation of this plan depends on: two
    /// plans with equal signatures over one index allocate alike. The
    /// candidate sets count by identity (the plugin caches one per class
    /// and selectors for the life of an index).
    pub fn signature(&self, h: &mut impl Hasher) {
        self.slots.len().hash(h);
        for s in &self.slots {
            s.name.hash(h);
            s.alts.len().hash(h);
            for a in &s.alts {
                a.result_name.hash(h);
                (Arc::as_ptr(&a.cands) as usize).hash(h);
                match a.mode {
                    Mode::Count(n) => (0u8, n).hash(h),
                    Mode::All => (1u8, 0u32).hash(h),
                }
                a.admin.hash(h);
                a.capacity.hash(h);
                a.tolerations.len().hash(h);
                for t in &a.tolerations {
                    t.key.hash(h);
                    t.operator.hash(h);
                    t.value.hash(h);
                    t.effect.hash(h);
                    t.toleration_seconds.hash(h);
                }
            }
        }
        self.constraints.len().hash(h);
        for c in &self.constraints {
            c.requests.hash(h);
            c.match_attr.hash(h);
            c.distinct_attr.hash(h);
        }
    }
}

/// What is in use of one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DevUse {
    /// Allocations holding it without sharing it.
    pub exclusive: u32,
    /// Capacity consumed by allocations that share it: qualified name,
    /// milli-units, and how many allocations consume some of it.
    pub consumed: Vec<(String, i128, u32)>,
}

impl DevUse {
    /// Whether nothing holds the device.
    pub fn is_free(&self) -> bool {
        self.exclusive == 0 && self.consumed.is_empty()
    }

    /// What allocations sharing the device consume of capacity `name`.
    pub fn consumed_of(&self, name: &str) -> i128 {
        self.consumed
            .iter()
            .find(|(k, _, _)| k == name)
            .map_or(0, |(_, v, _)| *v)
    }
}

/// Devices per chunk of [`InUse`].
const CHUNK: usize = 64;

/// In-use devices (allocated claims and in-flight reservations), by device
/// index. Stored in shared chunks, so a copy (one per scheduling cycle)
/// costs a pointer per 64 devices and a change copies only its chunk.
#[derive(Clone, Debug, Default)]
pub struct InUse {
    chunks: Vec<Arc<Vec<DevUse>>>,
}

impl InUse {
    /// What is in use of device `d`, if anything.
    #[inline]
    pub fn get(&self, d: u32) -> Option<&DevUse> {
        let d = d as usize;
        self.chunks
            .get(d / CHUNK)
            .map(|c| &c[d % CHUNK])
            .filter(|u| !u.is_free())
    }

    fn slot(&mut self, d: u32) -> &mut DevUse {
        let d = d as usize;
        while self.chunks.len() <= d / CHUNK {
            self.chunks.push(Arc::new(vec![DevUse::default(); CHUNK]));
        }
        &mut Arc::make_mut(&mut self.chunks[d / CHUNK])[d % CHUNK]
    }

    /// Records `c` (`shared`: the device allows multiple allocations).
    pub fn add(&mut self, c: &Chosen, shared: bool) {
        if c.admin {
            return;
        }
        let u = self.slot(c.device);
        if !shared {
            u.exclusive += 1;
        }
        for (n, v) in &c.consumed {
            match u.consumed.iter_mut().find(|(k, _, _)| k == n) {
                Some(e) => {
                    e.1 += v;
                    e.2 += 1;
                }
                None => u.consumed.push((n.clone(), *v, 1)),
            }
        }
    }

    /// Takes back `c`, recorded before with the same `shared`.
    pub fn remove(&mut self, c: &Chosen, shared: bool) {
        if c.admin || self.get(c.device).is_none() {
            return;
        }
        let u = self.slot(c.device);
        if !shared {
            u.exclusive = u.exclusive.saturating_sub(1);
        }
        for (n, v) in &c.consumed {
            if let Some(i) = u.consumed.iter().position(|(k, _, _)| k == n) {
                let e = &mut u.consumed[i];
                e.1 -= v;
                e.2 -= 1;
                if e.2 == 0 {
                    u.consumed.swap_remove(i);
                }
            }
        }
    }

    /// The devices in use, in index order, with their use (consumed
    /// capacities sorted by name): a form two equal uses share.
    pub fn entries(&self) -> Vec<(u32, DevUse)> {
        let mut out = Vec::new();
        for (ci, c) in self.chunks.iter().enumerate() {
            for (i, u) in c.iter().enumerate() {
                if !u.is_free() {
                    let mut u = u.clone();
                    u.consumed.sort_by(|a, b| a.0.cmp(&b.0));
                    out.push(((ci * CHUNK + i) as u32, u));
                }
            }
        }
        out
    }
}

/// A device chosen for a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// Request name for the result.
    pub request: String,
    /// Device index.
    pub device: u32,
    /// Admin access.
    pub admin: bool,
    /// Capacity consumed (qualified name, milli-units).
    pub consumed: Vec<(String, i128)>,
    /// Tolerations used.
    pub tolerations: Vec<resv1::DeviceToleration>,
}

/// The amount a request consumes of capacity `c`, after the device's
/// request policy (default, valid values, valid range and step). `None`:
/// the request cannot be satisfied by this capacity.
pub fn consumption(c: &Capacity, asked: Option<i128>) -> Option<i128> {
    let milli = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        super::cel::quantity_milli(&q.0)
    };
    let Some(p) = &c.policy else {
        return match asked {
            Some(a) if a > c.value => None,
            Some(a) => Some(a),
            None => Some(c.value),
        };
    };
    let mut amount = match asked {
        Some(a) => a,
        None => match p.default.as_ref().and_then(milli) {
            Some(d) => d,
            None => c.value,
        },
    };
    if let Some(vals) = &p.valid_values {
        let mut v: Vec<i128> = vals.iter().filter_map(milli).collect();
        v.sort_unstable();
        amount = *v.iter().find(|x| **x >= amount)?;
    } else if let Some(r) = &p.valid_range {
        let min = milli(&r.min)?;
        if amount < min {
            amount = min;
        }
        if let Some(step) = r.step.as_ref().and_then(milli).filter(|s| *s > 0) {
            let over = (amount - min) % step;
            if over != 0 {
                amount += step - over;
            }
        }
        if let Some(max) = r.max.as_ref().and_then(milli)
            && amount > max
        {
            return None;
        }
    }
    (amount <= c.value).then_some(amount)
}

fn tolerated(taints: &[resv1::DeviceTaint], tols: &[resv1::DeviceToleration]) -> bool {
    taints.iter().all(|t| {
        if t.effect != "NoSchedule" && t.effect != "NoExecute" {
            return true;
        }
        tols.iter().any(|tol| {
            let key_ok = match tol.key.as_deref() {
                None | Some("") => tol.operator.as_deref() == Some("Exists"),
                Some(k) => k == t.key,
            };
            let val_ok = match tol.operator.as_deref() {
                Some("Exists") => true,
                _ => tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or(""),
            };
            let eff_ok = tol
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == t.effect);
            key_ok && val_ok && eff_ok
        })
    })
}

struct Search<'a> {
    index: &'a Index,
    node: &'a [u32],
    steps: u32,
    /// Devices chosen for the pod's earlier claims.
    prior: Vec<Chosen>,
}

/// Allocates `plans` on a node whose usable devices are `node`, on top of
/// what `used` says is in use. On success `out[i]` holds claim `i`'s
/// devices.
pub fn allocate(
    index: &Index,
    node: &[u32],
    plans: &[&ClaimPlan],
    used: &InUse,
    out: &mut Vec<Vec<Chosen>>,
) -> Result<(), &'static str> {
    out.clear();
    let mut s = Search {
        index,
        node,
        steps: 0,
        prior: Vec::new(),
    };
    for p in plans {
        let mut chosen: Vec<Chosen> = Vec::new();
        if !s.claim(p, 0, used, &mut chosen) {
            return Err(if s.steps >= MAX_STEPS {
                "cannot allocate all claims: the device search was too large"
            } else {
                "cannot allocate all claims"
            });
        }
        s.prior.extend(chosen.iter().cloned());
        out.push(chosen);
    }
    Ok(())
}

/// Whether capacity `c` is the one named `n` (qualified, or by its name
/// within the driver's domain).
fn cap_named(c: &Capacity, n: &str) -> bool {
    c.name == n || (!n.contains('/') && c.name.rsplit('/').next() == Some(n))
}

impl Search<'_> {
    fn fits(
        &self,
        d: u32,
        alt: &Alt,
        used: &InUse,
        chosen: &[Chosen],
    ) -> Option<Vec<(String, i128)>> {
        let dev = &self.index.devices[d as usize];
        if !alt.cands.has(d) || !tolerated(&dev.taints, &alt.tolerations) {
            return None;
        }
        if chosen.iter().any(|c| c.device == d) {
            return None;
        }
        if alt.admin {
            return Some(Vec::new());
        }
        let mine = || {
            chosen
                .iter()
                .chain(self.prior.iter())
                .filter(move |c| c.device == d && !c.admin)
        };
        let u = used.get(d);
        if !dev.allow_multiple {
            if u.is_some() || mine().next().is_some() {
                return None;
            }
            return Some(Vec::new());
        }
        if u.is_some_and(|u| u.exclusive > 0) {
            return None;
        }
        // Asked capacities must exist on the device.
        for (n, _) in &alt.capacity {
            if !dev.capacity.iter().any(|c| cap_named(c, n)) {
                return None;
            }
        }
        let mut consumed = Vec::new();
        for c in &dev.capacity {
            let asked = alt
                .capacity
                .iter()
                .find(|(n, _)| cap_named(c, n))
                .map(|(_, v)| *v);
            let amount = consumption(c, asked)?;
            let mut already = u.map_or(0, |u| u.consumed_of(&c.name));
            for o in mine() {
                already += o
                    .consumed
                    .iter()
                    .find(|(k, _)| *k == c.name)
                    .map(|(_, v)| *v)
                    .unwrap_or(0);
            }
            if already + amount > c.value {
                return None;
            }
            consumed.push((c.name.clone(), amount));
        }
        Some(consumed)
    }

    fn constraints_ok(&self, p: &ClaimPlan, chosen: &[Chosen], slot_name: &str, d: u32) -> bool {
        let dev = &self.index.devices[d as usize];
        for c in &p.constraints {
            let covers = |name: &str| c.requests.is_empty() || c.requests.iter().any(|r| r == name);
            if !covers(slot_name) {
                continue;
            }
            let top = |req: &str| req.split('/').next().unwrap_or(req).to_owned();
            let others = chosen.iter().filter(|o| covers(&top(&o.request)));
            if let Some(a) = &c.match_attr {
                let Some(mine) = dev.attr(a) else {
                    return false;
                };
                for o in others.clone() {
                    if self.index.devices[o.device as usize].attr(a) != Some(mine) {
                        return false;
                    }
                }
            }
            if let Some(a) = &c.distinct_attr {
                let Some(mine) = dev.attr(a) else {
                    return false;
                };
                for o in others {
                    if self.index.devices[o.device as usize].attr(a) == Some(mine) {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn claim(
        &mut self,
        p: &ClaimPlan,
        slot: usize,
        used: &InUse,
        chosen: &mut Vec<Chosen>,
    ) -> bool {
        let Some(s) = p.slots.get(slot) else {
            return true;
        };
        for alt in &s.alts {
            let mark = chosen.len();
            let ok = match alt.mode {
                Mode::All => {
                    let mut all_ok = true;
                    let mut any = false;
                    for &d in self.node {
                        if !alt.cands.has(d) {
                            continue;
                        }
                        any = true;
                        match self.fits(d, alt, used, chosen) {
                            Some(consumed) if self.constraints_ok(p, chosen, &s.name, d) => chosen
                                .push(Chosen {
                                    request: alt.result_name.clone(),
                                    device: d,
                                    admin: alt.admin,
                                    consumed,
                                    tolerations: alt.tolerations.clone(),
                                }),
                            _ => {
                                all_ok = false;
                                break;
                            }
                        }
                    }
                    all_ok && any && self.claim(p, slot + 1, used, chosen)
                }
                Mode::Count(n) => self.pick(p, slot, alt, n, 0, used, chosen),
            };
            if ok {
                return true;
            }
            chosen.truncate(mark);
            if self.steps >= MAX_STEPS {
                return false;
            }
        }
        false
    }

    /// Chooses `left` more devices for `alt` from node position `from` on.
    #[allow(clippy::too_many_arguments)]
    fn pick(
        &mut self,
        p: &ClaimPlan,
        slot: usize,
        alt: &Alt,
        left: u32,
        from: usize,
        used: &InUse,
        chosen: &mut Vec<Chosen>,
    ) -> bool {
        if left == 0 {
            return self.claim(p, slot + 1, used, chosen);
        }
        let s = &p.slots[slot];
        let node = self.node;
        for (pos, &d) in node.iter().enumerate().skip(from) {
            self.steps += 1;
            if self.steps >= MAX_STEPS {
                return false;
            }
            if (node.len() - pos) < left as usize {
                return false;
            }
            let Some(consumed) = self.fits(d, alt, used, chosen) else {
                continue;
            };
            if !self.constraints_ok(p, chosen, &s.name, d) {
                continue;
            }
            chosen.push(Chosen {
                request: alt.result_name.clone(),
                device: d,
                admin: alt.admin,
                consumed,
                tolerations: alt.tolerations.clone(),
            });
            if self.pick(p, slot, alt, left - 1, pos + 1, used, chosen) {
                return true;
            }
            chosen.pop();
        }
        false
    }
}

/// Devices of the node sorted (stable order for the search).
pub fn node_devices(
    index: &Index,
    node: &str,
    labels: &strata_scheduler::sdk::Labels,
    name: strata_scheduler::sdk::Sym,
) -> SmallVec<[u32; 16]> {
    let mut v: SmallVec<[u32; 16]> = index.on_node(node, labels, name).collect();
    v.sort_unstable();
    v
}
