//! The GPU's product kernels chosen on the visitor's own adapter: on the
//! first full J with a GPU, each variant is timed on the pass's own
//! products and the fastest kept, remembered per adapter in Cache Storage
//! (beside the models), so later visits start tuned. Natively (tests) the
//! tuning lasts as long as the `Gpu`.

use lens_engine::jacobian::jacobian_products;
use lens_engine::run::{Accelerator, Boxed};
use lens_engine::trace::Trace;
use lens_engine::Model;
use lens_gpu::{GemmTuning, Gpu};

/// The GPU with its kernel tuning remembered across visits: before the
/// first `J`, the tuning is [`ensure`]d; everything else is the GPU's.
pub struct Tuned<'a>(pub &'a Gpu);

impl Accelerator for Tuned<'_> {
    fn label(&self) -> String {
        self.0.label()
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn lost(&self) -> Option<String> {
        Accelerator::lost(self.0)
    }
    fn trace<'a>(&'a self, model: &'a Model, ids: &'a [u32]) -> Boxed<'a, Trace> {
        self.0.trace(model, ids)
    }
    fn contributions<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
    ) -> Boxed<'a, candle_core::Tensor> {
        self.0.contributions(model, tr)
    }
    fn vjp_output<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
        u: &'a candle_core::Tensor,
    ) -> Boxed<'a, candle_core::Tensor> {
        self.0.vjp_output(model, tr, u)
    }
    fn jacobian<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
    ) -> Boxed<'a, (candle_core::Tensor, lens_gpu::GpuWork)> {
        Box::pin(async move {
            ensure(self.0, model, tr.n()).await;
            self.0.jacobian(model, tr).await
        })
    }
}

/// Where a tuning is kept: one entry per adapter.
#[cfg(target_arch = "wasm32")]
fn key_url(adapter: &str) -> String {
    let key: String = js_sys::encode_uri_component(adapter).into();
    format!("./gpu-tuning.json?adapter={key}")
}

/// Uses the remembered tuning of this adapter, or times the variants on
/// the products of an `n`-token J and remembers the result. A failure
/// leaves the kernels as they are: the tuning only makes J faster.
pub async fn ensure(g: &Gpu, model: &Model, n: usize) {
    if !g.tuning().rates.is_empty() {
        return;
    }
    let adapter = g.adapter().key();
    if let Some(t) = remembered(&adapter).await {
        if g.set_tuning(t).is_ok() {
            return;
        }
    }
    if let Ok(t) = g.tune(&jacobian_products(model, n)).await {
        remember(&t).await;
    }
}

#[cfg(target_arch = "wasm32")]
async fn remembered(adapter: &str) -> Option<GemmTuning> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let cache = open().await?;
    let hit = JsFuture::from(cache.match_with_str(&key_url(adapter)))
        .await
        .ok()?;
    let resp: web_sys::Response = hit.dyn_into().ok()?;
    let text = JsFuture::from(resp.text().ok()?).await.ok()?.as_string()?;
    serde_json::from_str(&text).ok()
}

#[cfg(target_arch = "wasm32")]
async fn remember(t: &GemmTuning) {
    use wasm_bindgen_futures::JsFuture;
    let (Some(cache), Ok(json)) = (open().await, serde_json::to_string(t)) else {
        return;
    };
    if let Ok(resp) = web_sys::Response::new_with_opt_str(Some(&json)) {
        let _ = JsFuture::from(cache.put_with_str(&key_url(&t.adapter), &resp)).await;
    }
}

#[cfg(target_arch = "wasm32")]
async fn open() -> Option<web_sys::Cache> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().dyn_into().ok()?;
    let caches = scope.caches().ok()?;
    let c = JsFuture::from(caches.open(lens_protocol::catalog::MODEL_CACHE))
        .await
        .ok()?;
    c.dyn_into().ok()
}

#[cfg(not(target_arch = "wasm32"))]
async fn remembered(_adapter: &str) -> Option<GemmTuning> {
    None
}

#[cfg(not(target_arch = "wasm32"))]
async fn remember(_t: &GemmTuning) {}
