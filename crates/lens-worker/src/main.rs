//! The engine's Web Worker (trunk builds it with `data-type="worker"`).
//! Messages are `lens_protocol::{Request, Reply}` as JS values
//! (`lens_protocol::wire`); a `LoadFiles` request comes as
//! `[request, [File, …]]`, pooled values as `[message, ArrayBuffer]`. Runs block this
//! worker, never the page; the page cancels a run by terminating it.

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

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the engine worker builds for wasm32 (trunk builds it with the page)");
}
