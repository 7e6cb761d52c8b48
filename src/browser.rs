//! Small helpers over the browser APIs: time, the URL, the clipboard, storage.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Milliseconds from `performance.now()` (`std::time::Instant` panics on wasm32).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

/// `navigator.hardwareConcurrency`: the cores the browser offers.
pub fn cores() -> Option<usize> {
    let n = web_sys::window()?.navigator().hardware_concurrency();
    (n.is_finite() && n >= 1.0).then_some(n as usize)
}

/// `navigator.deviceMemory` in GB (Chromium only; coarse, at most 8).
pub fn device_memory_gb() -> Option<f64> {
    let nav = web_sys::window()?.navigator();
    js_sys::Reflect::get(&nav, &"deviceMemory".into())
        .ok()?
        .as_f64()
}

/// A readable message from a JavaScript exception or rejection value.
pub fn js_error(v: JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// The URL fragment without `#`.
pub fn fragment() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .map(|h| h.trim_start_matches('#').to_string())
        .unwrap_or_default()
}

/// A query parameter of the page's URL.
pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// The page's URL with `fragment` (query kept: it may name a mirror).
pub fn url_with_fragment(fragment: &str) -> String {
    let Some(loc) = web_sys::window().map(|w| w.location()) else {
        return format!("#{fragment}");
    };
    format!(
        "{}{}{}#{fragment}",
        loc.origin().unwrap_or_default(),
        loc.pathname().unwrap_or_default(),
        loc.search().unwrap_or_default()
    )
}

/// Replaces the fragment without adding a history entry or reloading.
pub fn set_fragment(fragment: &str) {
    if let Some(w) = web_sys::window() {
        if let Ok(h) = w.history() {
            let _ = h.replace_state_with_url(&JsValue::NULL, "", Some(&format!("#{fragment}")));
        }
    }
}

pub async fn copy_text(text: &str) -> Result<(), String> {
    let w = web_sys::window().ok_or("no window")?;
    JsFuture::from(w.navigator().clipboard().write_text(text))
        .await
        .map(|_| ())
        .map_err(js_error)
}

/// (bytes used, bytes available) of this origin's storage.
pub async fn storage_estimate() -> Option<(f64, f64)> {
    let w = web_sys::window()?;
    let est = JsFuture::from(w.navigator().storage().estimate().ok()?)
        .await
        .ok()?;
    let get = |k: &str| js_sys::Reflect::get(&est, &k.into()).ok()?.as_f64();
    Some((get("usage")?, get("quota")?))
}

/// Deletes the model cache (the worker's Cache Storage bucket).
pub async fn clear_model_cache(name: &str) -> Result<(), String> {
    let w = web_sys::window().ok_or("no window")?;
    let caches = w.caches().map_err(js_error)?;
    JsFuture::from(caches.delete(name))
        .await
        .map(|_| ())
        .map_err(js_error)
}

/// Scrolls the element with `id` into view (no-op when absent).
pub fn scroll_to(id: &str) {
    if let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(id))
    {
        el.scroll_into_view();
    }
}

/// Registers the service worker that keeps the app's own files for visits
/// without a network (`web/sw.js`), where the browser offers service
/// workers (a secure context: https, or this machine). A refusal only means
/// no offline copy.
pub fn register_service_worker() {
    let Some(w) = web_sys::window() else {
        return;
    };
    let nav = w.navigator();
    if !js_sys::Reflect::has(&nav, &"serviceWorker".into()).unwrap_or(false) {
        return;
    }
    let promise = nav.service_worker().register("./sw.js");
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = JsFuture::from(promise).await {
            web_sys::console::warn_1(&e);
        }
    });
}
