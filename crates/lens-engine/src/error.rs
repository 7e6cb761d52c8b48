//! The engine's one error type: every failure on data from a file, a URL or a
//! user ends here, never in a panic.

/// Errors of the engine. Messages are one line, meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid GGUF file: {0}")]
    Gguf(String),
    #[error("invalid safetensors file: {0}")]
    Safetensors(String),
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("unsupported architecture `{0}` (supported: gemma3, qwen3, llama)")]
    UnknownArchitecture(String),
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{0}` contains NaN or infinite values")]
    NonFinite(String),
    #[error("unsupported tensor type {dtype} for `{name}`")]
    UnsupportedDType { name: String, dtype: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens but the model's context window is {max}")]
    PromptTooLong { tokens: usize, max: usize },
    #[error("token id {id} is outside the vocabulary ({vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, EngineError>;
