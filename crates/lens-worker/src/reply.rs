//! What the worker's requests answer with: the replies' sink and clock,
//! a failure as the page reads it (a kind and a sentence), progress as
//! replies. A leaf: the run and the pool both speak through it.

use lens_engine::{progress, EngineError};
use lens_protocol::{ErrorKind, Reply, Stage};
use std::rc::Rc;

/// Where the replies go.
pub type Emit = Rc<dyn Fn(Reply)>;
/// The worker's clock (milliseconds; `performance.now()` in the browser).
pub type Clock = Rc<dyn Fn() -> f64>;

/// A failed request: what kind of failure and a sentence for the page.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let kind = match &e {
            EngineError::BadRequest(_)
            | EngineError::EmptyPrompt
            | EngineError::PromptTooLong { .. } => ErrorKind::BadPrompt,
            EngineError::OutOfMemory(_) => ErrorKind::OutOfMemory,
            _ => ErrorKind::Engine,
        };
        Failure {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        EngineError::from(e).into()
    }
}

pub(crate) fn progress_reply(job: u32, stage: Stage, done: usize, total: usize) -> Reply {
    Reply::Progress {
        job: Some(job),
        stage,
        done,
        total,
    }
}

/// Progress of a long pass outside a run (a helper's share), as replies.
pub(crate) fn hook(emit: &Emit, job: u32, s: Stage) -> progress::Hook {
    let e = emit.clone();
    Rc::new(move |done, total| e(progress_reply(job, s, done, total)))
}
