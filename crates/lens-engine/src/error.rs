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
    /// Weights that pass the load check can still overflow on a prompt.
    #[error("the {quantity} of layer {layer} overflowed or became NaN on this prompt{hint}")]
    NonFiniteActivation {
        /// 1-based, as the CLI and the page count layers.
        layer: usize,
        quantity: &'static str,
        hint: &'static str,
    },
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
    /// A prompt or request a run cannot take (empty, too long, a `J` too
    /// large for the caller's limit, a layer out of range): the sentence
    /// says what to change.
    #[error("{0}")]
    BadRequest(String),
    /// A run estimated past the caller's memory limit, with the numbers.
    #[error("{0}")]
    OutOfMemory(String),
    /// The caller's hooks asked the run to stop.
    #[error("the run was cancelled")]
    Cancelled,
    #[error("backend: {0}")]
    Backend(String),
    #[error("tensor computation failed: {}", candle_message(.0))]
    Compute(#[from] candle_core::Error),
}

/// A candle error as one line: without the backtrace candle appends when
/// `RUST_BACKTRACE` is set, and with its context lines joined.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
