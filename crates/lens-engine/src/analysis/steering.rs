//! Steering with a prompt's equivalent linear map (the paper's Table 1): the
//! cumulative detached Jacobian `J` from a source prompt's embeddings to the
//! residual stream after layer ℓ (at the source's last position) is applied
//! to another text's embeddings and added to that text's residual stream
//! after layer ℓ while it generates.
//!
//! `J` here ends at the raw residual stream, where the vector is added. The
//! paper's code uses the Jacobian through the final norm (`r·w` applied),
//! which is the same map times `diag(r·w)`; on Gemma 3, whose final-norm
//! weights span orders of magnitude, that skews the added vector towards a
//! few coordinates and the text degenerates at any λ (Gemma 3 270M: "Tree
//! Tree Tree…" at λ = 0.1).
//!
//! At each step, for the whole current text with embeddings `e_k`:
//! `s_k = J_{k mod n_src} e_k`, `a_k = Σ_{j≤k} s_j`, and the residual `h_k`
//! after layer ℓ becomes `h_k + λ · a_k · ‖h_k‖ / (2‖a_k‖)`; the next token
//! is the greedy argmax. (The paper's code adds at the input of layer ℓ, one
//! block before the layer its `J` ends at; here the two coincide.)

use crate::error::{EngineError, Result};
use crate::forward::{
    embed, layer, norm_weight, rms_norm, top_k, unembed, Precision, PrecisionDType, RopeTables,
};
use crate::jacobian::{raw_tap_jacobian, PassOptions, Tap, TapKind};
use crate::model::Model;
use crate::trace::trace;
use candle_core::{Tensor, D};

#[derive(Debug, Clone)]
pub struct SteerOptions {
    pub source: String,
    /// 1-based layer whose output the operator ends at and where it is added.
    pub layer: usize,
    pub lambda: f64,
    pub tokens: usize,
}

impl SteerOptions {
    /// The paper's defaults: layer ⌊2L/3⌋, λ = 1.028, 12 tokens.
    pub fn new(model: &Model, source: &str) -> Self {
        Self {
            source: source.to_string(),
            layer: (2 * model.config.layers / 3).max(1),
            lambda: 1.028,
            tokens: 12,
        }
    }
}

pub use lens_report::Steering;

/// Steers the continuation of `text` with the source prompt's operator.
pub fn steer(
    model: &Model,
    text: &str,
    opts: &SteerOptions,
    precision: Precision,
    pass: PassOptions,
) -> Result<Steering> {
    let layers = model.config.layers;
    if opts.layer == 0 || opts.layer > layers {
        return Err(EngineError::Config(format!(
            "steering layer {} is out of range (1..={layers})",
            opts.layer
        )));
    }
    if !opts.lambda.is_finite() {
        return Err(EngineError::Config(
            "steering strength must be a finite number".into(),
        ));
    }
    let src_ids = model.encode(&opts.source)?;
    let src = trace(model, &src_ids, precision)?;
    let source_id = top_k(model, &src.logits(model)?, 1)
        .first()
        .map(|t| t.id)
        .unwrap_or_default();
    let tap = Tap {
        layer: opts.layer - 1,
        kind: TapKind::Layer,
        cumulative: true,
    };
    let (j, _) = raw_tap_jacobian(model, &src, tap, pass)?; // [n_src, d, d]
    drop(src);
    let ids = model.encode(text)?;
    let run = |lambda: f64| -> Result<(Vec<u32>, f64)> {
        let mut ids = ids.clone();
        let mut out = Vec::with_capacity(opts.tokens);
        let mut first_prob = 0.0;
        for step in 0..opts.tokens {
            let logits = steered_logits(model, &ids, &j, opts.layer, lambda, precision)?;
            if step == 0 {
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                first_prob = (logits[source_id as usize] - max).exp() / z;
            }
            let next = top_k(model, &logits, 1)
                .first()
                .map(|t| t.id)
                .unwrap_or_default();
            if model.tokenizer.eos_id() == Some(next) {
                break;
            }
            if ids.len() >= model.config.context_length {
                break;
            }
            ids.push(next);
            out.push(next);
        }
        Ok((out, first_prob))
    };
    let (steered_ids, p_steered) = run(opts.lambda)?;
    let (unsteered_ids, p_plain) = run(0.0)?;
    let text_of = |ids: &[u32]| {
        ids.iter()
            .map(|&i| model.tokenizer.token_str(i))
            .collect::<String>()
    };
    Ok(Steering {
        source: opts.source.clone(),
        layer: opts.layer,
        lambda: opts.lambda,
        steered: text_of(&steered_ids),
        unsteered: text_of(&unsteered_ids),
        steered_ids,
        unsteered_ids,
        source_token: model.tokenizer.token_str(source_id),
        source_token_prob_steered: p_steered,
        source_token_prob_unsteered: p_plain,
    })
}

/// Next-token logits of `ids` with the operator `j` (`[n_src, d, d]`) added
/// after block `layer` (1-based) at strength `lambda`.
fn steered_logits(
    model: &Model,
    ids: &[u32],
    j: &Tensor,
    layer_1: usize,
    lambda: f64,
    precision: Precision,
) -> Result<Vec<f64>> {
    let dtype = precision.dtype();
    let c = &model.config;
    let n = ids.len();
    let x = embed(model, ids, dtype)?;
    let ropes = RopeTables::new(model, n, dtype)?;
    let mut h = x.clone();
    for l in 0..c.layers {
        h = layer(model, l, &h, &ropes, dtype)?.h_out;
        if l + 1 == layer_1 && lambda != 0.0 {
            h = (&h + steering_vectors(j, &x, &h, lambda)?)?;
        }
    }
    let last = h.narrow(0, n - 1, 1)?;
    let w = norm_weight(model, "output_norm.weight", dtype)?;
    unembed(model, &rms_norm(&last, &w, c.norm_eps)?)
}

/// `λ · a_k · ‖h_k‖ / (2‖a_k‖)` for every position `k` of `x` (`[n, d]`).
fn steering_vectors(j: &Tensor, x: &Tensor, h: &Tensor, lambda: f64) -> Result<Tensor> {
    let (n_src, d, _) = j.dims3()?;
    let n = x.dim(0)?;
    let j = j.to_dtype(x.dtype())?;
    let mut rows = Vec::with_capacity(n);
    for k in 0..n {
        // s_k = J_{k mod n_src} e_k
        let s = j
            .get(k % n_src)?
            .matmul(&x.get(k)?.reshape((d, 1))?)?
            .reshape((1, d))?;
        rows.push(s);
    }
    let s = Tensor::cat(&rows, 0)?;
    let a = s.cumsum(0)?;
    // Where a_k is zero there is nothing to add (and nothing to divide by).
    let a_norm = a
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(f32::MIN_POSITIVE as f64, f64::INFINITY)?;
    let h_norm = h.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let scale = (h_norm * (lambda / 2.0))?.broadcast_div(&a_norm)?;
    Ok(a.broadcast_mul(&scale)?)
}
