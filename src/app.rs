//! Page layout and state: load the default model on start, predict on demand.

use crate::browser::{next_paint, now_ms};
use crate::model_loader::fetch_bytes;
use crate::views::load_status::{Load, LoadStatus};
use crate::views::prediction::{PredictionView, Run};
use lens_engine::{Model, Precision};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::rc::Rc;

pub const MODEL_ID: &str = "gemma-3-270m";
const MODEL_URL: &str = "./models/gemma-3-270m-q4_k_m.gguf";
const DEFAULT_PROMPT: &str = "The capital of France is";
const TOP_K: usize = 5;

#[component]
pub fn App() -> impl IntoView {
    let (load, set_load) = signal(Load::Fetching {
        received: 0,
        total: None,
    });
    let (run, set_run) = signal(Run::Idle);
    let (prompt, set_prompt) = signal(DEFAULT_PROMPT.to_string());
    let model: StoredValue<Option<Rc<Model>>, LocalStorage> = StoredValue::new_local(None);

    spawn_local(async move {
        let t0 = now_ms();
        let bytes = match fetch_bytes(MODEL_URL, |received, total| {
            set_load.set(Load::Fetching { received, total })
        })
        .await
        {
            Ok(b) => b,
            Err(e) => {
                let hint =
                    "The page expects the model next to it, as `linear-lens serve` provides.";
                return set_load.set(Load::Failed(format!("{e}. {hint}")));
            }
        };
        let size = bytes.len() as u64;
        set_load.set(Load::Parsing { bytes: size });
        next_paint().await;
        match Model::from_gguf_bytes(MODEL_ID, bytes) {
            Ok(m) => {
                model.set_value(Some(Rc::new(m)));
                set_load.set(Load::Ready {
                    bytes: size,
                    ms: now_ms() - t0,
                });
            }
            Err(e) => set_load.set(Load::Failed(format!("cannot read the model: {e}"))),
        }
    });

    let ready = move || matches!(load.get(), Load::Ready { .. });
    let busy = move || matches!(run.get(), Run::Computing { .. });

    let predict = move || {
        let Some(m) = model.get_value() else { return };
        let text = prompt.get_untracked();
        set_run.set(Run::Computing {
            prompt: text.clone(),
        });
        spawn_local(async move {
            // Let "computing…" paint before the engine holds the main thread.
            next_paint().await;
            let t0 = now_ms();
            let result = lens_engine::predict(&m, &text, Precision::F32, TOP_K);
            let ms = now_ms() - t0;
            set_run.set(match result {
                Ok(p) => Run::Done { prediction: p, ms },
                Err(e) => Run::Failed(e.to_string()),
            });
        });
    };

    view! {
        <header class="masthead">
            <h1>"Linear Lens"</h1>
            <p class="tagline">"A small language model, running entirely in your browser."</p>
        </header>
        <main>
            <p class="intro">
                "Given a prompt, a language model turns each token into a vector, passes the "
                "vectors through its layers and scores every word in its vocabulary as the "
                "next token. Linear Lens loads "
                <a href="https://huggingface.co/google/gemma-3-270m">"Gemma 3 270M"</a>
                " (4-bit quantized, about 250 MB) into this page and runs it on your own "
                "machine; nothing is sent anywhere. Freeze the model's normalization scales, "
                "activation gates and attention weights at their values for one prompt, and "
                "the whole network becomes an exact linear map of its input: that map is "
                "what the lens will let you look into. For now, type a prompt and see what "
                "the model predicts next."
            </p>
            <LoadStatus load=load />
            <form
                class="prompt-bar"
                on:submit=move |ev| {
                    ev.prevent_default();
                    predict();
                }
            >
                <label for="prompt">"Prompt"</label>
                <div class="prompt-row">
                    <input
                        id="prompt"
                        type="text"
                        data-testid="prompt-input"
                        autocomplete="off"
                        spellcheck="false"
                        prop:value=move || prompt.get()
                        on:input=move |ev| set_prompt.set(event_target_value(&ev))
                    />
                    <button
                        type="submit"
                        data-testid="predict-button"
                        disabled=move || !ready() || busy()
                    >
                        {move || if busy() { "Computing…" } else { "Predict" }}
                    </button>
                </div>
            </form>
            <PredictionView run=run />
        </main>
        <footer>
            "Precision f32 · CPU (WebAssembly) on the main thread · top "
            {TOP_K}
            " next tokens"
        </footer>
    }
}
