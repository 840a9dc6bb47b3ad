//! `strata_scaler::prometheus::parse_instant`, the group scaler's reading of
//! a Prometheus-compatible `/api/v1/query` answer (outside input: whatever
//! the configured endpoint sends). Never panics; a number, when there is
//! one, is finite and non-negative, and an answer that parses parses the
//! same again (no hidden state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_scaler::prometheus::{Sample, parse_instant};

fuzz_target!(|data: &[u8]| {
    let got = parse_instant(data);
    if let Ok(Sample::Value(v)) = &got {
        assert!(v.is_finite() && *v >= 0.0, "{v}");
    }
    assert_eq!(got, parse_instant(data));
});
