//! Linear Lens web page (Leptos, client-side rendered, built by trunk). It
//! only renders: the engine runs in the worker (`crates/lens-worker`).
//!
//! The rendering lives behind `cfg(target_arch = "wasm32")` so that native
//! `cargo build/clippy` of the workspace stays light; the plain logic
//! (`csv`, `messages`, `numbers`, `queue`, `replies`, `run_state`,
//! `view_data`) builds natively too and its unit tests run there.

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod classroom;
#[cfg(target_arch = "wasm32")]
mod compare;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod csv;
#[cfg(target_arch = "wasm32")]
mod export;
#[cfg(target_arch = "wasm32")]
mod jobs;
#[cfg(target_arch = "wasm32")]
mod layout;
#[cfg(target_arch = "wasm32")]
mod loading;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod messages;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod numbers;
#[cfg(target_arch = "wasm32")]
mod pool;
#[cfg(target_arch = "wasm32")]
mod prompt_bar;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod queue;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod replies;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod run_state;
#[cfg(target_arch = "wasm32")]
mod session;
#[cfg(target_arch = "wasm32")]
mod typing;
#[cfg(target_arch = "wasm32")]
mod url_sync;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod view_data;
#[cfg(target_arch = "wasm32")]
mod views;
#[cfg(target_arch = "wasm32")]
mod worker_client;

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    browser::register_service_worker();
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the web page builds for wasm32: run `trunk build --release --offline`");
}
