//! The engine worker's run, natively: its replies collected as the page
//! would receive them.

use lens_engine::run::Session;
use lens_engine::Model;
use lens_protocol::messages::RunRequest;
use lens_protocol::Reply;
use lens_worker::run::{self as worker, Compute, Failure};
use std::cell::RefCell;
use std::rc::Rc;

/// Runs `req` on `compute` (clock at 0), returning the replies, the run's
/// result and the session it leaves.
pub fn run_collecting(
    model: &Model,
    req: &RunRequest,
    compute: Compute<'_>,
) -> (Vec<Reply>, Result<(), Failure>, Option<Session>) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let mut session = None;
    let result = lens_gpu::block_on(worker::run(
        model,
        req,
        Rc::new(move |r| s.borrow_mut().push(r)),
        Rc::new(|| 0.0),
        &mut session,
        compute,
    ));
    let replies = seen.borrow().clone();
    (replies, result, session)
}
