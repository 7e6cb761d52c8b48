//! The engine side of the page: what the worker does with a loaded model.
//! `run` is the transport for the engine's run driver (plain Rust, tested
//! natively); the wasm modules add the browser parts (messages, downloads,
//! the cache), started by the worker binaries' `main`: `worker` (SIMD128)
//! and `worker_fma` (the same with relaxed SIMD's fused multiply-add,
//! feature `relaxed-simd`).

pub mod pool;
pub mod reply;
pub mod run;
pub mod tuning;

#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod link;
#[cfg(target_arch = "wasm32")]
mod load;
#[cfg(target_arch = "wasm32")]
mod outbox;
#[cfg(target_arch = "wasm32")]
mod worker;

/// Runs this Web Worker: installs the panic hook and answers the page.
#[cfg(target_arch = "wasm32")]
pub fn start() {
    console_error_panic_hook::set_once();
    worker::start();
}
