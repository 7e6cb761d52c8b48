//! One file per view. Views receive plain data (protocol types) and draw
//! it; they know no linear algebra.

pub mod exactness;
pub mod format;
pub mod model_picker;
pub mod prediction;
pub mod progress;
pub mod spectrum;
pub mod token_strip;
