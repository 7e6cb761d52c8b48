//! The URL fragment ⇄ the analysis state: the fragment kept in step with
//! the page, a link pasted into the tab applied, the share / snapshot /
//! embed links, and the classroom walkthrough's steps (in the link too,
//! stepped with ← and →).

use crate::browser;
use crate::classroom::STEPS;
use crate::page::{layers_text, Page};
use crate::run_state::APP_VERSION;
use crate::views::snapshot::SnapshotCheck;
use lens_protocol::{AnalysisSpec, Snapshot};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
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

impl Page {
    pub fn sync_url(&self) {
        browser::set_fragment(&self.spec.get_untracked().to_fragment());
    }

    /// A link of `kind` to this analysis (tracks the state it reads).
    pub fn link(&self, kind: LinkKind) -> String {
        let mut s = self.spec.get();
        let snapshot = || {
            self.results
                .with(|r| r.report.as_ref().map(|r| Snapshot::of(r).to_json()))
        };
        match kind {
            LinkKind::Analysis => s.snapshot = None,
            LinkKind::Snapshot => {
                s.snapshot = snapshot();
                s.embed = None;
            }
            LinkKind::Embed => {
                s.embed = Some(s.view);
                s.classroom = None;
                s.snapshot = snapshot();
            }
            LinkKind::FullPage => s.embed = None,
        }
        s.made_with = Some(APP_VERSION.to_string());
        s.model_sha256 = self.model_sha256.get();
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

    /// A link pasted into this tab: apply it, and run what it changes.
    fn on_hash_change(&self) {
        let current = self.spec.get_untracked();
        let Some(s) = AnalysisSpec::from_fragment(&browser::fragment(), &current) else {
            return;
        };
        if s == current {
            return;
        }
        let model_changed = s.model != current.model;
        let rerun = model_changed
            || s.prompt != current.prompt
            || s.precision != current.precision
            || s.svd != current.svd
            || s.backend != current.backend;
        self.snapshot.set(
            s.snapshot
                .as_deref()
                .and_then(Snapshot::parse)
                .map(|x| (x, SnapshotCheck::Pending)),
        );
        self.layers_input.set(layers_text(&s.layers));
        self.spec.set(s.clone());
        if model_changed {
            self.pick(s.model);
            self.run_when_ready.set_value(true);
        } else if rerun {
            self.start_run();
        } else {
            self.after_run();
        }
    }

    /// ← and → step through the classroom walkthrough (not while typing).
    fn on_key(&self, ev: web_sys::KeyboardEvent) {
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

    /// Listens for links pasted into the tab and for the classroom keys,
    /// for the page's lifetime.
    pub fn listen_to_window(&self) {
        let page = *self;
        let on_hash = Closure::<dyn FnMut()>::new(move || page.on_hash_change());
        let on_key =
            Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(move |ev: web_sys::KeyboardEvent| {
                page.on_key(ev)
            });
        if let Some(w) = web_sys::window() {
            let _ =
                w.add_event_listener_with_callback("hashchange", on_hash.as_ref().unchecked_ref());
            let _ = w.add_event_listener_with_callback("keydown", on_key.as_ref().unchecked_ref());
        }
        on_hash.forget();
        on_key.forget();
    }
}
