//! The GPU as the engine's run sees it ([`Accelerator`]): its own frozen
//! forward, and the engine's passes on this backend. A caller that keeps
//! kernel tunings (the worker, in Cache Storage) sets one before the run;
//! otherwise the first `J` times the variants and the tuning lasts as long
//! as the `Gpu`.

use crate::device::Gpu;
use lens_engine::jacobian::{
    contributions_on, detached_jacobian_on, jacobian_products, vjp_tap_on, PassOptions, Tap,
};
use lens_engine::run::{Accelerator, Boxed};
use lens_engine::trace::Trace;
use lens_engine::Model;

impl Accelerator for Gpu {
    fn label(&self) -> String {
        self.adapter().label()
    }

    fn name(&self) -> String {
        self.adapter().name.clone()
    }

    fn lost(&self) -> Option<String> {
        Gpu::lost(self)
    }

    fn trace<'a>(&'a self, model: &'a Model, ids: &'a [u32]) -> Boxed<'a, Trace> {
        Box::pin(async move { Ok(crate::trace::trace(self, model, ids).await?) })
    }

    fn contributions<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
    ) -> Boxed<'a, candle_core::Tensor> {
        Box::pin(contributions_on(self, model, tr, PassOptions::default()))
    }

    fn vjp_output<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
        u: &'a candle_core::Tensor,
    ) -> Boxed<'a, candle_core::Tensor> {
        Box::pin(async move {
            let output = Tap::output(model.config.layers);
            Ok(
                vjp_tap_on(self, model, tr, output, u, PassOptions::default())
                    .await?
                    .0,
            )
        })
    }

    fn jacobian<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
    ) -> Boxed<'a, (candle_core::Tensor, lens_report::GpuWork)> {
        Box::pin(async move {
            if self.tuning().rates.is_empty() {
                // The tuning only makes J faster: a failure keeps the defaults.
                let _ = self.tune(&jacobian_products(model, tr.n())).await;
            }
            // The J's own work, not the tuning's.
            let before = self.work();
            let (j, _) = detached_jacobian_on(self, model, tr, PassOptions::default()).await?;
            Ok((j, self.work().since(&before)))
        })
    }
}
