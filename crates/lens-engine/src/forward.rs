//! The ordinary forward pass of Gemma 3 / Qwen 3 / Llama on CPU (candle), in
//! f32 or f64 — f64 means f64 everywhere, RoPE tables included.

use crate::error::{EngineError, Result};
use crate::model::{Activation, Model, SourceFormat};
use crate::weights::finite;
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

pub use lens_report::Precision;

/// The candle dtype a precision computes in.
pub trait PrecisionDType {
    fn dtype(self) -> DType;
}

impl PrecisionDType for Precision {
    fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// Final-normed hidden state of the last position (`logits = W_U y`).
    pub y: Vec<f64>,
    /// Next-token logits over the whole vocabulary, at the last position.
    pub logits: Vec<f64>,
}

pub use lens_report::TopToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    pub token_ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub top: Vec<TopToken>,
}

/// Rows of the vocabulary matrix dequantized at a time: few enough that
/// they stay in cache while they are multiplied (Gemma 3's 262144 × 640
/// Q8_0 rows: 1.3 s in blocks of 16384, 0.27 s in blocks of 512, one
/// thread, release build; 0.14 s with the blocks decoded in place).
const VOCAB_BLOCK: usize = 512;

/// Tokenize, run the forward pass, return the top-`k` next tokens.
pub fn predict(model: &Model, prompt: &str, precision: Precision, k: usize) -> Result<Prediction> {
    let ids = model.encode(prompt)?;
    let out = forward(model, &ids, precision)?;
    Ok(Prediction {
        tokens: ids.iter().map(|&i| model.tokenizer.token_str(i)).collect(),
        top: top_k(model, &out.logits, k),
        token_ids: ids,
    })
}

/// `ln Σ exp(l)`, shifted by the largest logit so that nothing overflows:
/// `l − log_sum_exp(logits)` is a token's log-probability.
pub fn log_sum_exp(logits: &[f64]) -> f64 {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
}

/// The `k` most likely next tokens with softmax probabilities (computed in f64).
pub fn top_k(model: &Model, logits: &[f64], k: usize) -> Vec<TopToken> {
    let lse = log_sum_exp(logits);
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter()
        .map(|i| TopToken {
            id: i as u32,
            token: model.tokenizer.token_str(i as u32),
            logit: logits[i],
            prob: (logits[i] - lse).exp(),
        })
        .collect()
}

/// Forward pass over `ids`; logits and `y` at the last position.
pub fn forward(model: &Model, ids: &[u32], precision: Precision) -> Result<ForwardOutput> {
    let h = forward_hidden(model, ids, precision)?;
    let n = ids.len();
    let last = h.narrow(0, n - 1, 1)?;
    let r = rms_scale(&last, model.config.norm_eps)?;
    check_final_norm(&r, model.config.layers)?;
    let y = scale_norm(
        &last,
        &r,
        &norm_weight(model, "output_norm.weight", precision.dtype())?,
    )?;
    let logits = unembed(model, &y)?;
    Ok(ForwardOutput {
        y: y.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        logits,
    })
}

/// The residual stream after the last layer, `[n, d]` (before the final norm).
pub fn forward_hidden(model: &Model, ids: &[u32], precision: Precision) -> Result<Tensor> {
    let c = &model.config;
    check_ids(model, ids)?;
    let dtype = precision.dtype();
    let mut h = embed(model, ids, dtype)?;
    let ropes = RopeTables::new(model, ids.len(), dtype)?;
    for l in 0..c.layers {
        h = layer(model, l, &h, &ropes, dtype)?.h_out;
    }
    Ok(h)
}

/// The ordinary forward from given input embeddings `x` (`[n, d]`, as the
/// first block receives them, Gemma's `sqrt(d)` included): `y` `[1, d]`, the
/// final-normed last position. For derivative checks (finite differences).
pub fn forward_from_embeddings(model: &Model, x: &Tensor, precision: Precision) -> Result<Tensor> {
    let dtype = precision.dtype();
    let n = x.dim(0)?;
    if n == 0 {
        return Err(EngineError::EmptyPrompt);
    }
    let mut h = x.to_dtype(dtype)?;
    let ropes = RopeTables::new(model, n, dtype)?;
    for l in 0..model.config.layers {
        h = layer(model, l, &h, &ropes, dtype)?.h_out;
    }
    let last = h.narrow(0, n - 1, 1)?;
    rms_norm(
        &last,
        &norm_weight(model, "output_norm.weight", dtype)?,
        model.config.norm_eps,
    )
}

/// A token sequence the model can run: non-empty, within the context window.
pub fn check_ids(model: &Model, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if ids.len() > model.config.context_length {
        return Err(EngineError::PromptTooLong {
            tokens: ids.len(),
            max: model.config.context_length,
        });
    }
    Ok(())
}

/// Input embeddings as the first block receives them (Gemma: times `sqrt(d)`).
pub fn embed(model: &Model, ids: &[u32], dtype: DType) -> Result<Tensor> {
    let x = model.weights.select_rows("token_embd.weight", ids, dtype)?;
    Ok(if model.config.recipe.embedding_scale {
        (x * (model.config.hidden as f64).sqrt())?
    } else {
        x
    })
}

/// The vocabulary matrix the logits come from: the embedding when tied.
pub fn unembedding_name(model: &Model) -> &'static str {
    if model.config.tie_embeddings {
        "token_embd.weight"
    } else {
        "output.weight"
    }
}

/// `W_U y` for a `[1, d]` vector, through the vocabulary matrix in row blocks.
pub fn unembed(model: &Model, y: &Tensor) -> Result<Vec<f64>> {
    let name = unembedding_name(model);
    let vocab = model.weights.shape(name)?[0];
    let yt = y.reshape((model.config.hidden, 1))?;
    let mut logits = Vec::with_capacity(vocab);
    for start in (0..vocab).step_by(VOCAB_BLOCK) {
        let count = VOCAB_BLOCK.min(vocab - start);
        let w = model.weights.rows(name, start, count, y.dtype())?;
        let block = w.matmul(&yt)?.flatten_all()?.to_dtype(DType::F64)?;
        logits.extend(block.to_vec1::<f64>()?);
    }
    Ok(logits)
}

/// A norm's effective multiplier: Gemma multiplies by `(1 + w)`; its GGUF
/// files already store `1 + w`, its safetensors store `w`.
pub fn norm_weight(model: &Model, name: &str, dtype: DType) -> Result<Tensor> {
    let w = model.weights.get(name, dtype)?;
    Ok(
        if model.config.recipe.norm_offset && model.format == SourceFormat::Safetensors {
            (w + 1.0)?
        } else {
            w
        },
    )
}

/// The stored row each row of [`matrix`] comes from, or `None` for the
/// stored order: llama-architecture GGUF q/k rows go back from the
/// interleaved to the rotate-half layout (per head, rows `2i + t` → `t, i`).
pub fn matrix_rows(model: &Model, name: &str) -> Option<Vec<usize>> {
    let c = &model.config;
    if model.format != SourceFormat::Gguf || !c.recipe.gguf_interleaved_qk {
        return None;
    }
    let heads = if name.ends_with("attn_q.weight") {
        c.heads
    } else if name.ends_with("attn_k.weight") {
        c.kv_heads
    } else {
        return None;
    };
    let hd = c.head_dim;
    Some(
        (0..heads)
            .flat_map(|h| (0..2).flat_map(move |t| (0..hd / 2).map(move |i| h * hd + 2 * i + t)))
            .collect(),
    )
}

/// A weight matrix `[out, in]`, rows in [`matrix_rows`]' order.
pub fn matrix(model: &Model, name: &str, dtype: DType) -> Result<Tensor> {
    let w = model.weights.get(name, dtype)?;
    match matrix_rows(model, name) {
        None => Ok(w),
        Some(rows) => {
            let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
            let ids = Tensor::from_vec(ids, rows.len(), &Device::Cpu)?;
            Ok(w.index_select(&ids, 0)?)
        }
    }
}

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    scale_norm(x, &rms_scale(x, eps)?, w)
}

/// cos/sin tables `[n, head_dim]` (halves duplicated, rotate-half form) for
/// the global and, for Gemma 3, the local RoPE base. Built in f64.
pub struct RopeTables {
    global: (Tensor, Tensor),
    local: (Tensor, Tensor),
}

impl RopeTables {
    pub fn new(model: &Model, n: usize, dtype: DType) -> Result<Self> {
        let c = &model.config;
        let freq_factors = if model.weights.contains("rope_freqs.weight") {
            Some(
                model
                    .weights
                    .get("rope_freqs.weight", DType::F64)?
                    .to_vec1::<f64>()?,
            )
        } else {
            None
        };
        if let Some(f) = &freq_factors {
            if f.len() != c.head_dim / 2 {
                return Err(EngineError::ShapeMismatch {
                    name: "rope_freqs.weight".into(),
                    got: vec![f.len()],
                    expected: vec![c.head_dim / 2],
                });
            }
        }
        let global = rope_table(
            c,
            n,
            c.rope_theta,
            c.rope_linear_factor,
            freq_factors.as_deref(),
            dtype,
        )?;
        let local = if c.recipe.local_rope {
            rope_table(c, n, c.rope_local_theta, 1.0, None, dtype)?
        } else {
            global.clone()
        };
        Ok(Self { global, local })
    }

    pub fn for_layer(&self, model: &Model, layer: usize) -> &(Tensor, Tensor) {
        match model.config.sliding[layer] {
            Some(_) => &self.local,
            None => &self.global,
        }
    }
}

fn rope_table(
    c: &crate::model::ModelConfig,
    n: usize,
    base: f64,
    linear_factor: f64,
    freq_factors: Option<&[f64]>,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let half = c.head_dim / 2;
    let mut inv: Vec<f64> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / c.head_dim as f64))
        .collect();
    if let Some(s) = c.llama3_scaling {
        let low_wl = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wl = s.original_max_position_embeddings / s.high_freq_factor;
        for f in inv.iter_mut() {
            let wl = 2.0 * std::f64::consts::PI / *f;
            if wl > low_wl {
                *f /= s.factor;
            } else if wl >= high_wl {
                let smooth = (s.original_max_position_embeddings / wl - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
            }
        }
    }
    if let Some(ff) = freq_factors {
        for (f, d) in inv.iter_mut().zip(ff) {
            *f /= d;
        }
    }
    let mut cos = Vec::with_capacity(n * c.head_dim);
    let mut sin = Vec::with_capacity(n * c.head_dim);
    for p in 0..n {
        let pos = p as f64 / linear_factor;
        for _ in 0..2 {
            for f in &inv {
                cos.push((pos * f).cos());
                sin.push((pos * f).sin());
            }
        }
    }
    let cos = Tensor::from_vec(cos, (n, c.head_dim), &Device::Cpu)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (n, c.head_dim), &Device::Cpu)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Rotate-half RoPE on `[heads, n, head_dim]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}

/// Additive mask `[n, n]`: `-inf` where key `j` is after query `i`, or (sliding
/// layers) `i - j >= window`.
pub fn attention_mask(n: usize, window: Option<usize>, dtype: DType) -> Result<Tensor> {
    let mut m = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if j > i || window.is_some_and(|w| i - j >= w) {
                m[i * n + j] = f64::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(m, (n, n), &Device::Cpu)?.to_dtype(dtype)?)
}

pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// What one decoder block computed, everything the frozen-linear network
/// keeps: norm scales `r` (`[n, 1]`, one per position and application), gate
/// activations `g`, attention probabilities `p`, and the residual stream and
/// module outputs.
#[derive(Debug, Clone)]
pub struct LayerRecord {
    /// Residual stream entering the block, `[n, d]`.
    pub h_in: Tensor,
    pub r_attn: Tensor,
    /// `[heads, n, n]`, rows are queries.
    pub p: Tensor,
    /// Gemma's norm on the attention output.
    pub r_post_attn: Option<Tensor>,
    /// Attention module output as added to the residual, `[n, d]`.
    pub attn_out: Tensor,
    /// Residual stream after the attention add, `[n, d]`.
    pub h_mid: Tensor,
    pub r_ffn: Tensor,
    /// `act(W_gate m)`, `[n, ffn]`.
    pub g: Tensor,
    /// Gemma's norm on the MLP output.
    pub r_post_ffn: Option<Tensor>,
    /// MLP module output as added to the residual, `[n, d]`.
    pub mlp_out: Tensor,
    /// Residual stream leaving the block, `[n, d]`.
    pub h_out: Tensor,
}

/// `rsqrt(mean(x²) + eps)` over the last dimension (kept as a size-1 dim).
pub fn rms_scale(x: &Tensor, eps: f64) -> Result<Tensor> {
    Ok((x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?)
}

/// `x · r · w` with the scale `r` given (frozen or just computed).
pub fn scale_norm(x: &Tensor, r: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_mul(r)?.broadcast_mul(w)?)
}

/// One decoder block on the residual stream `h` (`[n, d]`).
pub(crate) fn layer(
    model: &Model,
    l: usize,
    h: &Tensor,
    ropes: &RopeTables,
    dtype: DType,
) -> Result<LayerRecord> {
    let c = &model.config;
    let n = h.dim(0)?;
    let name = |s: &str| format!("blk.{l}.{s}.weight");
    let eps = c.norm_eps;
    let (hd, nh, nkv) = (c.head_dim, c.heads, c.kv_heads);
    let post_norms = c.recipe.post_norms;

    // Attention.
    let r_attn = rms_scale(h, eps)?;
    let a = scale_norm(h, &r_attn, &norm_weight(model, &name("attn_norm"), dtype)?)?;
    let q = a.matmul(&matrix(model, &name("attn_q"), dtype)?.t()?)?;
    let k = a.matmul(&matrix(model, &name("attn_k"), dtype)?.t()?)?;
    let v = a.matmul(&matrix(model, &name("attn_v"), dtype)?.t()?)?;
    let mut q = q.reshape((n, nh, hd))?.transpose(0, 1)?.contiguous()?;
    let mut k = k.reshape((n, nkv, hd))?.transpose(0, 1)?.contiguous()?;
    let v = v.reshape((n, nkv, hd))?.transpose(0, 1)?.contiguous()?;
    if c.recipe.qk_norm {
        q = rms_norm(&q, &norm_weight(model, &name("attn_q_norm"), dtype)?, eps)?;
        k = rms_norm(&k, &norm_weight(model, &name("attn_k_norm"), dtype)?, eps)?;
    }
    let (cos, sin) = ropes.for_layer(model, l);
    let q = apply_rope(&q, cos, sin)?;
    let k = apply_rope(&k, cos, sin)?;
    // GQA: group the query heads that share a kv head, [kv, group*n, hd].
    let group = nh / nkv;
    let qg = q.reshape((nkv, group * n, hd))?;
    let scores = (qg.matmul(&k.t()?)? * c.attn_scale)?.reshape((nh, n, n))?;
    let mask = attention_mask(n, c.sliding[l], dtype)?;
    let p = softmax_last(&scores.broadcast_add(&mask)?)?;
    let mixed = p
        .reshape((nkv, group * n, n))?
        .matmul(&v)?
        .reshape((nh, n, hd))?;
    let mixed = mixed.transpose(0, 1)?.contiguous()?.reshape((n, nh * hd))?;
    let mut attn_out = mixed.matmul(&matrix(model, &name("attn_output"), dtype)?.t()?)?;
    let mut r_post_attn = None;
    if post_norms {
        let r = rms_scale(&attn_out, eps)?;
        attn_out = scale_norm(
            &attn_out,
            &r,
            &norm_weight(model, &name("post_attention_norm"), dtype)?,
        )?;
        r_post_attn = Some(r);
    }
    let h_mid = (h + &attn_out)?;

    // Gated MLP.
    let r_ffn = rms_scale(&h_mid, eps)?;
    let m = scale_norm(
        &h_mid,
        &r_ffn,
        &norm_weight(model, &name("ffn_norm"), dtype)?,
    )?;
    let gate = m.matmul(&matrix(model, &name("ffn_gate"), dtype)?.t()?)?;
    let up = m.matmul(&matrix(model, &name("ffn_up"), dtype)?.t()?)?;
    let g = match c.recipe.activation {
        Activation::GeluTanh => gate.gelu()?,
        Activation::Silu => gate.silu()?,
    };
    let mut mlp_out = (&g * up)?.matmul(&matrix(model, &name("ffn_down"), dtype)?.t()?)?;
    let mut r_post_ffn = None;
    if post_norms {
        let r = rms_scale(&mlp_out, eps)?;
        mlp_out = scale_norm(
            &mlp_out,
            &r,
            &norm_weight(model, &name("post_ffw_norm"), dtype)?,
        )?;
        r_post_ffn = Some(r);
    }
    let h_out = (&h_mid + &mlp_out)?;
    let rec = LayerRecord {
        h_in: h.clone(),
        r_attn,
        p,
        r_post_attn,
        attn_out,
        h_mid,
        r_ffn,
        g,
        r_post_ffn,
        mlp_out,
        h_out,
    };
    check_finite(l, &rec)?;
    Ok(rec)
}

/// Block `l` (0-based) computed only finite numbers and no norm's mean
/// square overflowed (its scale `r` is then 0 and the block silently drops
/// its input); otherwise the first quantity, in the order computed, that
/// went wrong is named. A few reductions when all is well. Every backend's
/// trace calls it.
pub fn check_finite(l: usize, rec: &LayerRecord) -> Result<()> {
    // (name, tensor, is a norm scale), in the order the block computes them.
    let mut order: Vec<(&'static str, &Tensor, bool)> = vec![
        ("input of the attention norm", &rec.r_attn, true),
        ("attention probabilities", &rec.p, false),
    ];
    if let Some(r) = &rec.r_post_attn {
        order.push(("attention output's norm", r, true));
    }
    order.push(("attention output", &rec.attn_out, false));
    order.push(("residual stream after attention", &rec.h_mid, false));
    order.push(("input of the MLP norm", &rec.r_ffn, true));
    order.push(("MLP gate activations", &rec.g, false));
    if let Some(r) = &rec.r_post_ffn {
        order.push(("MLP output's norm", r, true));
    }
    order.push(("MLP output", &rec.mlp_out, false));
    let ok = |t: &Tensor, scale: bool| {
        if scale {
            norm_scale_ok(t)
        } else {
            finite(t)
        }
    };
    // NaN and infinity reach the block's output; an overflowed norm only
    // shows in its scale.
    let mut healthy = finite(&rec.h_out)?;
    for (_, t, scale) in &order {
        if *scale {
            healthy &= ok(t, true)?;
        }
    }
    if healthy {
        return Ok(());
    }
    for (what, t, scale) in order {
        if !ok(t, scale)? {
            return Err(non_finite(l + 1, what, rec.h_out.dtype()));
        }
    }
    Err(non_finite(l + 1, "residual stream", rec.h_out.dtype()))
}

/// The final norm's scale at the last position is usable (see
/// [`check_finite`]); `layers` names where its input came from.
pub fn check_final_norm(r: &Tensor, layers: usize) -> Result<()> {
    if norm_scale_ok(r)? {
        Ok(())
    } else {
        Err(non_finite(layers, "input of the final norm", r.dtype()))
    }
}

fn non_finite(layer: usize, quantity: &'static str, dtype: DType) -> EngineError {
    EngineError::NonFiniteActivation {
        layer,
        quantity,
        hint: if dtype == DType::F64 {
            ""
        } else {
            " (beyond f32's range: run in f64)"
        },
    }
}

/// A norm scale `rsqrt(mean(x²) + eps)` is positive and finite unless the
/// mean square overflowed (0) or its input held NaN.
fn norm_scale_ok(r: &Tensor) -> Result<bool> {
    let min = r.min_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(min > 0.0 && finite(r)?)
}
