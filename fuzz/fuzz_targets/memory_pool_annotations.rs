//! MemoryPool's parsers of outside input: the pod's `strata.io/memory-borrow`
//! and the node's `strata.io/memory-lendable` values (`parse_ask`: a share
//! such as `25%` or a quantity), the share → bytes conversion for a pod's
//! memory request, the `strata.io/memory-borrow-plan` annotation a restart
//! reads back, and the plugin's args. Input: the value on the first line;
//! the rest is the pod's local request in bytes (a number), or JSON for the
//! plan and the args. Checks the bounds the plugin relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_plugins::memory::memory_pool::model::{
    Ask, BORROW, LENDABLE, MAX_BYTES, MAX_SHARE_BP, MemoryPoolArgs, PlanDoc, parse_ask,
    remote_for_share,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (value, rest) = text.split_once('\n').unwrap_or((text, ""));
    let local: i64 = rest.trim().parse().unwrap_or(1 << 30);
    for (key, max) in [(BORROW, MAX_SHARE_BP), (LENDABLE, 10_000)] {
        match parse_ask(key, value, max) {
            Ok(Ask::Share(bp)) => {
                assert!((0..=max).contains(&bp), "{value:?} gave {bp} bp");
                let remote = remote_for_share(local, bp);
                assert!(
                    (0..=MAX_BYTES).contains(&remote),
                    "{value:?} of {local} gave {remote}"
                );
            }
            Ok(Ask::Bytes(b)) => assert!((0..=MAX_BYTES).contains(&b), "{value:?} gave {b}"),
            // The message names the annotation.
            Err(e) => assert!(e.to_string().contains(key), "{e}"),
        }
    }
    let _ = serde_json::from_str::<PlanDoc>(text);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(rest) {
        let _ = MemoryPoolArgs::parse(Some(&v)).map_err(|e| e.to_string());
    }
});
