//! The link state (context [`Link`]): the analysis as the share link holds
//! it, the fragment kept in step with it, a link pasted into the tab read,
//! the share / snapshot / embed links, and the classroom walkthrough's
//! steps (in the link too, stepped with ← and →).

use crate::browser;
use crate::classroom::STEPS;
use crate::run_state::APP_VERSION;
use crate::views::snapshot::SnapshotCheck;
use lens_protocol::{AnalysisSpec, Snapshot};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

/// Which link to make of the page's state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// The analysis, recomputed where it opens.
    Analysis,
    /// With the results, checked against the recomputation.
    Snapshot,
    /// The view in focus alone, for an `<iframe>`.
    Embed,
    /// From an embed back to the whole page.
    FullPage,
}

/// The link state: what the URL fragment holds, and what the page makes
/// of a link it was opened with.
#[derive(Clone, Copy)]
pub(crate) struct Link {
    /// The analysis as the share link holds it.
    pub spec: RwSignal<AnalysisSpec>,
    /// A link made by another version of the app or with another model
    /// file: what that means for its numbers.
    pub link_note: RwSignal<Option<String>>,
    /// A link's snapshot, shown until the page has recomputed it.
    pub snapshot: RwSignal<Option<(Snapshot, SnapshotCheck)>>,
    /// The layers field as typed.
    pub layers_input: RwSignal<String>,
    /// Run once the model is ready (a share link, or a run asked for early).
    pub run_when_ready: StoredValue<bool>,
}

impl Link {
    /// The link state of a fresh tab: `spec` from its link (`linked`) or
    /// the defaults.
    pub fn new(spec: AnalysisSpec, linked: bool) -> Self {
        Link {
            snapshot: RwSignal::new(snapshot_of(&spec)),
            layers_input: RwSignal::new(layers_text(&spec.layers)),
            spec: RwSignal::new(spec),
            link_note: RwSignal::new(None),
            run_when_ready: StoredValue::new(linked),
        }
    }

    pub fn get() -> Self {
        expect_context::<Link>()
    }

    /// Takes `spec` as the page's, with its snapshot and layers field.
    pub fn set_spec(&self, spec: AnalysisSpec) {
        self.snapshot.set(snapshot_of(&spec));
        self.layers_input.set(layers_text(&spec.layers));
        self.spec.set(spec);
    }

    pub fn sync_url(&self) {
        browser::set_fragment(&self.spec.get_untracked().to_fragment());
    }

    /// A link of `kind` to this analysis (tracks the state it reads):
    /// `snapshot` is the run's, as JSON; `model_sha256` the loaded file's.
    /// `snapshot_a` is a comparison's side A's.
    pub fn link(
        &self,
        kind: LinkKind,
        snapshot: impl Fn() -> Option<String>,
        snapshot_a: impl Fn() -> Option<String>,
        model_sha256: Option<String>,
    ) -> String {
        let mut s = self.spec.get();
        let with_results = |s: &mut lens_protocol::AnalysisSpec| {
            s.snapshot = snapshot();
            if let Some(c) = s.compare.as_mut() {
                c.snapshot = snapshot_a();
            }
        };
        match kind {
            LinkKind::Analysis => {
                s.snapshot = None;
                if let Some(c) = s.compare.as_mut() {
                    c.snapshot = None;
                }
            }
            LinkKind::Snapshot => {
                with_results(&mut s);
                s.embed = None;
            }
            LinkKind::Embed => {
                s.embed = Some(s.view);
                s.classroom = None;
                with_results(&mut s);
            }
            LinkKind::FullPage => s.embed = None,
        }
        s.made_with = Some(APP_VERSION.to_string());
        s.model_sha256 = model_sha256;
        browser::url_with_fragment(&s.to_fragment())
    }

    /// Goes to classroom step `step` (and its view), in the link too.
    pub fn classroom_step(&self, step: usize) {
        let step = step.min(STEPS.len() - 1);
        self.spec.update(|s| {
            s.classroom = Some(step);
            if let Some(v) = STEPS[step].view {
                s.view = v;
            }
        });
        self.sync_url();
    }

    /// ← and → step through the classroom walkthrough (not while typing).
    pub fn on_key(&self, ev: web_sys::KeyboardEvent) {
        let Some(step) = self.spec.get_untracked().classroom else {
            return;
        };
        let typing = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .is_some_and(|e| matches!(e.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if typing || ev.alt_key() || ev.ctrl_key() || ev.meta_key() {
            return;
        }
        match ev.key().as_str() {
            "ArrowRight" => self.classroom_step(step + 1),
            "ArrowLeft" => self.classroom_step(step.saturating_sub(1)),
            _ => return,
        }
        ev.prevent_default();
    }

    /// The run's Report against the link's snapshot, once it is in.
    pub fn check_snapshot(&self, computed: &Snapshot) {
        self.snapshot.update(|snap| check(snap, computed));
    }
}

/// A link's snapshot (if any) checked against the recomputed one.
pub(crate) fn check(snap: &mut Option<(Snapshot, SnapshotCheck)>, computed: &Snapshot) {
    if let Some((link, check)) = snap {
        let d = link.disagreements(computed);
        *check = if d.is_empty() {
            SnapshotCheck::Confirmed
        } else {
            SnapshotCheck::Mismatch(d)
        };
    }
}

/// A link's snapshot, to be checked against the recomputation.
fn snapshot_of(spec: &AnalysisSpec) -> Option<(Snapshot, SnapshotCheck)> {
    spec.snapshot
        .as_deref()
        .and_then(Snapshot::parse)
        .map(|x| (x, SnapshotCheck::Pending))
}

/// Layers as the layers field shows them: `1,6,12`.
pub(crate) fn layers_text(layers: &[usize]) -> String {
    layers
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
