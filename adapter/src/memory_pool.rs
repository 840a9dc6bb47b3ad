//! MemoryPool's figures on `/metrics`, read from its ledger at each scrape
//! (a prometheus-client collector): remote bytes held per pool domain and
//! per namespace, bytes lent, and pods refused by reason.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;
use strata_plugins::memory::memory_pool::PoolStore;

/// The collector over a MemoryPool ledger.
#[derive(Clone)]
pub struct PoolCollector(pub Arc<PoolStore>);

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolCollector")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.0.metrics();
        {
            let g = ConstGauge::new(0i64);
            let mut e = encoder.encode_descriptor(
                "strata_memory_pool_borrowed_bytes",
                "Remote memory held by borrowing pods, by pool domain",
                None,
                g.metric_type(),
            )?;
            for (pool, v) in &m.borrowed_by_pool {
                let labels = [("pool", pool.as_str())];
                ConstGauge::new(*v).encode(e.encode_family(&labels)?)?;
            }
        }
        {
            let g = ConstGauge::new(0i64);
            let mut e = encoder.encode_descriptor(
                "strata_memory_pool_namespace_borrowed_bytes",
                "Remote memory held by borrowing pods, by namespace",
                None,
                g.metric_type(),
            )?;
            for (ns, v) in &m.borrowed_by_namespace {
                let labels = [("namespace", ns.as_str())];
                ConstGauge::new(*v).encode(e.encode_family(&labels)?)?;
            }
        }
        {
            let g = ConstGauge::new(m.lent_bytes);
            let e = encoder.encode_descriptor(
                "strata_memory_pool_lent_bytes",
                "Memory lent by all nodes",
                None,
                g.metric_type(),
            )?;
            g.encode(e)?;
        }
        {
            let c = ConstCounter::new(0u64);
            let mut e = encoder.encode_descriptor(
                "strata_memory_pool_failures",
                "Borrowing pods refused, by reason",
                None,
                c.metric_type(),
            )?;
            for (reason, v) in &m.failures {
                let labels = [("reason", *reason)];
                ConstCounter::new(*v).encode(e.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
