//! `config::parse_duration`, the Go-style duration parser of the
//! configuration's `leaseDuration`, `renewDeadline`, `retryPeriod` and of
//! `--shutdown-grace`. Never panics; a value, when there is one, is what the
//! text says (checked where it is plain: digits and `s` are that many
//! seconds, up to 2^53 where an f64 holds every integer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use strata_scheduler::config::parse_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_duration(text);
    if let Some(secs) = text.trim().strip_suffix('s')
        && !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = secs.parse::<u64>()
        && n <= 1 << 53
    {
        assert_eq!(parsed, Some(Duration::from_secs(n)), "{text:?}");
    }
});
