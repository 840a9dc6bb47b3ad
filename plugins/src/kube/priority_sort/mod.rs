//! PrioritySort: the default queue order (kube-scheduler's QueueSort
//! plugin). Pods with a higher `spec.priority` pop first; among equal
//! priorities, the pod that (re-)entered the queue earlier pops first.
//!
//! The key is pure arithmetic on the pod's priority and its enqueue time, so
//! it is stable for as long as the pod sits in the queue; the queue itself
//! breaks any remaining tie by arrival order.

use std::sync::Arc;
use strata_scheduler::sdk::{Handle, Plugin, PluginArgsError, PodInfo, QueueSortPlugin, SortKey};

/// The plugin's configuration name.
pub const NAME: &str = "PrioritySort";

/// Orders the active queue by priority, then by enqueue time.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrioritySort;

strata_scheduler::plugin!(PrioritySort: NAME => [QueueSort]);

impl QueueSortPlugin for PrioritySort {
    fn sort_key(&self, pod: &PodInfo, enqueued_ns: u64) -> SortKey {
        SortKey {
            // Negated so that the higher priority is the smaller key; i64
            // holds -i32::MIN without overflow.
            primary: -i64::from(pod.priority),
            // Clocks in nanoseconds reach i64::MAX after 292 years; saturate
            // rather than wrap.
            secondary: i64::try_from(enqueued_ns).unwrap_or(i64::MAX),
            tertiary: 0,
        }
    }
}

/// Builds the plugin. PrioritySort takes no arguments.
pub fn factory(
    _args: Option<&serde_json::Value>,
    _handle: &Handle,
) -> Result<Arc<dyn Plugin>, PluginArgsError> {
    Ok(Arc::new(PrioritySort))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testkit;
    use proptest::prelude::*;
    use strata_scheduler::testing;

    fn key(priority: i32, enqueued_ns: u64) -> SortKey {
        PrioritySort.sort_key(&testing::pod("p").priority(priority).build(), enqueued_ns)
    }

    #[test]
    fn higher_priority_first_then_earlier_enqueue() {
        assert!(key(1000, 50) < key(10, 1));
        assert!(key(10, 1) < key(10, 2));
        assert!(key(0, 5) < key(-5, 0));
        assert!(key(i32::MAX, u64::MAX) < key(i32::MIN, 0));
        assert_eq!(
            key(7, 9),
            SortKey {
                primary: -7,
                secondary: 9,
                tertiary: 0
            }
        );
        // A pod without spec.priority counts as 0.
        let unset = PrioritySort.sort_key(&testing::pod("q").build(), 3);
        assert_eq!(unset, key(0, 3));
    }

    #[test]
    fn factory_builds_a_queue_sort() {
        let p = factory(None, &testkit::handle()).unwrap();
        assert_eq!(p.name(), NAME);
        assert!(p.as_queue_sort().is_some());
        assert!(p.as_filter().is_none());
    }

    proptest! {
        /// The key order is exactly (priority desc, enqueue time asc).
        #[test]
        fn order_matches_the_rule(p1 in any::<i32>(), p2 in any::<i32>(), t1 in 0u64..(i64::MAX as u64), t2 in 0u64..(i64::MAX as u64)) {
            let expected = p2.cmp(&p1).then(t1.cmp(&t2));
            let pod1 = testing::pod("a").priority(p1).build();
            let pod2 = testing::pod("b").priority(p2).build();
            prop_assert_eq!(PrioritySort.sort_key(&pod1, t1).cmp(&PrioritySort.sort_key(&pod2, t2)), expected);
        }
    }
}
