//! What is in use of each device, kept current from the claims written since
//! the last look and the in-flight reservations that changed, instead of
//! being summed again over every allocated claim each cycle.
//!
//! A claim counts through its allocation in the store when it has one,
//! otherwise through its in-flight reservation (Reserve made it, PreBind has
//! not written it yet): the same claim is never counted twice. [`Usage`]
//! keeps per claim what it counts with, so a claim that changes takes its
//! old devices back and adds its new ones, and it remembers which devices
//! changed so the plugin can tell the engine which nodes' answers moved.
//!
//! Invariant: after [`Usage::sync`], [`Usage::snapshot`] equals
//! [`by_value`] over the same store, in-flight set and index (property
//! tests in `tests.rs`).

use super::alloc::{Chosen, InUse};
use super::cel;
use super::index::{Index, Scope};
use super::store::DraStore;
use k8s_openapi::api::resource::v1 as resv1;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

/// A claim's uid (its `namespace/name` when it has none).
pub fn claim_uid(c: &resv1::ResourceClaim) -> String {
    c.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            c.metadata.namespace.as_deref().unwrap_or("default"),
            c.metadata.name.as_deref().unwrap_or("")
        )
    })
}

/// The devices an allocated claim holds, as `index` knows them; `None` when
/// the claim has no allocation.
pub fn allocated_devices(index: &Index, claim: &resv1::ResourceClaim) -> Option<Vec<Chosen>> {
    let alloc = claim.status.as_ref()?.allocation.as_ref()?;
    let mut out = Vec::new();
    for r in alloc
        .devices
        .as_ref()
        .and_then(|d| d.results.as_ref())
        .into_iter()
        .flatten()
    {
        let Some(&d) = index
            .by_key
            .get(&(r.driver.clone(), r.pool.clone(), r.device.clone()))
        else {
            continue;
        };
        let dev = &index.devices[d as usize];
        let consumed = r
            .consumed_capacity
            .iter()
            .flatten()
            .filter_map(|(k, q)| {
                let name = if k.contains('/') {
                    k.clone()
                } else {
                    format!("{}/{k}", dev.driver)
                };
                Some((name, cel::quantity_milli(&q.0)?))
            })
            .collect();
        out.push(Chosen {
            request: r.request.clone(),
            device: d,
            admin: r.admin_access == Some(true),
            consumed,
            tolerations: Vec::new(),
        });
    }
    Some(out)
}

fn shared(index: &Index, d: u32) -> bool {
    index
        .devices
        .get(d as usize)
        .is_some_and(|x| x.allow_multiple)
}

/// The use summed from scratch: every allocated claim of `claims`, then the
/// in-flight reservations of claims not among them (by uid). The reference
/// [`Usage`] is tested against.
pub fn by_value<'a>(
    index: &Index,
    claims: &[Arc<resv1::ResourceClaim>],
    inflight: impl Iterator<Item = (&'a str, &'a [Chosen])>,
) -> InUse {
    let mut used = InUse::default();
    let mut seen: FxHashSet<String> = FxHashSet::default();
    for cl in claims {
        let Some(devs) = allocated_devices(index, cl) else {
            continue;
        };
        seen.insert(claim_uid(cl));
        for ch in &devs {
            used.add(ch, shared(index, ch.device));
        }
    }
    for (uid, devs) in inflight {
        if seen.contains(uid) {
            continue;
        }
        for ch in devs {
            used.add(ch, shared(index, ch.device));
        }
    }
    used
}

/// What one claim counts with.
#[derive(Default)]
struct Held {
    /// Its allocation in the store.
    store: Option<Vec<Chosen>>,
    /// Its in-flight reservation.
    inflight: Option<Vec<Chosen>>,
}

impl Held {
    fn effective(&self) -> Option<&Vec<Chosen>> {
        self.store.as_ref().or(self.inflight.as_ref())
    }
}

/// Which part of a claim's [`Held`] changes.
#[derive(Clone, Copy)]
enum Part {
    Store,
    InFlight,
}

/// Changed devices listed before a consumer that does not take them is
/// just told that everything changed.
const MAX_LISTED: usize = 1 << 16;

/// Devices whose use changed since a consumer last took them.
#[derive(Default)]
pub struct Changes {
    /// Every device may have changed (the index was replaced, or the store's
    /// log did not reach back far enough).
    pub all: bool,
    /// Device indexes (may repeat).
    pub devices: Vec<u32>,
}

impl Changes {
    fn note(&mut self, d: u32) {
        if !self.all {
            self.devices.push(d);
            // Nobody is taking them: stop listing.
            if self.devices.len() > MAX_LISTED {
                self.note_all();
            }
        }
    }

    fn note_all(&mut self) {
        self.all = true;
        self.devices.clear();
    }
}

/// The use of every device, kept current (see the module doc).
#[derive(Default)]
pub struct Usage {
    /// The index device numbers refer to.
    index: Option<Arc<Index>>,
    /// The store's claim writes applied.
    log_pos: u64,
    held: FxHashMap<String, Held>,
    /// Claim (namespace, name) → uid, for claims counted through the store.
    uid_of: FxHashMap<(String, String), String>,
    live: InUse,
    snapshot: Option<Arc<InUse>>,
    /// Bumped whenever a device usable on more than one node changes use.
    shared_epoch: u64,
    /// For the engine (nodes whose answers moved).
    pub for_engine: Changes,
    /// For the domain aggregates.
    pub for_domains: Changes,
}

impl Usage {
    /// Bumped whenever the use of a device that is not node-local changed
    /// (such a change moves the answers of many nodes at once).
    pub fn shared_epoch(&self) -> u64 {
        self.shared_epoch
    }

    fn set(&mut self, uid: &str, part: Part, devs: Option<Vec<Chosen>>) {
        let index = self.index.clone().unwrap_or_default();
        let h = self.held.entry(uid.to_owned()).or_default();
        let before = h.effective().cloned();
        match part {
            Part::Store => h.store = devs,
            Part::InFlight => h.inflight = devs,
        }
        let after = h.effective().cloned();
        if h.store.is_none() && h.inflight.is_none() {
            self.held.remove(uid);
        }
        if before == after {
            return;
        }
        for ch in before.iter().flatten() {
            self.live.remove(ch, shared(&index, ch.device));
            self.note(&index, ch.device);
        }
        for ch in after.iter().flatten() {
            self.live.add(ch, shared(&index, ch.device));
            self.note(&index, ch.device);
        }
        self.snapshot = None;
    }

    fn note(&mut self, index: &Index, d: u32) {
        self.for_engine.note(d);
        self.for_domains.note(d);
        if index
            .devices
            .get(d as usize)
            .is_none_or(|x| !matches!(x.scope, Scope::Node(_)))
        {
            self.shared_epoch += 1;
        }
    }

    /// Applies the store's claim `key` as it is now.
    fn apply_claim(&mut self, store: &DraStore, key: &(String, String)) {
        let index = self.index.clone().unwrap_or_default();
        if let Some(old) = self.uid_of.remove(key) {
            self.set(&old, Part::Store, None);
        }
        if let Some(c) = store.claim(&key.0, &key.1)
            && let Some(devs) = allocated_devices(&index, &c)
        {
            let uid = claim_uid(&c);
            self.set(&uid, Part::Store, Some(devs));
            self.uid_of.insert(key.clone(), uid);
        }
    }

    fn rebuild<'a>(
        &mut self,
        index: &Arc<Index>,
        store: &DraStore,
        inflight: impl Iterator<Item = (&'a str, &'a [Chosen])>,
    ) {
        // Read the position first: writes racing with the read below are
        // applied again next time (applying a claim twice is harmless).
        let pos = store.claim_writes();
        let (for_engine, for_domains, epoch) = (
            std::mem::take(&mut self.for_engine),
            std::mem::take(&mut self.for_domains),
            self.shared_epoch,
        );
        *self = Usage {
            index: Some(index.clone()),
            log_pos: pos,
            shared_epoch: epoch + 1,
            for_engine,
            for_domains,
            ..Usage::default()
        };
        self.for_engine.note_all();
        self.for_domains.note_all();
        for c in store.allocated_claims() {
            let Some(devs) = allocated_devices(index, &c) else {
                continue;
            };
            let uid = claim_uid(&c);
            let key = (
                c.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                c.metadata.name.clone().unwrap_or_default(),
            );
            self.uid_of.insert(key, uid.clone());
            self.held.entry(uid).or_default().store = Some(devs);
        }
        for (uid, devs) in inflight {
            self.held.entry(uid.to_owned()).or_default().inflight = Some(devs.to_vec());
        }
        for h in self.held.values() {
            for ch in h.effective().into_iter().flatten() {
                self.live.add(ch, shared(index, ch.device));
            }
        }
    }

    /// Brings the use up to date with `index`, the store's claims and the
    /// in-flight reservations, and returns it. `inflight` lists every
    /// reservation (read when everything is summed again), `changed` the
    /// claims whose reservation changed since the last call, and `lookup`
    /// gives a claim's reservation now.
    pub fn sync<'a, I>(
        &mut self,
        index: &Arc<Index>,
        store: &DraStore,
        inflight: impl Fn() -> I,
        changed: Vec<String>,
        lookup: impl Fn(&str) -> Option<&'a [Chosen]>,
    ) -> Arc<InUse>
    where
        I: Iterator<Item = (&'a str, &'a [Chosen])>,
    {
        let same_index = self.index.as_ref().is_some_and(|i| Arc::ptr_eq(i, index));
        let log = if same_index {
            store.claims_changed_since(self.log_pos)
        } else {
            None
        };
        match log {
            None => {
                self.rebuild(index, store, inflight());
                self.snapshot = None;
            }
            Some((keys, pos)) => {
                self.log_pos = pos;
                let mut done: FxHashSet<&(String, String)> = FxHashSet::default();
                for k in &keys {
                    if done.insert(k) {
                        self.apply_claim(store, k);
                    }
                }
                let mut done: FxHashSet<&str> = FxHashSet::default();
                for uid in &changed {
                    if done.insert(uid) {
                        self.set(uid, Part::InFlight, lookup(uid).map(<[Chosen]>::to_vec));
                    }
                }
            }
        }
        self.snapshot
            .get_or_insert_with(|| Arc::new(self.live.clone()))
            .clone()
    }
}
