//! One file per view.

pub mod load_status;
pub mod prediction;
