//! Milliseconds from an arbitrary start, for the counters' waits and the
//! tuning's timings: `Instant` natively, `performance.now()` in a browser
//! (a page or a worker; `Date.now()` where neither has it).

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn now_ms() -> f64 {
    use js_sys::{Function, Reflect};
    use wasm_bindgen::{JsCast, JsValue};
    let performance = Reflect::get(&js_sys::global(), &JsValue::from_str("performance")).ok();
    let now = performance.as_ref().and_then(|p| {
        let f = Reflect::get(p, &JsValue::from_str("now")).ok()?;
        f.dyn_into::<Function>().ok()?.call0(p).ok()?.as_f64()
    });
    now.unwrap_or_else(js_sys::Date::now)
}
