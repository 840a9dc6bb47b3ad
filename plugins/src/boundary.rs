//! Keeps the plugin boundary of `docs/ARCHITECTURE.md`: a plugin names the
//! public API of `strata-scheduler`, [`crate::common`] and itself, never a
//! sibling plugin; `common/` names no plugin. The crate root's assembly
//! (`registry`, `registry_with`, `default_plugins`, `Stores`) may be named,
//! by tests that build a whole profile; its re-exported plugin paths
//! (`crate::devices`, `crate::dra`, `crate::pod_group`) may not.
//!
//! The check reads the sources: every `crate::` path and every `super::`
//! path that climbs to a family folder. It runs as a unit test, so a sibling
//! import fails `cargo test`.

use std::path::{Path, PathBuf};

/// The family folders under `src/`; each entry in one is a plugin.
const FAMILIES: [&str; 3] = ["kube", "groups", "accelerators"];

/// Crate-root items a plugin may name.
const ROOT_ITEMS: [&str; 4] = ["registry", "registry_with", "default_plugins", "Stores"];

/// What a file belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    /// `src/common/`.
    Common,
    /// A plugin: family and name.
    Plugin(String, String),
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The identifier that starts `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The plugins of every family: (family, name).
fn plugins(src: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for family in FAMILIES {
        let dir = src.join(family);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_owned();
            if name != "mod" {
                out.push((family.to_owned(), name));
            }
        }
    }
    out
}

/// The paths in `text` (a file of `owner`) that cross the boundary, as
/// `line: path`. `plugins` lists every plugin as (family, name).
fn violations(owner: &Owner, text: &str, plugins: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            rest = after;
            // `$crate::` in a macro is the scheduler's or this crate's root
            // as seen from outside: not a path of this file.
            if line[..line.len() - after.len() - "crate::".len()].ends_with('$') {
                continue;
            }
            let first = ident(after);
            let ok = match (first, owner) {
                ("common", _) => true,
                ("", _) => false, // `crate::{...}`: name each path on its own
                (f, Owner::Plugin(family, name)) if f == family => {
                    let second = after[f.len()..].strip_prefix("::").map(ident);
                    second == Some(name.as_str())
                }
                (f, Owner::Plugin(..)) => ROOT_ITEMS.contains(&f),
                (_, Owner::Common) => false,
            };
            if !ok {
                let shown: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                out.push(format!("{}: crate::{shown}", n + 1));
            }
        }
        // `super::` chains reaching a family folder or a sibling by name.
        let mut rest = line;
        while let Some(i) = rest.find("super::") {
            let mut after = &rest[i..];
            while let Some(a) = after.strip_prefix("super::") {
                after = a;
            }
            rest = after;
            let next = ident(after);
            let own = match owner {
                Owner::Plugin(_, name) => name.as_str(),
                Owner::Common => "common",
            };
            let sibling = plugins.iter().any(|(_, p)| p == next && p != own);
            if sibling || FAMILIES.contains(&next) {
                out.push(format!("{}: super::…::{next}", n + 1));
            }
        }
    }
    out
}

#[test]
fn no_plugin_imports_a_sibling() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let plugins = plugins(&src);
    assert!(plugins.len() >= 17, "plugins found: {plugins:?}");
    let mut owned: Vec<(Owner, PathBuf)> = Vec::new();
    let mut files = Vec::new();
    rust_files(&src.join("common"), &mut files);
    owned.extend(files.drain(..).map(|f| (Owner::Common, f)));
    for (family, name) in &plugins {
        let dir = src.join(family).join(name);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(family).join(format!("{name}.rs")));
        }
        let owner = Owner::Plugin(family.clone(), name.clone());
        owned.extend(files.drain(..).map(|f| (owner.clone(), f)));
    }
    let mut found = Vec::new();
    for (owner, file) in &owned {
        let text = std::fs::read_to_string(file).expect("readable source");
        for v in violations(owner, &text, &plugins) {
            let rel = file.strip_prefix(&src).unwrap_or(file);
            found.push(format!("src/{}:{v}", rel.display()));
        }
    }
    assert!(
        found.is_empty(),
        "plugins must import only the scheduler's API, crate::common and themselves \
         (docs/ARCHITECTURE.md, \"The plugin boundary\"):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_sibling_paths() {
    let plugins: Vec<(String, String)> = [("kube", "a"), ("kube", "b"), ("groups", "g")]
        .map(|(f, n)| (f.to_owned(), n.to_owned()))
        .to_vec();
    let a = Owner::Plugin("kube".into(), "a".into());
    let ok = "use crate::common::x;\nuse crate::kube::a::y;\nuse super::z;\n\
              let r = crate::registry();\nuse $crate::kube::b;";
    assert!(violations(&a, ok, &plugins).is_empty());
    let bad = [
        "use crate::kube::b::x;",
        "use crate::groups::g;",
        "use crate::dra::DraStore;",
        "use crate::{common::x, kube::b};",
        "use super::b::x;",
        "use super::super::kube::b;",
        "crate::kube::ab::x",
    ];
    for line in bad {
        assert_eq!(violations(&a, line, &plugins).len(), 1, "{line}");
    }
    assert_eq!(
        violations(&Owner::Common, "use crate::kube::a::x;", &plugins).len(),
        1
    );
}
