//! `docs/PLUGINS.md` shows this crate: every `rust`, `toml` and `yaml` block
//! in it must be an excerpt, word for word, of a file of this crate, so the
//! guide's code is the code CI builds, lints and tests.

use std::path::{Path, PathBuf};

fn crate_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read the crate") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            crate_files(&p, out);
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("rs" | "toml" | "yaml")
        ) {
            out.push(p);
        }
    }
}

/// The fenced blocks of `text` in these languages: (first line, body).
fn blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None => {
                if let Some(lang) = line.strip_prefix("```")
                    && matches!(lang.trim(), "rust" | "toml" | "yaml")
                {
                    open = Some((i + 2, String::new()));
                }
            }
            Some((at, body)) => {
                if line.starts_with("```") {
                    out.push((*at, std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn every_code_block_of_the_guide_is_an_excerpt_of_this_crate() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = here.join("../../docs/PLUGINS.md");
    let text = std::fs::read_to_string(&guide).expect("docs/PLUGINS.md");
    let mut files = Vec::new();
    crate_files(here, &mut files);
    let sources: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read a source"))
        .collect();
    let found = blocks(&text);
    assert!(found.len() >= 10, "only {} code blocks", found.len());
    for (line, body) in found {
        assert!(
            sources.iter().any(|s| s.contains(&body)),
            "docs/PLUGINS.md:{line}: this block is not in examples/vendor-plugin:\n{body}"
        );
    }
}

#[test]
fn a_block_that_drifted_is_caught() {
    let (_, body) = blocks("x\n```rust\nfn nowhere() {}\n```\n").remove(0);
    assert_eq!(body, "fn nowhere() {}\n");
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    assert!(!lib.contains(&body));
}
