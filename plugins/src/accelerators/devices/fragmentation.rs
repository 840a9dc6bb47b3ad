//! Fragmentation of accelerator capacity, in the spirit of Fragmentation
//! Gradient Descent (Weng et al., "Beware of Fragmentation: Scheduling
//! GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX
//! ATC'23).
//!
//! The idea: free device capacity is only worth something if a pod that is
//! expected to arrive can use it. For one class of pod `m` (so many whole
//! devices, or a share of one, plus cpu and memory), the fragment of a node
//! is the free device capacity that class cannot use there:
//! - all of the node's free device capacity when the class cannot run on
//!   the node at all (too little cpu or memory left, or fewer usable
//!   devices than it needs);
//! - otherwise the free capacity of the devices it cannot use (a device too
//!   full for its share; for whole-device classes, every partly used
//!   device), plus the share of the usable capacity the node's cpu and
//!   memory cannot serve: when the usable devices could take `g` pods of the
//!   class, one per device (`usable / count`), but its mean cpu and memory
//!   fit only `x < g` times into what is free (`x` not rounded: the class's
//!   requests vary around that mean), only `x/g` of the usable capacity
//!   counts as usable (a GPU whose node has no cpu left is a fragment for
//!   every class). A device is reached, like it is usable, for one more pod
//!   of the class: a sharing class is not charged for the further pods a
//!   device could pack, which the node's cpu never serves for small shares
//!   and would make every core taken anywhere strand capacity.
//!
//! The node's fragmentation for the expected workload mix `M` is the
//! weighted sum over classes, `F_n(M) = Σ p_m F_n(m)`, in percent of one
//! device. A placement is scored by how much it increases `F_n(M)` (less is
//! better): placing a pod in capacity nobody else could use lowers it.
//!
//! The mix is either configured (`DevicesArgs.workload`) or learned from
//! the device pods the scheduler sees (each pod counted once): a class per
//! distinct device ask (devices, memory and compute share) — for asks of
//! several devices, also per memory band (powers of two of GiB) — with the
//! mean cpu and memory of its pods, cut to the [`MAX_CLASSES`] most frequent, so
//! a node's fragmentation costs at most `MAX_CLASSES × devices` comparisons
//! and a cached placement `MAX_CLASSES`.
//!
//! Invariants: fragmentation never exceeds the node's free device capacity
//! and is zero for a node with none free; these functions allocate nothing.

use super::model::{Device, KindIdx, Usage};
use super::request::{ContainerAsk, MemAsk, PodAsk};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use std::sync::Arc;

/// Classes kept in a learned mix.
pub const MAX_CLASSES: usize = 32;

/// One class of the expected workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Class {
    /// Device kind.
    pub kind: KindIdx,
    /// Devices it needs.
    pub count: u32,
    /// Memory per device.
    pub memory: MemAsk,
    /// Compute per device, percent.
    pub cores: u32,
    /// Whole devices, exclusively.
    pub exclusive: bool,
    /// Cpu in millicores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub mem_bytes: i64,
    /// Probability in the mix (weights sum to 1).
    pub weight: f64,
}

/// Free device capacity of `kind` on a node, percent of one device.
#[inline]
pub fn free_capacity(devices: &[Device], used: &[Usage], kind: KindIdx) -> u32 {
    devices
        .iter()
        .zip(used)
        .filter(|(d, _)| d.kind == kind)
        .map(|(d, u)| d.free_percent(u))
        .sum()
}

/// Whether device `d` with use `u` can take one device of class `m`.
#[inline]
fn usable(d: &Device, u: &Usage, m: &Class) -> bool {
    d.kind == m.kind
        && match m.memory.units(d.memory, d.memory_known) {
            Some(mem) => d.fits(u, mem, m.cores, m.exclusive),
            None => false,
        }
}

/// The fragment of one class on a node: free device capacity (percent of a
/// device) the class cannot use there.
pub fn class_fragment(
    m: &Class,
    devices: &[Device],
    used: &[Usage],
    cpu_free: i64,
    mem_free: i64,
) -> u32 {
    let mut s = ClassStat::default();
    for (d, u) in devices.iter().zip(used) {
        s.add(contribution(m, d, u));
    }
    fragment_of(m, &s, cpu_free, mem_free)
}

/// `F_n(M)`: the node's expected fragmentation for the mix, in percent of a
/// device.
pub fn node_fragmentation(
    mix: &[Class],
    devices: &[Device],
    used: &[Usage],
    cpu_free: i64,
    mem_free: i64,
) -> f64 {
    mix.iter()
        .map(|m| m.weight * class_fragment(m, devices, used, cpu_free, mem_free) as f64)
        .sum()
}

/// Per-class totals of a node, cached between placements so a candidate
/// placement is ranked by looking at the one device it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStat {
    /// Devices the class can use.
    pub usable: u32,
    /// Free capacity on devices it cannot use.
    pub unusable: u32,
    /// All free capacity of the class's kind.
    pub total: u32,
}

impl ClassStat {
    #[inline]
    fn add(&mut self, c: ClassStat) {
        self.usable += c.usable;
        self.unusable += c.unusable;
        self.total += c.total;
    }

    #[inline]
    fn sub(&mut self, c: ClassStat) {
        self.usable -= c.usable;
        self.unusable -= c.unusable;
        self.total -= c.total;
    }
}

/// Class statistics, one per class of the mix.
pub type Stats = SmallVec<[ClassStat; MAX_CLASSES]>;

/// What device `d` with use `u` contributes to the statistics of `m`.
#[inline]
fn contribution(m: &Class, d: &Device, u: &Usage) -> ClassStat {
    if d.kind != m.kind {
        return ClassStat::default();
    }
    let f = d.free_percent(u);
    if usable(d, u, m) {
        ClassStat {
            usable: 1,
            unusable: 0,
            total: f,
        }
    } else {
        ClassStat {
            usable: 0,
            unusable: f,
            total: f,
        }
    }
}

/// Computes the statistics of every class of `mix` on a node.
pub fn stats(mix: &[Class], devices: &[Device], used: &[Usage], out: &mut Stats) {
    out.clear();
    for m in mix {
        let mut s = ClassStat::default();
        for (d, u) in devices.iter().zip(used) {
            s.add(contribution(m, d, u));
        }
        out.push(s);
    }
}

/// The fragment of class `m` from its statistics on a node with
/// `cpu_free` millicores and `mem_free` bytes left.
#[inline]
fn fragment_of(m: &Class, s: &ClassStat, cpu_free: i64, mem_free: i64) -> u32 {
    if s.total == 0 {
        return 0;
    }
    if m.cpu_milli > cpu_free || m.mem_bytes > mem_free || s.usable < m.count {
        return s.total;
    }
    // Pods of the class the devices could take, one per usable device
    // (`g`), and the usable capacity the node's cpu and memory reach: all
    // of it when they hold `g` of the class's mean requests, else the share
    // they hold, not rounded down: the class's pods ask around that mean,
    // so one more pod or a few cores less does not strand a whole pod's
    // capacity at once. A sharing class counts one pod per device, as
    // usability does: a device counts as reached when the node can run one
    // more pod of the class on it.
    let g = s.usable / m.count.max(1);
    let usable_free = s.total - s.unusable;
    if g == 0 || usable_free == 0 {
        return s.unusable;
    }
    let reachable = reach(usable_free, cpu_free, m.cpu_milli, g).min(reach(
        usable_free,
        mem_free,
        m.mem_bytes,
        g,
    ));
    s.total - reachable
}

/// The part of `usable` capacity that `free` of a resource reaches when `g`
/// pods asking `each` could use all of it: `usable × free / (each × g)`,
/// at most `usable` (all of it when nothing is asked).
#[inline]
fn reach(usable: u32, free: i64, each: i64, g: u32) -> u32 {
    if each <= 0 {
        return usable;
    }
    let free = free.max(0) as u64;
    let need = (each as u64).saturating_mul(u64::from(g));
    if free >= need {
        return usable;
    }
    match u64::from(usable).checked_mul(free) {
        Some(p) => (p / need) as u32,
        None => (u128::from(usable) * u128::from(free) / u128::from(need)) as u32,
    }
}

/// `F_n(M)` from cached statistics and the node's free cpu and memory.
pub fn fragmentation_from(mix: &[Class], stats: &[ClassStat], cpu_free: i64, mem_free: i64) -> f64 {
    mix.iter()
        .zip(stats)
        .map(|(m, s)| m.weight * fragment_of(m, s, cpu_free, mem_free) as f64)
        .sum()
}

/// `F_n(M)` after device `d` goes from use `before` to `after`, from the
/// statistics before: O(classes), no allocation.
pub fn fragmentation_after_change(
    mix: &[Class],
    stats: &[ClassStat],
    d: &Device,
    before: &Usage,
    after: &Usage,
    cpu_free: i64,
    mem_free: i64,
) -> f64 {
    mix.iter()
        .zip(stats)
        .map(|(m, s)| {
            let mut s2 = *s;
            s2.sub(contribution(m, d, before));
            s2.add(contribution(m, d, after));
            m.weight * fragment_of(m, &s2, cpu_free, mem_free) as f64
        })
        .sum()
}

/// The class a pod belongs to: its largest device ask, with the pod's cpu
/// and memory.
pub fn class_of(ask: &PodAsk, cpu_milli: i64, mem_bytes: i64) -> Option<Class> {
    let c: &ContainerAsk = ask
        .containers
        .iter()
        .max_by_key(|c| c.count * c.share_percent())?;
    Some(Class {
        kind: c.kind,
        count: c.count,
        memory: c.memory,
        cores: c.cores,
        exclusive: c.exclusive,
        cpu_milli,
        mem_bytes,
        weight: 0.0,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    kind: KindIdx,
    count: u32,
    memory: MemAsk,
    cores: u32,
    exclusive: bool,
    /// For asks of several devices, `log2` of the pod's memory in GiB
    /// (else 0).
    band: u32,
}

impl Key {
    fn of(c: &Class) -> Key {
        Key {
            kind: c.kind,
            count: c.count,
            memory: c.memory,
            cores: c.cores,
            exclusive: c.exclusive,
            band: band(c),
        }
    }
}

/// The memory band a pod of class `c` is counted in. Pods of several
/// devices take most of a node's cpu and memory, so which node shapes can
/// hold them depends on their size: a mean over pods that fit different
/// nodes (say 64 cores and 256 GiB, and 120 cores and 720 GiB, on nodes of
/// 96 cores and 384 GiB and of 128 cores and 768 GiB) describes a pod that
/// fits the first nodes, and leaves the few nodes the large pods need
/// unguarded. Powers of two of GiB keep the number of classes small; pods
/// of one device fit most nodes and keep one class per ask.
fn band(c: &Class) -> u32 {
    if c.count <= 1 {
        return 0;
    }
    ((c.mem_bytes >> 30).max(1) as u64).ilog2()
}

#[derive(Default)]
struct Learned {
    /// Per device ask: the class, pods seen, and their cpu and memory sums.
    counts: FxHashMap<Key, (Class, u64, i128, i128)>,
    seen: FxHashSet<Arc<str>>,
    /// The published classes and their version.
    snapshot: Option<(Arc<[Class]>, u64)>,
    /// Pods seen when the snapshot was last rebuilt.
    built_at: u64,
}

/// The expected workload mix: fixed, or learned from the pods seen.
pub struct Mix {
    fixed: Option<Arc<[Class]>>,
    learned: Mutex<Learned>,
}

impl Mix {
    /// A mix learned from the pods seen.
    pub fn learned() -> Mix {
        Mix {
            fixed: None,
            learned: Mutex::new(Learned::default()),
        }
    }

    /// A fixed mix (weights are normalized).
    pub fn fixed(mut classes: Vec<Class>) -> Mix {
        let total: f64 = classes.iter().map(|c| c.weight).sum();
        if total > 0.0 {
            for c in &mut classes {
                c.weight /= total;
            }
        }
        Mix {
            fixed: Some(classes.into()),
            learned: Mutex::new(Learned::default()),
        }
    }

    /// Counts pod `uid` of class `c` once (a learned mix only).
    pub fn observe(&self, uid: &Arc<str>, c: Class) {
        if self.fixed.is_some() {
            return;
        }
        let mut l = self.learned.lock();
        if !l.seen.insert(uid.clone()) {
            return;
        }
        let e = l.counts.entry(Key::of(&c)).or_insert((c, 0, 0, 0));
        e.1 += 1;
        e.2 += c.cpu_milli as i128;
        e.3 += c.mem_bytes as i128;
    }

    /// The current classes with probabilities and their version. A learned
    /// mix is republished when the pods seen have doubled, then every 512
    /// pods, so per-node caches built for one version stay valid for a
    /// while.
    pub fn snapshot(&self) -> (Arc<[Class]>, u64) {
        if let Some(f) = &self.fixed {
            return (f.clone(), 1);
        }
        let mut l = self.learned.lock();
        let seen = l.seen.len() as u64;
        let due = match &l.snapshot {
            None => seen > 0,
            Some(_) => seen >= (l.built_at * 2).min(l.built_at + 512).max(l.built_at + 1),
        };
        if !due {
            return l
                .snapshot
                .clone()
                .unwrap_or_else(|| (Arc::from(Vec::new()), 0));
        }
        let mut v: Vec<(Class, u64)> = l
            .counts
            .values()
            .map(|(c, n, cpu, mem)| {
                let mut c = *c;
                c.cpu_milli = (*cpu / (*n).max(1) as i128) as i64;
                c.mem_bytes = (*mem / (*n).max(1) as i128) as i64;
                (c, *n)
            })
            .collect();
        v.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.count.cmp(&b.0.count))
                .then_with(|| a.0.cores.cmp(&b.0.cores))
                .then_with(|| a.0.cpu_milli.cmp(&b.0.cpu_milli))
                .then_with(|| a.0.mem_bytes.cmp(&b.0.mem_bytes))
        });
        v.truncate(MAX_CLASSES);
        let total: u64 = v.iter().map(|(_, n)| n).sum();
        let snap: Arc<[Class]> = v
            .into_iter()
            .map(|(mut c, n)| {
                c.weight = n as f64 / total.max(1) as f64;
                c
            })
            .collect();
        let version = l.snapshot.as_ref().map_or(0, |s| s.1) + 1;
        l.snapshot = Some((snap.clone(), version));
        l.built_at = seen;
        (snap, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(id: &str, shares: u32) -> Device {
        Device {
            kind: 0,
            id: id.into(),
            model: "".into(),
            memory: 100,
            memory_known: false,
            cores: 100,
            shares,
            healthy: true,
            numa: 0,
            group: 0,
            pcie: 0,
        }
    }

    fn used(cores: u32) -> Usage {
        Usage {
            memory: cores as u64,
            cores,
            tasks: u32::from(cores > 0),
            exclusive: false,
        }
    }

    fn share(p: u32, weight: f64) -> Class {
        Class {
            kind: 0,
            count: 1,
            memory: MemAsk::Percent(p),
            cores: p,
            exclusive: false,
            cpu_milli: 0,
            mem_bytes: 0,
            weight,
        }
    }

    fn whole(n: u32, weight: f64) -> Class {
        Class {
            kind: 0,
            count: n,
            memory: MemAsk::Percent(100),
            cores: 100,
            exclusive: true,
            cpu_milli: 0,
            mem_bytes: 0,
            weight,
        }
    }

    /// The paper's Figure 4-style example: a node with GPUs 30% and 100%
    /// free. A 50% task cannot use the 30%: fragment 30. A 1-GPU task can
    /// only use the empty one: fragment 30. A 2-GPU task cannot run: all
    /// 130 is fragment.
    #[test]
    fn class_fragments_follow_the_definition() {
        let devs = [gpu("a", 10), gpu("b", 10)];
        let u = [used(70), used(0)];
        assert_eq!(class_fragment(&share(50, 1.0), &devs, &u, 1000, 1000), 30);
        assert_eq!(class_fragment(&share(20, 1.0), &devs, &u, 1000, 1000), 0);
        assert_eq!(class_fragment(&whole(1, 1.0), &devs, &u, 1000, 1000), 30);
        assert_eq!(class_fragment(&whole(2, 1.0), &devs, &u, 1000, 1000), 130);
        // Not enough cpu left: everything free is a fragment.
        let mut c = share(20, 1.0);
        c.cpu_milli = 2000;
        assert_eq!(class_fragment(&c, &devs, &u, 1000, 1000), 130);
        let mix = [share(50, 0.5), whole(2, 0.5)];
        assert!(
            (node_fragmentation(&mix, &devs, &u, 1000, 1000) - (0.5 * 30.0 + 0.5 * 130.0)).abs()
                < 1e-9
        );
    }

    /// Usable devices the node's cpu cannot serve are fragments too: 4
    /// empty GPUs and cpu for two 10-core 1-GPU pods leave two GPUs
    /// stranded, cpu for two and a half strands 1.5 (not two: the count is
    /// not rounded down); a 50% share of 10 cores on 2 empty GPUs counts
    /// one pod per GPU, like usability: cpu for 3 (or 2) strands nothing,
    /// cpu for 1.5 a quarter of the 200.
    #[test]
    fn cpu_strands_usable_devices() {
        let devs = [gpu("a", 10), gpu("b", 10), gpu("c", 10), gpu("d", 10)];
        let u = [used(0); 4];
        let mut one = whole(1, 1.0);
        one.cpu_milli = 10_000;
        assert_eq!(class_fragment(&one, &devs, &u, 45_000, 1000), 0);
        assert_eq!(class_fragment(&one, &devs, &u, 40_000, 1000), 0);
        assert_eq!(class_fragment(&one, &devs, &u, 20_000, 1000), 200);
        assert_eq!(class_fragment(&one, &devs, &u, 25_000, 1000), 150);
        assert_eq!(class_fragment(&one, &devs, &u, 5_000, 1000), 400);
        // Memory strands the same way.
        one.mem_bytes = 100;
        assert_eq!(class_fragment(&one, &devs, &u, 45_000, 300), 100);
        let mut half = share(50, 1.0);
        half.cpu_milli = 10_000;
        let devs = [gpu("a", 10), gpu("b", 10)];
        let u = [used(0); 2];
        assert_eq!(class_fragment(&half, &devs, &u, 30_000, 1000), 0);
        assert_eq!(class_fragment(&half, &devs, &u, 20_000, 1000), 0);
        assert_eq!(class_fragment(&half, &devs, &u, 15_000, 1000), 50);
        assert_eq!(class_fragment(&half, &devs, &u, 12_000, 1000), 80);
        // A device 70% used takes no 50% share: its 30 are a fragment
        // whatever the cpu; cpu for one pod reaches the other device.
        let u = [used(70), used(0)];
        assert_eq!(class_fragment(&half, &devs, &u, 40_000, 1000), 30);
        assert_eq!(class_fragment(&half, &devs, &u, 10_000, 1000), 30);
    }

    /// A class of small shares could pack ten pods on a GPU, which the
    /// node's cpu never serves: counting those pods would strand most of
    /// every GPU node's capacity for it and make each core taken anywhere
    /// strand more. One pod per device: 8 empty GPUs and 40 cores hold
    /// eight 4-core pods of 10%, before and after a pod takes 8 cores, so
    /// taking them strands nothing; below 32 cores the stranding starts.
    #[test]
    fn small_shares_are_reached_one_pod_per_device() {
        let devs: Vec<Device> = (0..8).map(|i| gpu(&format!("g{i}"), 10)).collect();
        let u = [used(0); 8];
        let mut small = share(10, 1.0);
        small.cpu_milli = 4_000;
        assert_eq!(class_fragment(&small, &devs, &u, 40_000, 1000), 0);
        assert_eq!(class_fragment(&small, &devs, &u, 32_000, 1000), 0);
        assert_eq!(class_fragment(&small, &devs, &u, 16_000, 1000), 400);
        // One GPU partly used still takes a 10% pod: eight pods reach all.
        let mut u2 = u;
        u2[0] = used(40);
        assert_eq!(class_fragment(&small, &devs, &u2, 32_000, 1000), 0);
    }

    #[test]
    fn incremental_matches_full_computation() {
        let devs = [gpu("a", 10), gpu("b", 10), gpu("c", 2)];
        let mut mix = [share(50, 0.3), share(20, 0.3), whole(1, 0.2), whole(2, 0.2)];
        for (i, m) in mix.iter_mut().enumerate() {
            m.cpu_milli = 60 + 40 * i as i64;
        }
        let before = [used(70), used(0), used(40)];
        let mut st = Stats::new();
        stats(&mix, &devs, &before, &mut st);
        assert!(
            (fragmentation_from(&mix, &st, 500, 500)
                - node_fragmentation(&mix, &devs, &before, 500, 500))
            .abs()
                < 1e-9
        );
        for g in 0..3 {
            for add in [10u32, 30, 60] {
                let mut after = before;
                if !devs[g].fits(&after[g], add as u64, add, false) {
                    continue;
                }
                after[g].add(&super::super::model::Grant {
                    container: 0,
                    device: g as u16,
                    memory: add as u64,
                    cores: add,
                    exclusive: false,
                });
                let inc = fragmentation_after_change(
                    &mix, &st, &devs[g], &before[g], &after[g], 500, 100,
                );
                let full = node_fragmentation(&mix, &devs, &after, 500, 100);
                assert!(
                    (inc - full).abs() < 1e-9,
                    "device {g} +{add}: {inc} vs {full}"
                );
            }
        }
    }

    #[test]
    fn placing_into_a_fragment_lowers_fragmentation() {
        // Mix: half 50% shares, half whole GPUs. A 30% task on the 30%-free
        // GPU leaves fragmentation lower than on the empty GPU.
        let devs = [gpu("a", 10), gpu("b", 10)];
        let mix = [share(50, 0.5), whole(1, 0.5)];
        let before = [used(70), used(0)];
        let on_a = [used(100), used(0)];
        let on_b = [used(70), used(30)];
        let f0 = node_fragmentation(&mix, &devs, &before, 1000, 1000);
        let fa = node_fragmentation(&mix, &devs, &on_a, 1000, 1000);
        let fb = node_fragmentation(&mix, &devs, &on_b, 1000, 1000);
        assert!(fa < f0, "{fa} < {f0}");
        assert!(fb > fa, "{fb} > {fa}");
    }

    /// Each cpu core a pod takes from a node whose cpu already limits a
    /// class strands the same share of a GPU: the fragment grows evenly,
    /// without steps at multiples of the class's mean cpu.
    #[test]
    fn stranding_grows_evenly_with_the_cpu_taken() {
        let devs = [gpu("a", 10), gpu("b", 10), gpu("c", 10), gpu("d", 10)];
        let u = [used(0); 4];
        let mut one = whole(1, 1.0);
        one.cpu_milli = 10_000;
        let f: Vec<u32> = (0..=4)
            .map(|i| class_fragment(&one, &devs, &u, 40_000 - 5_000 * i, 1000))
            .collect();
        assert_eq!(f, [0, 50, 100, 150, 200]);
    }

    #[test]
    fn multi_device_classes_are_split_by_memory_band() {
        let mix = Mix::learned();
        let gib = 1i64 << 30;
        for (i, (n, mem)) in [(8, 256), (8, 320), (8, 720), (1, 8), (1, 300)]
            .into_iter()
            .enumerate()
        {
            let mut c = whole(n, 0.0);
            c.mem_bytes = mem * gib;
            mix.observe(&Arc::from(format!("p{i}")), c);
        }
        let (s, _) = mix.snapshot();
        let mut got: Vec<(u32, i64)> = s.iter().map(|c| (c.count, c.mem_bytes / gib)).collect();
        got.sort();
        // 256 and 320 GiB share a band (256–511), 720 GiB has its own;
        // one-device pods keep one class whatever their memory.
        assert_eq!(got, [(1, 154), (8, 288), (8, 720)]);
    }

    #[test]
    fn learned_mix_counts_each_pod_once_and_normalizes() {
        let mix = Mix::learned();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        mix.observe(&a, share(50, 0.0));
        mix.observe(&a, share(50, 0.0));
        let (s1, v1) = mix.snapshot();
        assert_eq!((s1.len(), v1), (1, 1));
        mix.observe(&b, whole(1, 0.0));
        let (s, v) = mix.snapshot();
        assert_eq!((s.len(), v), (2, 2));
        assert!((s.iter().map(|c| c.weight).sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(s.iter().all(|c| (c.weight - 0.5).abs() < 1e-9));
        assert!(
            Arc::ptr_eq(&s, &mix.snapshot().0),
            "no new pod: same snapshot"
        );
    }

    #[test]
    fn classes_are_device_asks_with_mean_cpu_and_memory() {
        let mix = Mix::learned();
        let mut a = share(50, 0.0);
        a.cpu_milli = 1000;
        let mut b = share(50, 0.0);
        b.cpu_milli = 3000;
        mix.observe(&Arc::from("a"), a);
        mix.observe(&Arc::from("b"), b);
        let (s, _) = mix.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].cpu_milli, 2000);
    }
}
