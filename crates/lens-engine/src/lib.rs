//! Linear Lens engine: model files → frozen forward → detached Jacobian →
//! analyses. Bytes in, plain data out; knows nothing of browsers.

pub mod error;
pub mod forward;
pub mod model;
pub mod tokenizer;
pub mod weights;

pub use error::{EngineError, Result};
pub use forward::{predict, ForwardOutput, Precision, PrecisionDType, Prediction, TopToken};
pub use model::{Arch, Model, ModelConfig};
pub mod analysis;
pub mod backend;
pub mod frozen;
pub mod jacobian;
pub mod memory;
pub mod ordinary;
pub mod progress;
pub mod run;
pub mod stages;
pub mod trace;
