//! Analyses of the detached Jacobian, gathered in a `Report` (plain serde
//! data) that the CLI prints and the page draws.

use crate::error::Result;
use crate::forward::{top_k, Precision, TopToken};
use crate::jacobian::{
    contributions, detached_jacobian, reconstruction_error, rel_error, tap_jacobian, tap_output,
    PassOptions, Tap, TapKind,
};
use crate::model::Model;
use crate::trace::trace;
use candle_core::DType;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconstruction {
    /// `‖Σ_i J_i x_i − y‖ / ‖y‖` of the detached Jacobian.
    pub detached_rel_error: f64,
    /// The same for the ordinary Jacobian (nothing frozen), when computed.
    pub ordinary_rel_error: Option<f64>,
    /// `‖Σ_i c_i − y‖ / ‖y‖` of the forward-mode contributions.
    pub contributions_rel_error: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRow {
    pub token: String,
    pub jacobian_fro_norm: f64,
    pub contribution_norm: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRow {
    /// 1-based: the output of the `layer`-th block.
    pub layer: usize,
    pub kind: TapKind,
    /// "cumulative" (from the embeddings) or "layerwise" (from the block input).
    pub mode: String,
    pub rel_error: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Timings {
    pub forward: f64,
    pub jacobian: f64,
    pub contributions: f64,
    pub layers: f64,
    pub ordinary: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub precision: Precision,
    pub token_ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub top: Vec<TopToken>,
    pub reconstruction: Reconstruction,
    pub per_token: Vec<TokenRow>,
    pub layers: Vec<LayerRow>,
    pub timings_ms: Timings,
}

#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub precision: Precision,
    pub top: usize,
    /// 1-based layers whose taps to compute.
    pub layers: Vec<usize>,
    pub ordinary: bool,
    pub pass: PassOptions,
}

/// Runs the analyses. `now_ms` is the caller's clock (the engine has none:
/// `std::time::Instant` does not exist in the browser).
pub fn analyze(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    now_ms: &dyn Fn() -> f64,
) -> Result<Report> {
    let ids = model.encode(prompt)?;
    let mut timings = Timings::default();
    let t = now_ms();
    let tr = trace(model, &ids, opts.precision)?;
    let logits = tr.logits(model)?;
    timings.forward = now_ms() - t;

    let t = now_ms();
    let c = contributions(model, &tr, opts.pass)?;
    let contributions_rel_error = rel_error(&c.sum(0)?, &tr.y.flatten_all()?)?;
    timings.contributions = now_ms() - t;

    let t = now_ms();
    let (j, _) = detached_jacobian(model, &tr, opts.pass)?;
    let detached_rel_error = reconstruction_error(&j, &tr.x, &tr.y)?;
    timings.jacobian = now_ms() - t;

    let fro = j
        .sqr()?
        .sum((1, 2))?
        .sqrt()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let cn = c
        .sqr()?
        .sum(1)?
        .sqrt()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let per_token = ids
        .iter()
        .zip(fro.iter().zip(&cn))
        .map(|(&id, (&f, &c))| TokenRow {
            token: model.tokenizer.token_str(id),
            jacobian_fro_norm: f,
            contribution_norm: c,
        })
        .collect();
    drop(j);

    let t = now_ms();
    let mut layers = Vec::new();
    for &l in &opts.layers {
        if l == 0 || l > model.config.layers {
            return Err(crate::EngineError::Config(format!(
                "layer {l} is out of range (1..={})",
                model.config.layers
            )));
        }
        for kind in [TapKind::Layer, TapKind::Attn, TapKind::Mlp] {
            for cumulative in [true, false] {
                let tap = Tap {
                    layer: l - 1,
                    kind,
                    cumulative,
                };
                let (jt, _) = tap_jacobian(model, &tr, tap, opts.pass)?;
                let (target, _) = tap_output(model, &tr, tap)?;
                layers.push(LayerRow {
                    layer: l,
                    kind,
                    mode: if cumulative {
                        "cumulative"
                    } else {
                        "layerwise"
                    }
                    .into(),
                    rel_error: reconstruction_error(&jt, tap.input(&tr), &target)?,
                });
            }
        }
    }
    timings.layers = now_ms() - t;

    let ordinary_rel_error = if opts.ordinary {
        let t = now_ms();
        let jo = crate::ordinary::ordinary_jacobian(model, &tr, opts.pass)?;
        timings.ordinary = now_ms() - t;
        Some(reconstruction_error(&jo, &tr.x, &tr.y)?)
    } else {
        None
    };

    Ok(Report {
        model: model.name.clone(),
        precision: opts.precision,
        tokens: ids.iter().map(|&i| model.tokenizer.token_str(i)).collect(),
        token_ids: ids,
        top: top_k(model, &logits, opts.top),
        reconstruction: Reconstruction {
            detached_rel_error,
            ordinary_rel_error,
            contributions_rel_error,
        },
        per_token,
        layers,
        timings_ms: timings,
    })
}
