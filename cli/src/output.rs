//! Writing reports to standard output when the reader may leave early.
//!
//! `print!` panics when standard output is a pipe whose reader has gone
//! (`strata check-config cfg.yaml | head -3`). A command's report is
//! written with `out!` and `outln!` instead:
//! once the reader is gone the rest of the report is dropped and the
//! command finishes as it would have, as Unix tools do.

use std::io::Write as _;

/// Writes formatted text to standard output; a closed pipe drops it.
/// Other write errors are reported on standard error once.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static GONE: AtomicBool = AtomicBool::new(false);
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        GONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: writing to standard output: {e}");
        }
    }
}

/// `print!` that does not panic when the reader of a pipe has gone.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// `println!` that does not panic when the reader of a pipe has gone.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::output::write_stdout(format_args!($($arg)*));
        $crate::output::write_stdout(format_args!("\n"));
    }};
}
