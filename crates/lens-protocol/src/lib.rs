//! What the page and the engine worker say to each other, plus the two
//! pieces of plain data both sides read: the share-link state
//! ([`AnalysisSpec`], kept in the URL fragment) and the model catalog.
//! No engine, no browser: native tests cover all of it (`wire`, the
//! messages as JS values, builds for wasm32 only).

pub mod catalog;
pub mod messages;
pub mod pool;
pub mod snapshot;
pub mod spec;
#[cfg(target_arch = "wasm32")]
pub mod wire;

pub use catalog::{Catalog, CatalogEntry, FileSpec, ModelFormat, Source};
pub use lens_report as report;
pub use lens_report::Device;
pub use messages::{ErrorKind, Reply, Request, Stage};
pub use snapshot::Snapshot;
pub use spec::{AnalysisSpec, BackendChoice, CompareSpec, Precision, SteerSpec, SvdMode, View};
