//! A comparison's two runs: A as asked, then B attributing A's target (on
//! B's model, its layers at A's depths), then the comparison of what both
//! left. Every caller (the CLI, Python, the page's worker) drives this.

use super::{run_here, Hooks, Session};
use crate::analysis::compare::{compare, Side, Vocabularies};
use crate::analysis::AnalyzeOptions;
use crate::error::{EngineError, Result};
use crate::model::Model;
use lens_report::{Comparison, Report};
use std::rc::Rc;

/// The side a run leaves for a comparison: its Report, `J_cat`'s top left
/// singular vectors, its log-probabilities (`J` itself is not kept).
pub fn side(model: &Model, report: Report, session: &Session) -> Result<Side> {
    let logits = session.tr.logits(model)?;
    let lse = crate::forward::log_sum_exp(&logits);
    Ok(Side {
        prompt: session.prompt.clone(),
        report,
        u: session.u_cat.clone(),
        log_probs: logits.into_iter().map(|l| l - lse).collect(),
        depth: model.config.layers,
    })
}

/// The options of B's run: A's with A's target (by id on one model, by its
/// text on another), and on another model A's layers at the same depths.
pub fn options_b(
    a: &Side,
    model_a: &Model,
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
        let (da, db) = (model_a.config.layers.max(1), model_b.config.layers);
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

/// What the two vocabularies say of each other's top token.
pub fn vocabularies(
    a: &Side,
    b: &Side,
    model_a: &Model,
    model_b: &Model,
    same_model: bool,
) -> Vocabularies {
    let top = |s: &Side| s.report.top.first().cloned();
    let lookup = |m: &Model, t: Option<lens_report::TopToken>| {
        let t = t?;
        if same_model {
            Some(t.id)
        } else {
            m.tokenizer.token_id(&t.token).ok()
        }
    };
    Vocabularies {
        same_model,
        top_b_in_a: lookup(model_a, top(b)),
        top_a_in_b: lookup(model_b, top(a)),
    }
}

/// One run on this thread's CPU, kept as a comparison's side.
pub fn run_side(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<Side> {
    let (report, session) = run_here(model, prompt, opts, hooks)?;
    side(model, report, &session)
}

/// Run B on this thread's CPU against a kept side A (A is not run again),
/// and the comparison. `model_b` is `None` when B runs on A's model.
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
    let opts_b = options_b(a, model_a, model_b, same_model, opts)?;
    let b = run_side(model_b, prompt_b, &opts_b, hooks)?;
    let vocab = vocabularies(a, &b, model_a, model_b, same_model);
    let comparison = compare(a, &b, vocab)?;
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
