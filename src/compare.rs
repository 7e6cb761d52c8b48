//! The comparison (context [`Compare`]): side A pinned on the page (its
//! Report, `J_cat`'s top left singular vectors, its log-probabilities as
//! the worker sent them), kept across a model switch, a cancel or a
//! crash of the worker (the page holds it, not the worker), and the
//! comparison of the latest run (side B) with it.

use crate::url_sync::check;
use crate::views::snapshot::SnapshotCheck;
use lens_protocol::report::{Comparison, Side};
use lens_protocol::{Precision, Snapshot};
use leptos::prelude::*;
use std::sync::Arc;

/// Side A as the page keeps it.
#[derive(Debug)]
pub struct Pinned {
    /// Its Report (layers included), prompt, vectors and depth;
    /// `log_probs` is empty here (they are `log_probs` below).
    pub side: Side,
    /// Its next-token log-probabilities, f64 little-endian, sent back
    /// beside every comparison's request.
    pub log_probs: Vec<u8>,
    /// The model it ran on, as the link names it.
    pub model: String,
    pub precision: Precision,
}

#[derive(Clone, Copy)]
pub(crate) struct Compare {
    pub pinned: RwSignal<Option<Arc<Pinned>>>,
    /// The latest run against the pinned side.
    pub comparison: RwSignal<Option<Comparison>>,
    /// A link's snapshot of side A, checked once A is recomputed.
    pub snapshot_a: RwSignal<Option<(Snapshot, SnapshotCheck)>>,
    /// A comparison link opened: A is run and pinned first, then B.
    pub then_b: StoredValue<bool>,
}

impl Compare {
    pub fn new(snapshot_a: Option<Snapshot>, linked: bool) -> Self {
        Compare {
            pinned: RwSignal::new(None),
            comparison: RwSignal::new(None),
            snapshot_a: RwSignal::new(snapshot_a.map(|s| (s, SnapshotCheck::Pending))),
            then_b: StoredValue::new(linked),
        }
    }

    pub fn get() -> Self {
        expect_context::<Compare>()
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.with_untracked(Option::is_some)
    }

    /// A's recomputed Report against the link's snapshot of it.
    pub fn check_snapshot_a(&self, computed: &Snapshot) {
        self.snapshot_a.update(|snap| check(snap, computed));
    }
}
