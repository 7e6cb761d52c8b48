//! The engine's Web Worker built with relaxed SIMD (feature `relaxed-simd`):
//! the same worker as `main.rs`, its products by fused multiply-add. A
//! browser without relaxed SIMD rejects this module, so the page validates
//! a tiny relaxed-SIMD module first and starts `worker` there instead.

fn main() {
    #[cfg(target_arch = "wasm32")]
    lens_worker::start();
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("the engine worker builds for wasm32 (trunk builds it with the page)");
}
