//! The engine side of the page: what the worker does with a loaded model.
//! `stages` holds the run (plain Rust, tested natively); the wasm entry in
//! `main.rs` adds the browser parts (messages, downloads, the cache).

pub mod pool;
pub mod stages;
pub mod tuning;
