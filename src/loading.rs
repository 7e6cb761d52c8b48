//! Model loading (context [`Model`]): what is loaded (a catalog model or
//! local files), the request that loads it into a worker, the loading
//! replies shown, the model's arrival noted, the stored models cleared.

use crate::browser;
use crate::messages::{self, Message};
use crate::numbers::mb;
use crate::run_state::{default_layers, link_notes, ModelState, APP_VERSION};
use crate::url_sync::Link;
use crate::worker_client::Engine;
use js_sys::Array;
use lens_protocol::catalog::MODEL_CACHE;
use lens_protocol::{Catalog, Reply, Request};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::rc::Rc;

/// What is loaded into the worker, to reload it after a restart.
#[derive(Clone)]
pub(crate) enum Loadable {
    /// A catalog id, a Hugging Face repository or a URL.
    Remote(String),
    /// `File`s the user picked or dropped.
    Files(Array),
}

/// The model: where models come from, what is loaded and how far, and
/// the run's worker that holds it.
#[derive(Clone, Copy)]
pub(crate) struct Model {
    pub catalog: StoredValue<Catalog>,
    /// Where Hugging Face models come from (`?hf_base=` for mirrors, tests).
    pub hf_base: StoredValue<String>,
    pub model_state: RwSignal<ModelState>,
    /// What is loaded into the worker, to reload it after a restart.
    pub loaded: StoredValue<Option<Loadable>, LocalStorage>,
    /// The run's worker (worker 0 of the pool).
    pub engine: StoredValue<Option<Rc<Engine>>, LocalStorage>,
    /// The loaded model's SHA-256 (links record it).
    pub model_sha256: RwSignal<Option<String>>,
    /// What happened while the model loaded (a source dropped for another).
    pub load_note: RwSignal<Option<Message>>,
    /// The browser's storage use and quota.
    pub storage: RwSignal<Option<(f64, f64)>>,
    pub num_layers: RwSignal<usize>,
}

impl Model {
    pub fn new(catalog: Catalog, hf_base: String) -> Self {
        Model {
            catalog: StoredValue::new(catalog),
            hf_base: StoredValue::new(hf_base),
            model_state: RwSignal::new(ModelState::Starting),
            loaded: StoredValue::new_local(None),
            engine: StoredValue::new_local(None),
            model_sha256: RwSignal::new(None),
            load_note: RwSignal::new(None),
            storage: RwSignal::new(None),
            num_layers: RwSignal::new(0),
        }
    }

    pub fn get() -> Self {
        expect_context::<Model>()
    }

    /// The model is loaded (untracked).
    pub fn ready(&self) -> bool {
        matches!(self.model_state.get_untracked(), ModelState::Ready { .. })
    }

    /// The same, tracked (for the views).
    pub fn is_ready(&self) -> bool {
        matches!(self.model_state.get(), ModelState::Ready { .. })
    }

    /// A request to the run's worker.
    pub fn post(&self, req: &Request) {
        if let Some(e) = self.engine.get_value() {
            e.post(req);
        }
    }

    /// Starts a fresh run's worker (it reloads the model from `loaded`).
    pub fn respawn(&self) {
        if let Some(e) = self.engine.get_value() {
            e.spawn();
        }
    }

    /// Asks the (fresh) run's worker for what `loaded` names; `id` is the
    /// model's as the link holds it.
    pub fn load_current(&self, id: String) -> Result<(), Message> {
        if self.loaded.get_value().is_none() {
            self.model_state.set(ModelState::Idle);
            return Ok(());
        }
        let Some(e) = self.engine.get_value() else {
            return Ok(());
        };
        self.load_note.set(None);
        self.model_state.set(ModelState::Downloading {
            received: 0,
            total: None,
            rate: 0.0,
            file: String::new(),
            from_cache: false,
        });
        self.load_into(&e, id).map_err(|msg| {
            self.model_state.set(ModelState::Failed);
            messages::bad_model_reference(&msg)
        })
    }

    /// Asks `engine` (the run's worker or a helper of the pool) to load
    /// what `loaded` names (`id`: the model's as the link holds it).
    pub fn load_into(&self, engine: &Engine, id: String) -> Result<(), String> {
        // The worker refuses a model that cannot fit, before downloading it.
        let memory_limit = Some(lens_protocol::pool::worker_limit(
            browser::device_memory_gb(),
        ));
        match self.loaded.get_value() {
            Some(Loadable::Remote(id)) => {
                let model = self
                    .catalog
                    .with_value(|c| c.resolve(&id, &self.hf_base.get_value()))?;
                engine.post(&Request::Load {
                    model,
                    memory_limit,
                });
            }
            Some(Loadable::Files(files)) => {
                engine.post_files(&Request::LoadFiles { id, memory_limit }, &files);
            }
            None => {}
        }
        Ok(())
    }

    /// A catalog model, repository or URL, resolved to what loads it.
    pub fn resolve(&self, id: &str) -> Result<(String, Loadable), Message> {
        self.catalog
            .with_value(|c| c.resolve(id, &self.hf_base.get_value()))
            .map(|r| (r.id.clone(), Loadable::Remote(r.id)))
            .map_err(|msg| messages::bad_model_reference(&msg))
    }

    /// A loading reply shown: a download's progress, parsing, a note.
    pub fn on_loading(&self, r: Reply) {
        match r {
            Reply::Download {
                received,
                total,
                bytes_per_s,
                file,
                from_cache,
            } => self.model_state.set(ModelState::Downloading {
                received,
                total,
                rate: bytes_per_s,
                file,
                from_cache,
            }),
            Reply::Progress { job: None, .. } => self.model_state.set(ModelState::Parsing),
            Reply::Notice { message } => self.load_note.set(Some(Message::from_text(&message))),
            _ => {}
        }
    }

    pub fn refresh_storage(&self) {
        let storage = self.storage;
        spawn_local(async move { storage.set(browser::storage_estimate().await) });
    }

    /// Drops the models this browser has stored; a failure to `on_error`.
    pub fn clear_stored_models(&self, on_error: impl Fn(Message) + 'static) {
        let storage = self.storage;
        spawn_local(async move {
            if let Err(e) = browser::clear_model_cache(MODEL_CACHE).await {
                on_error(messages::clear_failed(&e));
            }
            storage.set(browser::storage_estimate().await);
        });
    }

    /// The worker has the model: say what it is (and, when it is the
    /// link's own model, `links_model`, what a link made elsewhere means
    /// for it; a comparison link's A on another model is not). Returns the
    /// model's size in bytes.
    pub fn arrived(&self, ready: Reply, link: &Link, links_model: bool) -> Option<u64> {
        let Reply::ModelReady {
            name,
            sha256,
            arch,
            layers,
            hidden,
            vocab,
            bytes,
            from_cache,
            load_ms,
            ..
        } = ready
        else {
            return None;
        };
        // A link made elsewhere: say what differs, once; the page's own
        // links record this version and this file from now on.
        if links_model {
            let notes = link_notes(&link.spec.get_untracked(), APP_VERSION, sha256.as_deref());
            link.link_note
                .set((!notes.is_empty()).then(|| notes.join(" ")));
        }
        self.model_sha256.set(sha256);
        if links_model
            && link
                .spec
                .with_untracked(|s| s.made_with.is_some() || s.model_sha256.is_some())
        {
            link.spec.update(|s| {
                s.made_with = None;
                s.model_sha256 = None;
            });
            link.sync_url();
        }
        self.num_layers.set(layers);
        if link.layers_input.get_untracked().trim().is_empty() {
            link.layers_input.set(default_layers(layers));
        }
        self.model_state.set(ModelState::Ready {
            name,
            detail: format!(
                "{arch}, {layers} layers, d = {hidden}, {vocab} tokens; {} {} in {:.1} s",
                mb(bytes as f64),
                if from_cache {
                    "read from this device's cache"
                } else {
                    "downloaded"
                },
                load_ms / 1000.0
            ),
        });
        self.refresh_storage();
        Some(bytes)
    }
}

/// Local model files, picked or dropped on the page: the model's id
/// (`file:a,b`) and what loads them.
pub(crate) fn files_of(files: web_sys::FileList) -> (String, Loadable) {
    let arr = Array::new();
    let mut names = Vec::new();
    for i in 0..files.length() {
        if let Some(f) = files.get(i) {
            names.push(f.name());
            arr.push(&f);
        }
    }
    (format!("file:{}", names.join(",")), Loadable::Files(arr))
}
