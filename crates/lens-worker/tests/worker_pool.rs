//! A run whose full `J` is formed by a pool of workers, natively: the page's
//! side (`lens_protocol::pool::Assembly`, as `src/pool.rs` drives it) played
//! in-process, each helper with its own frozen forward (`pool::rows`), one
//! helper losing its first chunk. The pooled run's `J` and spectra equal a
//! single worker's (Gemma 3 270M, f64). A matrix-free run shares each
//! Lanczos block's products the same way (`pool::products`), in blocks as
//! many times larger as there are workers, and finds the single worker's
//! triplets (a tiny Gemma 3).

use lens_engine::run::Session;
use lens_engine::Model;
use lens_protocol::messages::RunRequest;
use lens_protocol::pool::{Assembly, Chunk};
use lens_protocol::report::Extent;
use lens_protocol::report::Part;
use lens_protocol::{Precision, Reply, SvdMode};
use lens_testkit::real_models::{model_path, GEMMA};
use lens_testkit::worker::run_collecting;
use lens_testkit::{max_rel, Family, Spec};
use lens_worker::pool::{self, Pool, PoolWord};
use lens_worker::run as worker;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

const PROMPT: &str = "Marin is the";

/// What the played page's pool is computing.
enum Work {
    /// Rows of the run's `J`.
    Rows,
    /// A Lanczos block's products: the block's vectors (f64 bytes).
    Products {
        position: Option<usize>,
        vectors: Vec<u8>,
    },
}

/// The page and its helpers, in one process.
struct PlayedPage<'a> {
    model: &'a Model,
    prompt: &'a str,
    workers: usize,
    work: RefCell<Option<(Assembly, Work)>>,
    /// Each helper's own frozen forward (`helpers[w - 1]`).
    helpers: RefCell<Vec<Option<Session>>>,
    /// This helper loses its first chunk (a crash): it is redone.
    crashes: Cell<Option<usize>>,
    /// Chunks computed by the run's own worker, by helpers.
    by_lead: Cell<usize>,
    by_helpers: Cell<usize>,
    /// Each block asked for: its position (`None`: `J_cat`).
    blocks: RefCell<Vec<Option<usize>>>,
}

impl<'a> PlayedPage<'a> {
    fn new(model: &'a Model, prompt: &'a str, workers: usize, crashes: usize) -> Self {
        PlayedPage {
            model,
            prompt,
            workers,
            work: RefCell::new(None),
            helpers: RefCell::new((1..workers).map(|_| None).collect()),
            crashes: Cell::new(Some(crashes)),
            by_lead: Cell::new(0),
            by_helpers: Cell::new(0),
            blocks: RefCell::new(Vec::new()),
        }
    }

    /// The work in progress: a J's rows unless a block was asked for (the
    /// page starts on J when the run says `JacobianWanted`).
    fn work(&self) -> std::cell::RefMut<'_, Option<(Assembly, Work)>> {
        let mut a = self.work.borrow_mut();
        if a.is_none() {
            let n = self.model.encode(self.prompt).unwrap().len();
            let d = self.model.config.hidden;
            *a = Some((Assembly::new(7, n, d, d, 8, self.workers), Work::Rows));
        }
        a
    }

    /// Helper `w`'s values for chunk `c`, from its own frozen forward.
    fn compute(&self, w: usize, c: Chunk) -> Vec<u8> {
        let mut sessions = self.helpers.borrow_mut();
        let session = &mut sessions[w - 1];
        let emit: worker::Emit = Rc::new(|_| {});
        let (model, prompt) = (self.model, self.prompt);
        let work = self.work.borrow();
        match &work.as_ref().unwrap().1 {
            Work::Rows => pool::rows(model, 7, prompt, Precision::F64, c, emit, session),
            Work::Products { position, vectors } => {
                let row = model.config.hidden * 8;
                let share = &vectors[c.start * row..(c.start + c.count) * row];
                pool::products(
                    model,
                    7,
                    prompt,
                    Precision::F64,
                    *position,
                    share,
                    emit,
                    session,
                )
            }
        }
        .unwrap()
    }
}

impl Pool for PlayedPage<'_> {
    fn workers(&self) -> usize {
        self.workers
    }

    fn next(&self) -> Pin<Box<dyn Future<Output = PoolWord> + '_>> {
        // Each helper takes a chunk and delivers it (or dies on it); then
        // the run's worker gets one, or the whole once all are in.
        let word = loop {
            for w in 1..self.workers {
                let chunk = self.work().as_mut().unwrap().0.next_for(w);
                let Some(c) = chunk else { continue };
                if self.crashes.get() == Some(w) {
                    self.crashes.set(None);
                    self.work().as_mut().unwrap().0.lost(w, "trap").unwrap();
                    continue;
                }
                let values = self.compute(w, c);
                self.by_helpers.set(self.by_helpers.get() + 1);
                let mut work = self.work();
                work.as_mut().unwrap().0.deliver(w, c, &values).unwrap();
            }
            let mut work = self.work();
            if work.as_ref().unwrap().0.is_complete() {
                let (a, _) = work.take().unwrap();
                break PoolWord::Assembled(a.into_bytes().unwrap());
            }
            if let Some(c) = work.as_mut().unwrap().0.next_for(0) {
                break PoolWord::Rows(c);
            }
        };
        Box::pin(std::future::ready(word))
    }

    fn send_rows(&self, job: u32, chunk: Chunk, values: Vec<u8>, _ms: f64) {
        assert_eq!(job, 7);
        self.by_lead.set(self.by_lead.get() + 1);
        let mut work = self.work();
        work.as_mut().unwrap().0.deliver(0, chunk, &values).unwrap();
    }

    fn want_products(
        &self,
        job: u32,
        position: Option<usize>,
        vectors: Vec<u8>,
        count: usize,
        width: usize,
    ) {
        assert_eq!((job, width), (7, self.model.config.hidden));
        assert_eq!(vectors.len(), count * width * 8);
        let assembly = Assembly::new(7, 1, count, width, 8, self.workers);
        let previous = self
            .work
            .replace(Some((assembly, Work::Products { position, vectors })));
        assert!(previous.is_none(), "one block at a time");
        self.blocks.borrow_mut().push(position);
    }
}

fn run(
    model: &Model,
    prompt: &str,
    svd: SvdMode,
    pool: Option<&dyn Pool>,
) -> (Vec<Reply>, Session) {
    let req = RunRequest {
        job: 7,
        prompt: prompt.into(),
        precision: Precision::F64,
        top: 5,
        extent: Extent::Full,
        svd,
        backend: Default::default(),
        pool: pool.map_or(1, |p| p.workers()),
        target: None,
    };
    let compute = worker::Compute {
        gpu: None,
        fallback: None,
        pool,
        memory_limit: None,
    };
    let (replies, result, session) = run_collecting(model, &req, compute);
    result.unwrap();
    (replies, session.unwrap())
}

#[test]
fn a_pool_of_workers_forms_the_single_workers_jacobian() {
    let model = Model::load_path(&model_path(GEMMA)).unwrap();
    let (alone, single) = run(&model, PROMPT, SvdMode::Auto, None);
    assert!(
        !alone
            .iter()
            .any(|r| matches!(r, Reply::JacobianWanted { .. } | Reply::Joining { .. })),
        "one worker forms J itself"
    );

    let page = PlayedPage::new(&model, PROMPT, 3, 2);
    let (replies, pooled) = run(&model, PROMPT, SvdMode::Auto, Some(&page));
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

fn tiny_gemma() -> Model {
    let spec = Spec::new(Family::Gemma3);
    let dir = lens_testkit::tiny_hf_dir("pool-gemma3", &spec, serde_json::json!({}));
    Model::load_path(&dir).expect("tiny model loads")
}

#[test]
fn a_pool_of_workers_shares_the_lanczos_products() {
    let model = tiny_gemma();
    let prompt = lens_testkit::prompt(11, 6, Spec::new(Family::Gemma3).vocab);
    let (alone, _) = run(&model, &prompt, SvdMode::Krylov, None);

    let page = PlayedPage::new(&model, &prompt, 3, 1);
    let (replies, _) = run(&model, &prompt, SvdMode::Krylov, Some(&page));
    assert!(
        !replies
            .iter()
            .any(|r| matches!(r, Reply::JacobianWanted { .. })),
        "a matrix-free run forms no J"
    );
    let n = model.encode(&prompt).unwrap().len();
    let blocks = page.blocks.borrow().clone();
    // J_cat's blocks first, then the last token's J_i.
    assert!(blocks.first() == Some(&None) && blocks.last() == Some(&Some(n - 1)));
    let (ra, rb) = (
        Reply::report_of(&replies).unwrap(),
        Reply::report_of(&alone).unwrap(),
    );
    let (ma, mb) = (
        ra.matrix_free.as_ref().unwrap(),
        rb.matrix_free.as_ref().unwrap(),
    );
    eprintln!(
        "{} blocks shared by 3 workers: {} chunks by the run's worker, {} by helpers; {} products",
        blocks.len(),
        page.by_lead.get(),
        page.by_helpers.get(),
        ma.products
    );
    // Three workers, three times the block: fewer blocks, each a full share.
    assert!(ma.method.contains("block 48") && mb.method.contains("block 16"));
    assert!(
        ma.blocks < mb.blocks,
        "{} blocks vs {}",
        ma.blocks,
        mb.blocks
    );
    assert!(page.by_lead.get() >= blocks.len() && page.by_helpers.get() >= blocks.len());
    let rel = max_rel(&ma.singular_values, &mb.singular_values);
    eprintln!("pooled matrix-free σ vs one worker's: {rel:.2e}");
    assert!(rel <= 1e-10, "σ differ by {rel:e}");
    assert!(ma
        .residuals
        .iter()
        .all(|r| *r <= 1e-8 * ma.singular_values[0]));
    let words = |r: &lens_protocol::report::Report| {
        let d = r.decode.as_ref().unwrap();
        (
            d.concat[0].u_tokens[0].token.clone(),
            d.last_token[0].u_tokens[0].token.clone(),
        )
    };
    assert_eq!(words(&ra), words(&rb));
}
