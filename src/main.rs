//! Linear Lens web page (Leptos, client-side rendered, built by trunk). It
//! only renders: the engine runs in the worker (`crates/lens-worker`).
//!
//! Everything lives behind `cfg(target_arch = "wasm32")` so that native
//! `cargo build/clippy` of the workspace stays light.

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod classroom;
#[cfg(target_arch = "wasm32")]
mod export;
#[cfg(target_arch = "wasm32")]
mod replies;
#[cfg(target_arch = "wasm32")]
mod run_state;
#[cfg(target_arch = "wasm32")]
mod view_data;
#[cfg(target_arch = "wasm32")]
mod views;
#[cfg(target_arch = "wasm32")]
mod worker_client;

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the web page builds for wasm32: run `trunk build --release --offline`");
}
