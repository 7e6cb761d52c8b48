//! Choosing a model: the catalog, a Hugging Face repo id or URL, local
//! files (picker or drag-and-drop), and what the page keeps offline.

use lens_protocol::Catalog;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

#[component]
pub fn ModelPicker(
    catalog: StoredValue<Catalog>,
    /// The model in use (a catalog id, `hf:owner/repo`, a URL or `file:…`).
    current: Signal<String>,
    status: Signal<String>,
    on_pick: Callback<String>,
    on_files: Callback<web_sys::FileList>,
    storage: Signal<Option<(f64, f64)>>,
    on_clear: Callback<()>,
) -> impl IntoView {
    let (custom, set_custom) = signal(String::new());
    let options = move || {
        let cur = current.get();
        let mut opts: Vec<_> = catalog.with_value(|c| {
            c.models
                .iter()
                .map(|m| {
                    let label = if m.note.is_empty() {
                        m.name.clone()
                    } else {
                        format!("{} — {}", m.name, m.note)
                    };
                    (m.id.clone(), label)
                })
                .collect()
        });
        if !opts.iter().any(|(id, _)| *id == cur) {
            let label = match cur.strip_prefix("file:") {
                Some(f) => format!("local files: {f}"),
                None => format!("{cur} (pasted)"),
            };
            opts.push((cur.clone(), label));
        }
        opts.into_iter()
            .map(|(id, label)| {
                let selected = id == cur;
                view! { <option value=id selected=selected>{label}</option> }
            })
            .collect_view()
    };
    view! {
        <div class="model-picker">
            <label for="model-select">"Model"</label>
            <select id="model-select" data-testid="model-select"
                prop:value=move || current.get()
                on:change=move |ev| on_pick.run(event_target_value(&ev))>
                {options}
            </select>
            <span class="model-status" data-testid="model-status">{move || status.get()}</span>
            <details class="more-models">
                <summary>"Other models: Hugging Face, local files, storage"</summary>
                <form class="custom-model" on:submit=move |ev| {
                    ev.prevent_default();
                    let v = custom.get_untracked();
                    if !v.trim().is_empty() { on_pick.run(v.trim().to_string()) }
                }>
                    <label for="custom-model">"Hugging Face repo (owner/name) or URL of a .gguf file"</label>
                    <div class="row">
                        <input id="custom-model" type="text" data-testid="custom-model-input"
                            placeholder="Qwen/Qwen3-0.6B" autocomplete="off" spellcheck="false"
                            prop:value=move || custom.get()
                            on:input=move |ev| set_custom.set(event_target_value(&ev)) />
                        <button type="submit" class="secondary">"Load"</button>
                    </div>
                </form>
                <label for="model-files">"Or files from this computer (a .gguf, or config.json + tokenizer.json + .safetensors); you can also drop them on the page"</label>
                <input id="model-files" type="file" multiple data-testid="model-files"
                    accept=".gguf,.json,.safetensors"
                    on:change=move |ev| {
                        let input: Option<web_sys::HtmlInputElement> =
                            ev.target().and_then(|t| t.dyn_into().ok());
                        if let Some(files) = input.and_then(|i| i.files()) {
                            if files.length() > 0 { on_files.run(files) }
                        }
                    } />
                <p class="storage" data-testid="storage">
                    {move || match storage.get() {
                        Some((used, quota)) => format!(
                            "Kept for offline use on this device: {} (the browser allows up to {}).",
                            super::format::mb(used), super::format::mb(quota)),
                        None => "Storage use unknown.".into(),
                    }}
                    " "
                    <button type="button" class="secondary" data-testid="clear-cache"
                        on:click=move |_| on_clear.run(())>"Clear stored models"</button>
                </p>
            </details>
        </div>
    }
}
