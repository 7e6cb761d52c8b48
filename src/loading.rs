//! Model loading: what is loaded (a catalog model or local files), the
//! request that loads it into the worker, a model picked by hand or dropped
//! on the page, the model's arrival, the stored models cleared.

use crate::browser;
use crate::messages;
use crate::numbers::mb;
use crate::page::Page;
use crate::run_state::{default_layers, link_notes, ModelState, Results, APP_VERSION};
use crate::worker_client::Engine;
use js_sys::Array;
use lens_protocol::catalog::MODEL_CACHE;
use lens_protocol::{Reply, Request};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// What is loaded into the worker, to reload it after a restart.
#[derive(Clone)]
pub(crate) enum Loadable {
    /// A catalog id, a Hugging Face repository or a URL.
    Remote(String),
    /// `File`s the user picked or dropped.
    Files(Array),
}

impl Page {
    /// Asks the (fresh) worker for what `loaded` names.
    pub fn load_current(&self) {
        if self.loaded.get_value().is_none() {
            self.model_state.set(ModelState::Idle);
            return;
        }
        let Some(e) = self.engine.get_value() else {
            return;
        };
        self.load_note.set(None);
        self.model_state.set(ModelState::Downloading {
            received: 0,
            total: None,
            rate: 0.0,
            file: String::new(),
            from_cache: false,
        });
        if let Err(msg) = self.load_into(&e) {
            self.error.set(Some(messages::bad_model_reference(&msg)));
            self.model_state.set(ModelState::Failed);
        }
    }

    /// Asks `engine` (the run's worker or a helper of the pool) to load
    /// what `loaded` names.
    pub fn load_into(&self, engine: &Engine) -> Result<(), String> {
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
                let id = self.spec.get_untracked().model;
                engine.post_files(&Request::LoadFiles { id, memory_limit }, &files);
            }
            None => {}
        }
        Ok(())
    }

    /// Replaces the model: results dropped, a fresh worker loads `what`.
    fn switch_model(&self, model_id: String, what: Loadable) {
        self.error.set(None);
        self.spec.update(|s| {
            s.model = model_id;
            s.token = None;
        });
        self.results.set(Results::default());
        // A model picked by hand: a link's pending run is not for it.
        self.run_when_ready.set_value(false);
        self.loaded.set_value(Some(what));
        self.restart_engine();
    }

    /// A catalog model (or repository, or URL) picked by hand.
    pub fn pick(&self, id: String) {
        let resolved = self
            .catalog
            .with_value(|c| c.resolve(&id, &self.hf_base.get_value()));
        match resolved {
            Ok(r) => {
                self.switch_model(r.id.clone(), Loadable::Remote(r.id));
                self.sync_url();
            }
            Err(msg) => self.error.set(Some(messages::bad_model_reference(&msg))),
        }
    }

    /// Local model files, picked or dropped on the page.
    pub fn pick_files(&self, files: web_sys::FileList) {
        let arr = Array::new();
        let mut names = Vec::new();
        for i in 0..files.length() {
            if let Some(f) = files.get(i) {
                names.push(f.name());
                arr.push(&f);
            }
        }
        self.switch_model(format!("file:{}", names.join(",")), Loadable::Files(arr));
    }

    pub fn refresh_storage(&self) {
        let storage = self.storage;
        spawn_local(async move { storage.set(browser::storage_estimate().await) });
    }

    /// Drops the models this browser has stored.
    pub fn clear_stored_models(&self) {
        let (error, storage) = (self.error, self.storage);
        spawn_local(async move {
            if let Err(e) = browser::clear_model_cache(MODEL_CACHE).await {
                error.set(Some(messages::clear_failed(&e)));
            }
            storage.set(browser::storage_estimate().await);
        });
    }

    /// The worker has the model: say what it is, and run what waits for it.
    pub fn on_model_ready(&self, ready: Reply) {
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
            return;
        };
        // A link made elsewhere: say what differs, once; the page's own
        // links record this version and this file from now on.
        let notes = link_notes(&self.spec.get_untracked(), APP_VERSION, sha256.as_deref());
        self.link_note
            .set((!notes.is_empty()).then(|| notes.join(" ")));
        self.model_sha256.set(sha256);
        if self
            .spec
            .with_untracked(|s| s.made_with.is_some() || s.model_sha256.is_some())
        {
            self.spec.update(|s| {
                s.made_with = None;
                s.model_sha256 = None;
            });
            self.sync_url();
        }
        self.num_layers.set(layers);
        if self.layers_input.get_untracked().trim().is_empty() {
            self.layers_input.set(default_layers(layers));
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
        self.start_helpers(bytes);
        if self.run_when_ready.get_value() {
            self.run_when_ready.set_value(false);
            self.start_run();
        }
    }
}
