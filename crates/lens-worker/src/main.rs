//! The engine's Web Worker (trunk builds it with `data-type="worker"`).
//! Messages are `lens_protocol::{Request, Reply}` as JS values
//! (`lens_protocol::wire`); a `LoadFiles` request comes as
//! `[request, [File, …]]`, pooled values as `[message, ArrayBuffer]`. Runs block this
//! worker, never the page; the page cancels a run by terminating it.

fn main() {
    #[cfg(target_arch = "wasm32")]
    lens_worker::start();
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("the engine worker builds for wasm32 (trunk builds it with the page)");
}
