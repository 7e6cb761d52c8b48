//! The page's chart helpers (`src/views/plot.rs`: ticks, colour scales,
//! token labels) are plain Rust: their unit tests run natively here, since
//! the page itself builds for wasm32 only.

#[allow(dead_code)]
#[path = "../src/views/plot.rs"]
mod plot;
