//! The Go extender of `testing/extender-go/`: built (cached) by its script,
//! started on loopback, its calls read back.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The Go extender binary, built by its script; `None` (skip) without Go.
pub fn go_extender_binary() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testing/extender-go/build.sh");
    let out = Command::new("bash").arg(&script).output();
    let required = std::env::var("STRATA_E2E_REQUIRED").is_ok_and(|v| v == "1");
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().last().map(|l| PathBuf::from(l.trim()))
        }
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(!required, "building the Go extender failed: {why}");
            eprintln!("SKIPPED: the Go extender could not be built: {why}");
            None
        }
        Err(e) => {
            assert!(!required, "running {script:?}: {e}");
            eprintln!("SKIPPED: {script:?}: {e}");
            None
        }
    }
}

/// A running Go extender, killed on drop.
pub struct GoExtender {
    child: Child,
    /// `http://ADDR`.
    pub url: String,
}

impl GoExtender {
    /// Starts the binary with `args`; waits for its address.
    pub fn start(bin: &PathBuf, args: &[&str]) -> GoExtender {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the Go extender starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("its first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        GoExtender {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// The calls it served: verb, pod, node count, names or objects.
    pub fn calls(&self) -> Vec<Value> {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut c = std::net::TcpStream::connect(addr).expect("connect to the extender");
        let _ = write!(c, "GET /calls HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("null");
        serde_json::from_str::<Option<Vec<Value>>>(body)
            .expect("calls JSON")
            .unwrap_or_default()
    }

    /// The calls of one verb.
    pub fn verb(&self, verb: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["verb"] == verb)
            .collect()
    }
}

impl Drop for GoExtender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
