//! A comparison's two runs: A as asked, then B attributing A's target (on
//! B's model, its layers at A's depths), then the comparison of what both
//! left. Every caller (the CLI, Python, the page's worker) drives this.

use super::{run, Compute, Event, Hooks, Session};
use crate::analysis::compare::{compare, Side, Vocabularies};
use crate::analysis::AnalyzeOptions;
use crate::error::{EngineError, Result};
use crate::jacobian;
use crate::model::Model;
use lens_report::{Comparison, Report};
use std::cell::Cell;
use std::rc::Rc;

/// The side a run leaves for a comparison: its Report, `J_cat`'s top left
/// singular vectors, its log-probabilities (`J` itself is not kept).
pub fn side(model: &Model, report: Report, session: &Session) -> Result<Side> {
    Ok(Side {
        prompt: session.prompt.clone(),
        report,
        u: session.u_cat.clone(),
        log_probs: log_probs(model, session)?,
        depth: model.config.layers,
    })
}

/// The run's next-token log-probabilities over the whole vocabulary.
pub fn log_probs(model: &Model, session: &Session) -> Result<Vec<f64>> {
    let logits = session.tr.logits(model)?;
    let lse = crate::forward::log_sum_exp(&logits);
    Ok(logits.into_iter().map(|l| l - lse).collect())
}

/// The options of B's run: A's with A's target (by id on one model, by its
/// text on another), and on another model A's layers at the same depths.
pub fn options_b(
    a: &Side,
    model_b: &Model,
    same_model: bool,
    opts: &AnalyzeOptions,
) -> Result<AnalyzeOptions> {
    let t = &a.report.attribution;
    let target = if same_model {
        format!("id:{}", t.target_id)
    } else {
        model_b.tokenizer.token_id(&t.target_token).map_err(|e| {
            EngineError::BadRequest(format!(
                "the target {:?} is not one token of {}'s vocabulary ({e}): name another target",
                t.target_token, model_b.name
            ))
        })?;
        t.target_token.clone()
    };
    let layers = if same_model {
        opts.layers.clone()
    } else {
        let (da, db) = (a.depth.max(1), model_b.config.layers);
        let mut at: Vec<usize> = opts
            .layers
            .iter()
            .map(|&l| {
                ((l as f64 / da as f64) * db as f64)
                    .round()
                    .clamp(1.0, db as f64) as usize
            })
            .collect();
        at.dedup();
        at
    };
    Ok(AnalyzeOptions {
        target: Some(target),
        layers,
        ..opts.clone()
    })
}

/// How B's top token is found among A's token ids (two models only; one
/// model shares its ids).
pub enum LookupA<'a> {
    /// A's tokenizer is at hand (the CLI, Python): any token.
    Tokenizer(&'a Model),
    /// Only A's Report is (the page, after A's model was replaced): its
    /// top tokens, by text; a token outside them has no probability here.
    Listed,
}

/// What the two vocabularies say of each other's top token.
pub fn vocabularies(
    a: &Side,
    b: &Side,
    lookup_a: LookupA,
    model_b: &Model,
    same_model: bool,
) -> Vocabularies {
    let top_a = a.report.top.first();
    let top_b = b.report.top.first();
    if same_model {
        return Vocabularies {
            same_model,
            top_b_in_a: top_b.map(|t| t.id),
            top_a_in_b: top_a.map(|t| t.id),
        };
    }
    let top_b_in_a = top_b.and_then(|t| match lookup_a {
        LookupA::Tokenizer(m) => m.tokenizer.token_id(&t.token).ok(),
        LookupA::Listed => a
            .report
            .top
            .iter()
            .find(|x| x.token == t.token)
            .map(|x| x.id),
    });
    Vocabularies {
        same_model,
        top_b_in_a,
        top_a_in_b: top_a.and_then(|t| model_b.tokenizer.token_id(&t.token).ok()),
    }
}

/// The caller's hooks with `Done` held back, so that the comparison is
/// said before the run is over.
struct HoldDone {
    inner: Rc<dyn Hooks>,
    done: Cell<Option<f64>>,
}

impl Hooks for HoldDone {
    fn emit(&self, event: Event) {
        match event {
            Event::Done { ms } => self.done.set(Some(ms)),
            e => self.inner.emit(e),
        }
    }
    fn now_ms(&self) -> f64 {
        self.inner.now_ms()
    }
    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
}

/// Runs B on `compute` against a kept side A (A is not run again), then
/// the comparison, said as `Event::Comparison` before `Event::Done`.
/// `same_model`: B runs on A's model. Returns B's side and its session
/// (for B's on-demand stages), and the comparison.
#[allow(clippy::too_many_arguments)]
pub async fn compare_on(
    a: &Side,
    lookup_a: LookupA<'_>,
    model_b: &Model,
    same_model: bool,
    prompt_b: &str,
    opts: &AnalyzeOptions,
    compute: Compute<'_>,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Side, Session, Comparison)> {
    let opts_b = options_b(a, model_b, same_model, opts)?;
    let held = Rc::new(HoldDone {
        inner: hooks.clone(),
        done: Cell::new(None),
    });
    let (report, session) = run(
        model_b,
        prompt_b,
        &opts_b,
        compute,
        &(held.clone() as Rc<dyn Hooks>),
    )
    .await?;
    let b = side(model_b, report, &session)?;
    let vocab = vocabularies(a, &b, lookup_a, model_b, same_model);
    let comparison = compare(a, &b, vocab)?;
    hooks.emit(Event::Comparison(Box::new(comparison.clone())));
    if let Some(ms) = held.done.get() {
        hooks.emit(Event::Done { ms });
    }
    Ok((b, session, comparison))
}

/// One run on this thread's CPU, kept as a comparison's side.
pub fn run_side(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<Side> {
    let (report, session) = super::run_here(model, prompt, opts, hooks)?;
    side(model, report, &session)
}

/// Run B on this thread's CPU against a kept side A, and the comparison.
/// `model_b` is `None` when B runs on A's model.
pub fn compare_to(
    a: &Side,
    model_a: &Model,
    model_b: Option<&Model>,
    prompt_b: &str,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Side, Comparison)> {
    let same_model = model_b.is_none();
    let model_b = model_b.unwrap_or(model_a);
    let (b, _, comparison) = jacobian::now(compare_on(
        a,
        LookupA::Tokenizer(model_a),
        model_b,
        same_model,
        prompt_b,
        opts,
        Compute::CPU,
        hooks,
    ))?;
    Ok((b, comparison))
}

/// Both runs on this thread's CPU and their comparison. `model_b` is
/// `None` for one model (then A's and B's runs share it).
pub fn compare_here(
    model_a: &Model,
    prompt_a: &str,
    model_b: Option<&Model>,
    prompt_b: &str,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Side, Side, Comparison)> {
    let a = run_side(model_a, prompt_a, opts, hooks)?;
    let (b, comparison) = compare_to(&a, model_a, model_b, prompt_b, opts, hooks)?;
    Ok((a, b, comparison))
}
