//! Choosing the product kernel on the adapter itself: each candidate
//! variant of each shape class timed on the pass's own products, the
//! fastest kept (and remembered by the caller, per adapter).

use crate::clock;
use crate::device::Gpu;
use crate::error::Result;
use crate::gemm::{GemmShape, GemmTuning, ShapeClass, Variant, VariantRate};
use lens_engine::backend::{Batch, Epilogue, MatView};

impl Gpu {
    /// Times every candidate variant of each class on the largest of
    /// `shapes` in that class (the pass's own products:
    /// `lens_engine::jacobian::jacobian_products`), uses the fastest of
    /// each from now on and returns the tuning with every rate. A product's
    /// shared operand stays shared, so the timing needs little memory.
    pub async fn tune(&self, shapes: &[GemmShape]) -> Result<GemmTuning> {
        // Emulated adapters run at about a GFLOP/s: one timed run each.
        let reps = if self.adapter().device_type.is_software() {
            1
        } else {
            5
        };
        let mut rates = Vec::new();
        for class in [ShapeClass::Wide, ShapeClass::Thin] {
            let Some(shape) = shapes
                .iter()
                .filter(|s| ShapeClass::of(s.rows) == class && s.count > 0)
                .max_by(|a, b| a.flops().total_cmp(&b.flops()))
                .copied()
            else {
                continue;
            };
            let GemmShape {
                rows,
                cols,
                inner,
                count,
            } = shape;
            let vals = |len: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                    .collect()
            };
            let a = self.upload_f32(&vals(rows * inner))?;
            let b = self.upload_f32(&vals(inner * cols))?;
            let dst = self.uninit(count * rows * cols)?;
            let dv = MatView::dense(0, rows, cols);
            let batch = Batch {
                count,
                dst: rows * cols,
                a: 0,
                b: 0,
            };
            for &v in Variant::candidates(class) {
                let run = || {
                    self.product_with(
                        v,
                        &dst,
                        dv,
                        (&a, MatView::dense(0, rows, inner)),
                        (&b, MatView::dense(0, inner, cols)),
                        batch,
                        false,
                        Epilogue::NONE,
                    )
                };
                run()?;
                self.settle().await?;
                let started = clock::now_ms();
                for _ in 0..reps {
                    run()?;
                }
                self.settle().await?;
                let ms = (clock::now_ms() - started).max(1e-3);
                rates.push(VariantRate {
                    variant: v,
                    class,
                    shape,
                    gflops: shape.flops() * reps as f64 / ms / 1e6,
                });
            }
        }
        let t = GemmTuning::from_rates(&self.adapter().key(), rates);
        self.set_tuning(t.clone())?;
        Ok(t)
    }
}
