//! The engine side of the page: what the worker does with a loaded model.
//! `run` is the transport for the engine's run driver (plain Rust, tested
//! natively); the wasm entry in `main.rs` adds the browser parts (messages,
//! downloads, the cache).

pub mod pool;
pub mod reply;
pub mod run;
pub mod tuning;
