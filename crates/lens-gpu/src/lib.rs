//! The frozen-linear passes on a GPU, through `wgpu`: WebGPU in the
//! browser, Vulkan / Metal / DX12 natively. [`Gpu`] implements the engine's
//! [`Backend`](lens_engine::backend::Backend) trait in f32 with WGSL
//! kernels, so the passes (forward mode, the transpose pass, the full
//! Jacobian) are the engine's own, not a second copy.
//!
//! The frozen forward itself (the ordinary forward pass that records the
//! frozen coefficients) runs on the GPU too ([`trace::trace`]), from the
//! model's weights kept resident in their stored blocks and decoded on
//! the device.
//!
//! Readback is asynchronous (a browser cannot block on the GPU): the
//! engine's pass drivers (`lens_engine::jacobian::*_on`) are `async`, wait
//! on the backend after each block (`Backend::settle`) and read back with
//! `Backend::read`; natively [`block_on`] runs them.

mod accelerator;
mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
mod clock;
mod device;
mod error;
pub mod gemm;
mod readback;
mod record;
mod resident;
pub mod trace;
mod tune;
mod weights;

pub use device::{AdapterKind, AdapterSummary, Gpu, GpuBuf, GpuOptions};
pub use error::GpuError;
pub use gemm::{GemmShape, GemmTuning, ShapeClass, Variant, VariantRate};
pub use lens_report::GpuWork;

/// Runs a future to completion on this thread (native only: a browser
/// awaits the passes instead).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
