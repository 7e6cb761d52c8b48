//! A run whose full `J` is formed by a pool of workers, natively: the page's
//! side (`lens_protocol::pool::Assembly`, as `src/pool.rs` drives it) played
//! in-process, each helper with its own frozen forward (`stages::rows`), one
//! helper losing its first chunk. The pooled run's `J` and spectra equal a
//! single worker's (Gemma 3 270M, f64).

mod common;
mod real_models;

use common::worker::run_collecting;
use lens_engine::Model;
use lens_protocol::messages::RunRequest;
use lens_protocol::pool::{Assembly, Chunk};
use lens_protocol::report::Part;
use lens_protocol::{Precision, Reply, SvdMode};
use lens_worker::pool::{self, Pool, PoolWord};
use lens_worker::stages::{self, Session};
use real_models::{model_path, GEMMA};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

const PROMPT: &str = "Marin is the";

/// The page and its helpers, in one process.
struct PlayedPage<'a> {
    model: &'a Model,
    workers: usize,
    assembly: RefCell<Option<Assembly>>,
    /// Each helper's own frozen forward (`helpers[w - 1]`).
    helpers: RefCell<Vec<Option<Session>>>,
    /// This helper loses its first chunk (a crash): it is redone.
    crashes: Cell<Option<usize>>,
    /// Chunks computed by the run's own worker, by helpers.
    by_lead: Cell<usize>,
    by_helpers: Cell<usize>,
}

impl PlayedPage<'_> {
    fn assembly(&self) -> std::cell::RefMut<'_, Option<Assembly>> {
        let mut a = self.assembly.borrow_mut();
        if a.is_none() {
            let n = self.model.encode(PROMPT).unwrap().len();
            let d = self.model.config.hidden;
            *a = Some(Assembly::new(7, n, d, d, 8, self.workers));
        }
        a
    }
}

impl Pool for PlayedPage<'_> {
    fn workers(&self) -> usize {
        self.workers
    }

    fn next(&self) -> Pin<Box<dyn Future<Output = PoolWord> + '_>> {
        // Each helper takes a chunk and delivers it (or dies on it); then
        // the run's worker gets one, or the whole J once all are in.
        let word = loop {
            for w in 1..self.workers {
                let chunk = self.assembly().as_mut().unwrap().next_for(w);
                let Some(c) = chunk else { continue };
                if self.crashes.get() == Some(w) {
                    self.crashes.set(None);
                    self.assembly().as_mut().unwrap().lost(w, "trap").unwrap();
                    continue;
                }
                let mut sessions = self.helpers.borrow_mut();
                let values = pool::rows(
                    self.model,
                    7,
                    PROMPT,
                    Precision::F64,
                    c,
                    Rc::new(|_| {}),
                    &mut sessions[w - 1],
                )
                .unwrap();
                self.by_helpers.set(self.by_helpers.get() + 1);
                self.assembly()
                    .as_mut()
                    .unwrap()
                    .deliver(w, c, &values)
                    .unwrap();
            }
            let mut a = self.assembly();
            if a.as_ref().unwrap().is_complete() {
                break PoolWord::Jacobian(a.take().unwrap().into_bytes().unwrap());
            }
            if let Some(c) = a.as_mut().unwrap().next_for(0) {
                break PoolWord::Rows(c);
            }
        };
        Box::pin(std::future::ready(word))
    }

    fn send_rows(&self, job: u32, chunk: Chunk, values: Vec<u8>, _ms: f64) {
        assert_eq!(job, 7);
        self.by_lead.set(self.by_lead.get() + 1);
        self.assembly()
            .as_mut()
            .unwrap()
            .deliver(0, chunk, &values)
            .unwrap();
    }
}

fn run(model: &Model, pool: Option<&dyn Pool>) -> (Vec<Reply>, Session) {
    let req = RunRequest {
        job: 7,
        prompt: PROMPT.into(),
        precision: Precision::F64,
        top: 5,
        full: true,
        svd: SvdMode::Auto,
        backend: Default::default(),
        pool: pool.map_or(1, |p| p.workers()),
    };
    let compute = stages::Compute {
        gpu: None,
        fallback: None,
        pool,
    };
    let (replies, result, session) = run_collecting(model, &req, compute);
    result.unwrap();
    (replies, session.unwrap())
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn a_pool_of_workers_forms_the_single_workers_jacobian() {
    let model = Model::load_path(&model_path(GEMMA)).unwrap();
    let (alone, single) = run(&model, None);
    assert!(
        !alone
            .iter()
            .any(|r| matches!(r, Reply::JacobianWanted { .. } | Reply::Joining { .. })),
        "one worker forms J itself"
    );

    let page = PlayedPage {
        model: &model,
        workers: 3,
        assembly: RefCell::new(None),
        helpers: RefCell::new(vec![None, None]),
        crashes: Cell::new(Some(2)),
        by_lead: Cell::new(0),
        by_helpers: Cell::new(0),
    };
    let (replies, pooled) = run(&model, Some(&page));
    let n = model.encode(PROMPT).unwrap().len();
    let d = model.config.hidden;
    // The helpers are told right after the prediction; the run's worker
    // joins after the ordinary error, before its J part.
    let at = |pred: &dyn Fn(&Reply) -> bool| replies.iter().position(pred).unwrap();
    let wanted = at(&|r| matches!(r, Reply::JacobianWanted { .. }));
    assert_eq!(
        replies[wanted],
        Reply::JacobianWanted {
            job: 7,
            n,
            rows: d,
            width: d,
            elem: 8
        }
    );
    assert_eq!(wanted, at(&|r| matches!(r, Reply::Prediction { .. })) + 1);
    let joining = at(&|r| matches!(r, Reply::Joining { .. }));
    let ordinary = at(&|r| {
        matches!(
            r,
            Reply::Part {
                part: Part::Ordinary(_),
                ..
            }
        )
    });
    let jacobian = at(&|r| {
        matches!(
            r,
            Reply::Part {
                part: Part::Jacobian(_),
                ..
            }
        )
    });
    assert!(ordinary < joining && joining < jacobian);
    // A share of rows each for 3 workers; the lost one redone by another.
    assert_eq!(page.by_lead.get() + page.by_helpers.get(), 3);
    assert!(page.by_lead.get() >= 1 && page.by_helpers.get() >= 1);

    let (a, b) = (pooled.jv.as_ref().unwrap(), single.jv.as_ref().unwrap());
    assert_eq!(a.dims, b.dims);
    let rel = max_rel(&a.values, &b.values);
    eprintln!("pooled J vs one worker's: max |ΔJ| / max |J| = {rel:.2e}");
    assert!(rel <= 1e-13, "{rel:e}");

    let (ra, rb) = (
        Reply::report_of(&replies).unwrap(),
        Reply::report_of(&alone).unwrap(),
    );
    let err = ra.reconstruction.detached_rel_error.unwrap();
    assert!(err <= 1e-13, "pooled J reconstructs y to {err:e}");
    let (sa, sb) = (ra.svd.as_ref().unwrap(), rb.svd.as_ref().unwrap());
    let rel = max_rel(&sa.concat.singular_values, &sb.concat.singular_values);
    assert!(rel <= 1e-12, "σ of J_cat differ by {rel:e}");
    // The same words for the top singular vector.
    let top_word = |r: &lens_protocol::report::Report| {
        r.decode.as_ref().unwrap().concat[0].u_tokens[0]
            .token
            .clone()
    };
    assert_eq!(top_word(&ra), top_word(&rb));
}
