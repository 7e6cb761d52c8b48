//! The engine worker's run and requests, natively: their replies collected
//! as the page would receive them.

use lens_engine::analysis::decode::TokenScore;
use lens_engine::run::Session;
use lens_engine::Model;
use lens_protocol::messages::RunRequest;
use lens_protocol::Reply;
use lens_worker::run::{self as worker, Clock, Compute, Emit, Failure};
use std::cell::RefCell;
use std::rc::Rc;

/// A worker step's replies and its result.
pub type Outcome = (Vec<Reply>, Result<(), Failure>);

/// Runs one worker step (a run, layers, a heatmap, steering) with a real
/// clock, collecting its replies.
pub fn replies_of(step: impl FnOnce(Emit, Clock) -> Result<(), Failure>) -> Outcome {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let t0 = std::time::Instant::now();
    let result = step(
        Rc::new(move |r| s.borrow_mut().push(r)),
        Rc::new(move || t0.elapsed().as_secs_f64() * 1e3),
    );
    let replies = seen.borrow().clone();
    (replies, result)
}

/// The prediction, each part by its stage and the end, in the order the
/// replies came (progress and the rest left out).
pub fn stages_of(replies: &[Reply]) -> Vec<&'static str> {
    use lens_protocol::report::Part;
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Prediction { .. } => Some("prediction"),
            Reply::Part { part, .. } => Some(match part {
                Part::Shares(_) => "shares",
                Part::Contributions(_) => "contributions",
                Part::Jacobian(_) => "jacobian",
                Part::Spectra(_) => "spectra",
                Part::Attention(_) => "attention",
                Part::Ordinary(_) => "ordinary",
                Part::Layers(_) => "layers",
                Part::Steered(_) => "steered",
            }),
            Reply::Done { .. } => Some("done"),
            _ => None,
        })
        .collect()
}

/// Runs `req` on this thread's CPU, the session kept in `session`.
pub fn collect(model: &Model, req: &RunRequest, session: &mut Option<Session>) -> Outcome {
    replies_of(|emit, now| {
        lens_gpu::block_on(worker::run(model, req, emit, now, session, Compute::CPU))
    })
}

/// Runs `req` on `compute`, returning the replies, the run's result and
/// the session it leaves.
pub fn run_collecting(
    model: &Model,
    req: &RunRequest,
    compute: Compute<'_>,
) -> (Vec<Reply>, Result<(), Failure>, Option<Session>) {
    let mut session = None;
    let (replies, result) = replies_of(|emit, now| {
        lens_gpu::block_on(worker::run(model, req, emit, now, &mut session, compute))
    });
    (replies, result, session)
}

/// The Report the page folds from these replies.
pub fn report_of(replies: &[Reply]) -> lens_engine::analysis::Report {
    Reply::report_of(replies).expect("a Prediction reply")
}

/// The tokens of a decoded vector, as words.
pub fn words(t: &[TokenScore]) -> Vec<&str> {
    t.iter().map(|t| t.token.as_str()).collect()
}
