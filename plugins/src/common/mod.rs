//! Pieces several plugins share. A plugin imports from here and from the
//! public API of `strata-scheduler`, not from a sibling plugin.

pub mod scoring;
