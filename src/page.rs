//! The page's shared state: one `Copy` handle of signals and stored values,
//! provided as Leptos context by the App and read by every room
//! (`session`, `loading`, `url_sync`, `layout`) with [`Page::get`].

use crate::loading::Loadable;
use crate::messages::Message;
use crate::pool::{Helper, Pooled, Shares};
use crate::run_state::{BackendInfo, ModelState, Results, Running, Task};
use crate::views::snapshot::SnapshotCheck;
use crate::worker_client::Engine;
use lens_protocol::pool::PoolSize;
use lens_protocol::{AnalysisSpec, Catalog, Snapshot};
use leptos::prelude::*;
use std::rc::Rc;

#[derive(Clone, Copy)]
pub(crate) struct Page {
    pub catalog: StoredValue<Catalog>,
    /// Where Hugging Face models come from (`?hf_base=` for mirrors, tests).
    pub hf_base: StoredValue<String>,
    /// The analysis as the share link holds it.
    pub spec: RwSignal<AnalysisSpec>,
    pub model_state: RwSignal<ModelState>,
    /// The job the worker is on, and how far it is.
    pub running: RwSignal<Option<Running>>,
    pub results: RwSignal<Results>,
    pub error: RwSignal<Option<Message>>,
    /// Where the latest run's passes run (the worker's Backend reply).
    pub backend: RwSignal<BackendInfo>,
    /// The browser's storage use and quota.
    pub storage: RwSignal<Option<(f64, f64)>>,
    pub num_layers: RwSignal<usize>,
    /// The last job id handed out.
    pub job: StoredValue<u32>,
    /// Jobs posted to the worker and not finished, in order (it works on one
    /// at a time).
    pub queue: StoredValue<Vec<(u32, Task)>>,
    /// Run once the model is ready (a share link, or a run asked for early).
    pub run_when_ready: StoredValue<bool>,
    /// What is loaded into the worker, to reload it after a restart.
    pub loaded: StoredValue<Option<Loadable>, LocalStorage>,
    pub engine: StoredValue<Option<Rc<Engine>>, LocalStorage>,
    /// The pool's other workers (`pool.rs`): worker `w` is `helpers[w - 1]`.
    pub helpers: StoredValue<Vec<Helper>, LocalStorage>,
    /// How many workers this machine allows, and why (engine details).
    pub pool_size: RwSignal<Option<PoolSize>>,
    /// The run's `J`, or a Lanczos block's products, being computed by the pool.
    pub pooled: StoredValue<Option<Pooled>, LocalStorage>,
    /// Chunks the pool computed since the model loaded, and by whom.
    pub shares: RwSignal<Shares>,
    /// What happened to the pool during the run (a worker replaced).
    pub pool_note: RwSignal<Option<Message>>,
    /// What happened while the model loaded (a source dropped for another).
    pub load_note: RwSignal<Option<Message>>,
    /// The loaded model's SHA-256 (links record it).
    pub model_sha256: RwSignal<Option<String>>,
    /// A link made by another version of the app or with another model
    /// file: what that means for its numbers.
    pub link_note: RwSignal<Option<String>>,
    /// A link's snapshot, shown until the page has recomputed it.
    pub snapshot: RwSignal<Option<(Snapshot, SnapshotCheck)>>,
    /// The layers field as typed.
    pub layers_input: RwSignal<String>,
}

impl Page {
    /// The page state of a fresh tab: `spec` from its link (or the
    /// defaults), nothing loaded.
    pub fn new(catalog: Catalog, hf_base: String, spec: AnalysisSpec, linked: bool) -> Self {
        let snapshot = spec
            .snapshot
            .as_deref()
            .and_then(Snapshot::parse)
            .map(|s| (s, SnapshotCheck::Pending));
        let layers_input = layers_text(&spec.layers);
        Page {
            catalog: StoredValue::new(catalog),
            hf_base: StoredValue::new(hf_base),
            spec: RwSignal::new(spec),
            model_state: RwSignal::new(ModelState::Starting),
            running: RwSignal::new(None),
            results: RwSignal::new(Results::default()),
            error: RwSignal::new(None),
            backend: RwSignal::new(BackendInfo::default()),
            storage: RwSignal::new(None),
            num_layers: RwSignal::new(0),
            job: StoredValue::new(0),
            queue: StoredValue::new(Vec::new()),
            run_when_ready: StoredValue::new(linked),
            loaded: StoredValue::new_local(None),
            engine: StoredValue::new_local(None),
            helpers: StoredValue::new_local(Vec::new()),
            pool_size: RwSignal::new(None),
            pooled: StoredValue::new_local(None),
            shares: RwSignal::new(Shares::default()),
            pool_note: RwSignal::new(None),
            load_note: RwSignal::new(None),
            model_sha256: RwSignal::new(None),
            link_note: RwSignal::new(None),
            snapshot: RwSignal::new(snapshot),
            layers_input: RwSignal::new(layers_input),
        }
    }

    /// The page state from context (provided by the App).
    pub fn get() -> Self {
        expect_context::<Page>()
    }

    pub fn model_ready(&self) -> bool {
        matches!(self.model_state.get_untracked(), ModelState::Ready { .. })
    }

    /// Stops whatever the workers do: the job queue is dropped, every
    /// worker of the pool is terminated at once, and a fresh run worker
    /// starts (it reloads the model from `loaded`; the helpers follow once
    /// it has). Every restart of the page goes through here.
    pub fn restart_engine(&self) {
        self.queue.update_value(|q| q.clear());
        self.running.set(None);
        self.stop_helpers();
        if let Some(e) = self.engine.get_value() {
            e.spawn();
        }
    }
}

/// Layers as the layers field shows them: `1,6,12`.
pub(crate) fn layers_text(layers: &[usize]) -> String {
    layers
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
