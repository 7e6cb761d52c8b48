//! What a run leaves for the on-demand stages (layer curves, a `J_i`'s
//! heatmap, steering), and those stages: a caller that keeps the
//! [`Session`] (the worker between requests) asks for them later; one
//! that has none (a restarted worker) gets a fresh frozen forward.

use super::{encode, jacobian_bytes, progress_of, Event, Hooks};
use crate::analysis::steering::SteerOptions;
use crate::analysis::Limits;
use crate::analysis::{columns_at, heatmap, lanczos, AnalyzeOptions, JacobianValues};
use crate::error::{EngineError, Result};
use crate::forward::Precision;
use crate::jacobian::detached_jacobian;
use crate::model::Model;
use crate::progress;
use crate::stages;
use crate::trace::{trace, Trace};
use lens_report::{Layers, Stage, Steered};
use std::rc::Rc;

/// Cells per side of a `J_i` heatmap.
pub const HEATMAP_CELLS: usize = 64;

/// A run's frozen forward and, when formed, `J`'s values.
pub struct Session {
    pub prompt: String,
    pub precision: Precision,
    pub tr: Trace,
    pub jv: Option<JacobianValues>,
    /// `J_cat`'s top left singular vectors (`u_1`, `u_2`: the path's axes).
    pub u_cat: Vec<Vec<f64>>,
}

impl Session {
    pub fn new(prompt: &str, tr: Trace) -> Self {
        Session {
            prompt: prompt.to_string(),
            precision: tr.precision,
            tr,
            jv: None,
            u_cat: Vec::new(),
        }
    }

    fn matches(&self, prompt: &str, precision: Precision) -> bool {
        self.prompt == prompt && self.precision == precision
    }

    /// The session for `prompt` at `precision`: `kept` when it matches,
    /// else a fresh frozen forward put in its place.
    pub fn for_prompt<'a>(
        model: &Model,
        prompt: &str,
        precision: Precision,
        limits: &Limits,
        kept: &'a mut Option<Session>,
    ) -> Result<&'a mut Session> {
        if !kept.as_ref().is_some_and(|s| s.matches(prompt, precision)) {
            let ids = encode(model, prompt, limits)?;
            *kept = Some(Session::new(prompt, trace(model, &ids, precision)?));
        }
        kept.as_mut()
            .ok_or_else(|| EngineError::BadRequest("no analysis to continue".into()))
    }
}

/// Layer curves and the path for the 1-based `layers`, one progress step
/// per tap Jacobian; the path's axes found matrix-free when the session
/// has none (the run that had them went matrix-free or is gone).
pub(super) fn layers_part(
    model: &Model,
    s: &mut Session,
    layers: &[usize],
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<Layers> {
    if layers.is_empty() {
        return Err(EngineError::BadRequest("pick at least one layer".into()));
    }
    let t = hooks.now_ms();
    let mut part = progress::scoped(progress_of(hooks, Stage::Layers), || {
        if s.u_cat.len() < 2 {
            let mf =
                lanczos::top_triplets(model, &s.tr, lanczos::KrylovOptions::new(2), opts.pass)?;
            s.u_cat = mf.triplets.into_iter().map(|t| t.u).collect();
        }
        stages::layers(model, &s.tr, layers, opts, &s.u_cat)
    })?;
    part.ms = hooks.now_ms() - t;
    Ok(part)
}

/// The layer curves of `opts.layers` for `prompt` (on demand), emitted as
/// a part.
pub fn layers(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    kept: &mut Option<Session>,
    hooks: &Rc<dyn Hooks>,
) -> Result<()> {
    let s = Session::for_prompt(model, prompt, opts.precision, &opts.limits, kept)?;
    let part = layers_part(model, s, &opts.layers, opts, hooks)?;
    hooks.emit(Event::Part(lens_report::Part::Layers(part)));
    Ok(())
}

/// The heatmap of `J_i` at `position` and its largest columns and rows,
/// decoded (forming `J` again when the run that had it is gone).
pub fn inspect(
    model: &Model,
    prompt: &str,
    position: usize,
    opts: &AnalyzeOptions,
    kept: &mut Option<Session>,
    hooks: &Rc<dyn Hooks>,
) -> Result<()> {
    let precision = opts.precision;
    let s = Session::for_prompt(model, prompt, precision, &opts.limits, kept)?;
    let n = s.tr.n();
    if position >= n {
        return Err(EngineError::BadRequest(format!(
            "token {position} is past the prompt's {n} tokens"
        )));
    }
    let t = hooks.now_ms();
    let jv = match &mut s.jv {
        Some(jv) => jv,
        empty => {
            let bytes = jacobian_bytes(n, model.config.hidden, precision)?;
            if opts
                .limits
                .max_jacobian_bytes
                .is_some_and(|max| bytes > max)
            {
                return Err(EngineError::BadRequest(
                    "the heatmap needs the full Jacobian, too large for this prompt in a tab"
                        .into(),
                ));
            }
            let (j, _) = progress::scoped(progress_of(hooks, Stage::Jacobian), || {
                detached_jacobian(model, &s.tr, opts.pass)
            })?;
            empty.insert(JacobianValues::of(&j)?)
        }
    };
    hooks.emit(Event::Progress {
        stage: Stage::Inspect,
        done: 0,
        total: 1,
    });
    let heatmap = heatmap(jv, position, HEATMAP_CELLS)?;
    let columns = columns_at(model, jv, position, opts.columns, opts.decode_top)?;
    hooks.emit(Event::Inspect {
        heatmap,
        columns,
        ms: hooks.now_ms() - t,
    });
    Ok(())
}

/// `text` continued with `so.source`'s operator added, and without (the
/// CLI's `analyze --steer-source`, the page's steering), emitted as a part.
pub fn steer(
    model: &Model,
    text: &str,
    so: &SteerOptions,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<()> {
    let steered = steered_part(model, text, so, opts, hooks)?;
    hooks.emit(Event::Part(lens_report::Part::Steered(steered)));
    Ok(())
}

/// The steering part, timed, with its progress.
pub(super) fn steered_part(
    model: &Model,
    text: &str,
    so: &SteerOptions,
    opts: &AnalyzeOptions,
    hooks: &Rc<dyn Hooks>,
) -> Result<Steered> {
    encode(model, &so.source, &opts.limits)?;
    encode(model, text, &opts.limits)?;
    let t = hooks.now_ms();
    let mut steered: Steered = progress::scoped(progress_of(hooks, Stage::Steering), || {
        stages::steer(model, text, so, opts.precision, opts.pass)
    })
    .map_err(|e| match e {
        EngineError::Config(m) => EngineError::BadRequest(m),
        e => e,
    })?;
    steered.ms = hooks.now_ms() - t;
    Ok(steered)
}
