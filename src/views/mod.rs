//! One file per view. Views receive plain data (protocol types) and draw
//! it; they know no linear algebra.

pub mod attention;
pub mod backend;
pub mod compare;
pub mod decode;
pub mod exactness;
pub mod format;
pub mod heatmap;
pub mod layers;
pub mod message;
pub mod model_picker;
pub mod numbers_table;
pub mod path;
pub mod plot;
pub mod prediction;
pub mod progress;
pub mod snapshot;
pub mod spectrum;
pub mod steering;
pub mod token_strip;
