//! Where a run computes, decided once at its start: this thread's CPU at
//! the precision asked for, an accelerator (the GPU, in f32), and whether
//! `J`'s rows (or a matrix-free run's products) are shared with a pool of
//! other workers. The engine does not know wgpu or the page: the GPU crate
//! and the worker implement these traits.

use crate::analysis::lanczos::{Block, Products};
use crate::error::Result;
use crate::forward::Precision;
use crate::jacobian::PassOptions;
use crate::model::Model;
use crate::trace::Trace;
use candle_core::Tensor;
use lens_report::{Device, GpuWork};
use std::future::Future;
use std::pin::Pin;

/// A computation that may wait (the GPU's readback, the pool's replies).
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// A device beside the CPU with its own frozen forward and passes, in f32.
pub trait Accelerator {
    /// The adapter as the page's engine label names it.
    fn label(&self) -> String;
    /// The adapter's name, as a certificate records it.
    fn name(&self) -> String;
    /// Why the device stopped, once it has (every later call fails).
    fn lost(&self) -> Option<String>;
    /// The frozen forward of `ids`.
    fn trace<'a>(&'a self, model: &'a Model, ids: &'a [u32]) -> Boxed<'a, Trace>;
    /// The contributions `c_i = J_i x_i` (`[n, d]`), by forward mode.
    fn contributions<'a>(&'a self, model: &'a Model, tr: &'a Trace) -> Boxed<'a, Tensor>;
    /// `uᵀ J` for the rows of `u` (`[k, d]`) on the output: `[n, k, d]`, as
    /// the CPU's `jacobian::vjp`.
    fn vjp_output<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
        u: &'a Tensor,
    ) -> Boxed<'a, Tensor>;
    /// The full detached `J` (`[n, d, d]`), and the device's work for it
    /// alone (a kernel tuning before it is not counted).
    fn jacobian<'a>(&'a self, model: &'a Model, tr: &'a Trace) -> Boxed<'a, (Tensor, GpuWork)>;
}

/// Other workers that form `J`'s rows beside this one (the page's pool).
pub trait Pool {
    /// Workers forming `J` together, this one included.
    fn workers(&self) -> usize;
    /// A full `J` of `n` tokens (`d` rows of `d`, `elem` bytes each) will
    /// be wanted: the others may start on their rows now.
    fn start_jacobian(&self, n: usize, d: usize, elem: usize);
    /// `J` (`[n, d, d]`), its rows formed by the pool, this worker taking
    /// shares until the whole is assembled.
    fn jacobian<'a>(&'a self, model: &'a Model, tr: &'a Trace) -> Boxed<'a, Tensor>;
    /// A matrix-free block's products `A x_j` (see `lanczos::Products`),
    /// shared out the same way.
    fn products<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
        x: &'a [Vec<f64>],
        position: Option<usize>,
    ) -> Boxed<'a, Block>;
}

/// Where a run computes.
#[derive(Clone, Default)]
pub struct Compute<'a> {
    /// The accelerator, when the run uses one.
    pub gpu: Option<&'a dyn Accelerator>,
    /// Why the run is not on an accelerator although one was wanted.
    pub fallback: Option<String>,
    /// The pool sharing `J`'s rows on the CPU.
    pub pool: Option<&'a dyn Pool>,
}

impl Compute<'_> {
    /// This thread's CPU alone.
    pub const CPU: Compute<'static> = Compute {
        gpu: None,
        fallback: None,
        pool: None,
    };

    /// The device a run at `precision` computes on.
    pub fn device(&self, precision: Precision) -> Device {
        Device::choose(self.gpu.is_some(), precision)
    }
}

/// The Lanczos products of a matrix-free run, computed by a pool.
pub(crate) struct ByPool<'a>(pub &'a dyn Pool);

impl Products for ByPool<'_> {
    fn lanes(&self) -> usize {
        self.0.workers()
    }

    async fn apply(
        &mut self,
        model: &Model,
        trace: &Trace,
        x: &[Vec<f64>],
        position: Option<usize>,
        _pass: PassOptions,
    ) -> Result<Block> {
        self.0.products(model, trace, x, position).await
    }
}
