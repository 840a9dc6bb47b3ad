//! Process-wide interning of short strings (label keys and values, taint keys,
//! topology keys, image names).
//!
//! A [`Sym`] is a `u32`: comparing or hashing one is a register operation, which
//! is what the per-node hot path needs. Interning takes a lock and happens when
//! an object is compiled (a pod enters the cache or queue, a node is added),
//! never while a cycle evaluates nodes.
//!
//! Interned strings are never freed. The set grows with the number of distinct
//! label values ever seen; for clusters whose pods carry unique label values
//! (StatefulSet pod names) that is a few dozen bytes per pod ever created.

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::LazyLock;

/// An interned string. Cheap to copy, compare and hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

struct Interner {
    ids: FxHashMap<&'static str, u32>,
    strs: Vec<&'static str>,
}

static INTERNER: LazyLock<RwLock<Interner>> = LazyLock::new(|| {
    let mut i = Interner {
        ids: FxHashMap::default(),
        strs: Vec::new(),
    };
    // Sym 0 is always the empty string.
    i.ids.insert("", 0);
    i.strs.push("");
    RwLock::new(i)
});

impl Sym {
    /// The empty string.
    pub const EMPTY: Sym = Sym(0);

    /// Interns `s`, returning its symbol.
    pub fn new(s: &str) -> Sym {
        if let Some(&id) = INTERNER.read().ids.get(s) {
            return Sym(id);
        }
        let mut w = INTERNER.write();
        if let Some(&id) = w.ids.get(s) {
            return Sym(id);
        }
        let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
        let id = u32::try_from(w.strs.len()).expect("more than 2^32 interned strings");
        w.strs.push(leaked);
        w.ids.insert(leaked, id);
        Sym(id)
    }

    /// The symbol of `s` if it was ever interned. A selector value that was
    /// never interned cannot equal any label, which lets matching skip work.
    pub fn lookup(s: &str) -> Option<Sym> {
        INTERNER.read().ids.get(s).copied().map(Sym)
    }

    /// The interned text.
    pub fn as_str(self) -> &'static str {
        INTERNER.read().strs[self.0 as usize]
    }

    /// The raw index, dense from zero; usable as a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Whether this is the empty string.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_symbol() {
        let a = Sym::new("zone-a");
        let b = Sym::new(&String::from("zone-a"));
        assert_eq!(a, b);
        assert_ne!(a, Sym::new("zone-b"));
        assert_eq!(a.as_str(), "zone-a");
        assert!(Sym::new("").is_empty());
        assert_eq!(Sym::lookup("zone-a"), Some(a));
    }
}
