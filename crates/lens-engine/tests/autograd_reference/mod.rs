//! The independent f64 forward of the autograd check: config.json read with
//! Hugging Face's semantics, weights straight from `model.safetensors`,
//! candle-core ops on a `Var`, the frozen quantities `detach()`ed (see
//! `detached_autograd.rs`). Nothing here calls the engine's forward code.

use candle_core::{DType, Device, Tensor, Var, D};
use lens_engine::jacobian::rel_error;
use lens_testkit::Family;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

type R<T> = candle_core::Result<T>;

// ---------------------------------------------------------------------------
// An independent reading of config.json (HF semantics).

/// Llama 3 ("llama3" rope type) scaling of the inverse frequencies.
#[derive(Debug, Clone, Copy)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max: f64,
}

#[derive(Debug, Clone)]
pub struct Cfg {
    pub family: Family,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    /// Attention score scale.
    pub scale: f64,
    /// RoPE base of global (full-attention) layers.
    pub rope_theta: f64,
    /// Gemma 3: RoPE base of sliding layers.
    pub rope_local_theta: f64,
    /// Gemma 3 "linear" rope scaling of the global layers (1 if none).
    pub linear_factor: f64,
    pub llama3: Option<Llama3Rope>,
    /// Per layer: `Some(window)` on sliding-window layers.
    pub window: Vec<Option<usize>>,
}

pub fn read_cfg(dir: &Path) -> Cfg {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
    let c: Value = serde_json::from_str(&text).expect("config json");
    let int = |k: &str| c.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let num = |k: &str| c.get(k).and_then(Value::as_f64);
    let family = match c["model_type"].as_str() {
        Some("qwen3") => Family::Qwen3,
        Some("gemma3_text") => Family::Gemma3,
        Some("llama") => Family::Llama,
        other => panic!("unexpected model_type {other:?}"),
    };
    let gemma = family == Family::Gemma3;
    let hidden = int("hidden_size").unwrap();
    let heads = int("num_attention_heads").unwrap();
    let layers = int("num_hidden_layers").unwrap();
    let head_dim = int("head_dim").unwrap_or(hidden / heads);
    let scale = if gemma {
        num("query_pre_attn_scalar").unwrap().powf(-0.5)
    } else {
        (head_dim as f64).powf(-0.5)
    };
    let window = if gemma {
        let w = int("sliding_window").unwrap();
        match c.get("layer_types").and_then(Value::as_array) {
            Some(types) => types
                .iter()
                .map(|t| (t.as_str() == Some("sliding_attention")).then_some(w))
                .collect(),
            // Gemma3TextConfig: layer i is sliding iff (i + 1) % pattern != 0.
            None => {
                let pattern = int("sliding_window_pattern").unwrap_or(6);
                (0..layers)
                    .map(|i| ((i + 1) % pattern != 0).then_some(w))
                    .collect()
            }
        }
    } else {
        vec![None; layers]
    };
    let scaling = c.get("rope_scaling").filter(|v| !v.is_null());
    let kind = scaling.and_then(|s| s["rope_type"].as_str());
    let sf = |k: &str| scaling.and_then(|s| s[k].as_f64()).unwrap();
    let llama3 = (kind == Some("llama3")).then(|| Llama3Rope {
        factor: sf("factor"),
        low_freq_factor: sf("low_freq_factor"),
        high_freq_factor: sf("high_freq_factor"),
        original_max: sf("original_max_position_embeddings"),
    });
    let linear_factor = if kind == Some("linear") {
        sf("factor")
    } else {
        1.0
    };
    Cfg {
        family,
        hidden,
        layers,
        heads,
        kv_heads: int("num_key_value_heads").unwrap(),
        head_dim,
        eps: num("rms_norm_eps").unwrap(),
        scale,
        rope_theta: num("rope_theta").unwrap(),
        rope_local_theta: num("rope_local_base_freq").unwrap_or(10_000.0),
        linear_factor,
        llama3,
        window,
    }
}

/// All tensors of `model.safetensors`, in f64, under their HF names.
pub fn load_weights(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .expect("load safetensors")
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F64).expect("to f64")))
        .collect()
}

// ---------------------------------------------------------------------------
// The independent forward.

pub struct Reference {
    pub cfg: Cfg,
    pub w: HashMap<String, Tensor>,
    /// Freeze `r`, `g` and `P` (the detached network) or not (the ordinary one).
    pub freeze: bool,
}

impl Reference {
    pub fn new(dir: &Path, freeze: bool) -> Self {
        Self {
            cfg: read_cfg(dir),
            w: load_weights(dir),
            freeze,
        }
    }

    fn w(&self, name: &str) -> &Tensor {
        self.w
            .get(name)
            .unwrap_or_else(|| panic!("missing weight {name}"))
    }

    fn frozen(&self, t: Tensor) -> Tensor {
        if self.freeze {
            t.detach()
        } else {
            t
        }
    }

    /// `x @ Wᵀ` for an HF `[out, in]` weight.
    fn linear(&self, x: &Tensor, name: &str) -> R<Tensor> {
        x.matmul(&self.w(name).t()?)
    }

    /// RMSNorm over the last dim of `[rows, k]` with the scalar `r` frozen;
    /// Gemma multiplies by `(1 + w)`.
    fn rms_norm(&self, x: &Tensor, name: &str) -> R<Tensor> {
        let r = self.frozen(
            x.sqr()?
                .mean_keepdim(D::Minus1)?
                .affine(1.0, self.cfg.eps)?
                .sqrt()?
                .recip()?,
        );
        let w = match self.cfg.family {
            Family::Gemma3 => self.w(name).affine(1.0, 1.0)?,
            _ => self.w(name).clone(),
        };
        x.broadcast_mul(&r)?.broadcast_mul(&w)
    }

    /// cos, sin tables `[n, head_dim]` (rotate-half layout), all in f64.
    fn rope(&self, n: usize, layer: usize) -> R<(Tensor, Tensor)> {
        let c = &self.cfg;
        let local = c.window[layer].is_some();
        let base = if local {
            c.rope_local_theta
        } else {
            c.rope_theta
        };
        let hd = c.head_dim;
        let mut inv: Vec<f64> = (0..hd / 2)
            .map(|i| base.powf(-((2 * i) as f64) / hd as f64))
            .collect();
        if !local && c.linear_factor != 1.0 {
            inv.iter_mut().for_each(|f| *f /= c.linear_factor);
        }
        if let Some(s) = c.llama3 {
            // transformers' _compute_llama3_parameters.
            let low_wavelen = s.original_max / s.low_freq_factor;
            let high_wavelen = s.original_max / s.high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                let scaled = if wavelen > low_wavelen {
                    *f / s.factor
                } else {
                    *f
                };
                // transformers: ~(wavelen < high) * ~(wavelen > low); no NaNs here.
                let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                *f = if medium {
                    let smooth = (s.original_max / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * scaled / s.factor + smooth * scaled
                } else {
                    scaled
                };
            }
        }
        let mut angles = Vec::with_capacity(n * hd);
        for p in 0..n {
            let half: Vec<f64> = inv.iter().map(|f| p as f64 * f).collect();
            angles.extend_from_slice(&half);
            angles.extend_from_slice(&half);
        }
        let cos: Vec<f64> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f64> = angles.iter().map(|a| a.sin()).collect();
        Ok((
            Tensor::from_vec(cos, (n, hd), &Device::Cpu)?,
            Tensor::from_vec(sin, (n, hd), &Device::Cpu)?,
        ))
    }

    /// Additive mask `[n, n]`: key `j` visible from query `i` iff `j <= i`
    /// and, on sliding layers, `i - j < window`.
    fn mask(&self, n: usize, layer: usize) -> R<Tensor> {
        let window = self.cfg.window[layer];
        let m: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        Tensor::from_vec(m, (n, n), &Device::Cpu)
    }

    fn attention(&self, h: &Tensor, l: usize) -> R<Tensor> {
        let c = &self.cfg;
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        let n = h.dim(0)?;
        let (nh, nkv, hd) = (c.heads, c.kv_heads, c.head_dim);
        let a = self.rms_norm(h, &p("input_layernorm"))?;
        let mut q = self.linear(&a, &p("self_attn.q_proj"))?;
        let mut k = self.linear(&a, &p("self_attn.k_proj"))?;
        let v = self.linear(&a, &p("self_attn.v_proj"))?;
        if c.family != Family::Llama {
            // Per-head norms over head_dim.
            q = self
                .rms_norm(&q.reshape((n * nh, hd))?, &p("self_attn.q_norm"))?
                .reshape((n, nh * hd))?;
            k = self
                .rms_norm(&k.reshape((n * nkv, hd))?, &p("self_attn.k_norm"))?
                .reshape((n, nkv * hd))?;
        }
        let heads = |t: Tensor, count: usize| -> R<Tensor> {
            t.reshape((n, count, hd))?.transpose(0, 1)?.contiguous()
        };
        let (q, k, v) = (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?);
        let (cos, sin) = self.rope(n, l)?;
        let rotate = |x: &Tensor| -> R<Tensor> {
            let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
            let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
            let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?
        };
        let (q, k) = (rotate(&q)?, rotate(&k)?);
        // GQA: query head h reads kv head h / (nh / nkv).
        let group = nh / nkv;
        let kv_of: Vec<u32> = (0..nh).map(|h| (h / group) as u32).collect();
        let kv_of = Tensor::new(kv_of.as_slice(), &Device::Cpu)?;
        let k = k.index_select(&kv_of, 0)?;
        let v = v.index_select(&kv_of, 0)?;
        let scores = (q.matmul(&k.t()?)? * c.scale)?.broadcast_add(&self.mask(n, l)?)?;
        // Softmax; subtracting the row max changes nothing mathematically.
        let max = scores.max_keepdim(D::Minus1)?.detach();
        let e = scores.broadcast_sub(&max)?.exp()?;
        let probs = self.frozen(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?);
        let mixed = probs.matmul(&v)?; // [nh, n, hd]
        let mixed = mixed.transpose(0, 1)?.contiguous()?.reshape((n, nh * hd))?;
        let out = self.linear(&mixed, &p("self_attn.o_proj"))?;
        match c.family {
            Family::Gemma3 => self.rms_norm(&out, &p("post_attention_layernorm")),
            _ => Ok(out),
        }
    }

    fn mlp(&self, h: &Tensor, l: usize) -> R<Tensor> {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        let gemma = self.cfg.family == Family::Gemma3;
        let pre = if gemma {
            "pre_feedforward_layernorm"
        } else {
            "post_attention_layernorm"
        };
        let m = self.rms_norm(h, &p(pre))?;
        let gate = self.linear(&m, &p("mlp.gate_proj"))?;
        // candle's `gelu` is the tanh approximation (gelu_pytorch_tanh).
        let g = self.frozen(if gemma { gate.gelu()? } else { gate.silu()? });
        let up = self.linear(&m, &p("mlp.up_proj"))?;
        let out = self.linear(&(g * up)?, &p("mlp.down_proj"))?;
        if gemma {
            self.rms_norm(&out, &p("post_feedforward_layernorm"))
        } else {
            Ok(out)
        }
    }

    /// `y` (`[d]`): the final-normed last position, from the input
    /// embeddings `x` (`[n, d]`) as the first block receives them.
    pub fn forward(&self, x: &Tensor) -> R<Tensor> {
        let mut h = x.clone();
        for l in 0..self.cfg.layers {
            h = (&h + self.attention(&h, l)?)?;
            h = (&h + self.mlp(&h, l)?)?;
        }
        let n = h.dim(0)?;
        let last = h.narrow(0, n - 1, 1)?;
        self.rms_norm(&last, "model.norm.weight")?
            .reshape(self.cfg.hidden)
    }

    /// The embeddings of `ids` as the first block receives them (Gemma:
    /// times `sqrt(hidden)`).
    pub fn embed(&self, ids: &[u32]) -> R<Tensor> {
        let idx = Tensor::new(ids, &Device::Cpu)?;
        let e = self.w("model.embed_tokens.weight").index_select(&idx, 0)?;
        match self.cfg.family {
            Family::Gemma3 => e * (self.cfg.hidden as f64).sqrt(),
            _ => Ok(e),
        }
    }

    /// `y` and the Jacobian `[n, d, d]` (`J[i][o][c] = ∂y_o/∂x_{i,c}`) by
    /// backprop, one backward per output coordinate.
    pub fn jacobian(&self, x: &Tensor) -> R<(Tensor, Tensor)> {
        let (n, d) = x.dims2()?;
        let var = Var::from_tensor(x)?;
        let y = self.forward(var.as_tensor())?;
        let mut rows = Vec::with_capacity(d);
        for o in 0..d {
            let grads = y.get(o)?.backward()?;
            let row = match grads.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => Tensor::zeros((n, d), DType::F64, &Device::Cpu)?,
            };
            rows.push(row);
        }
        Ok((y.detach(), Tensor::stack(&rows, 1)?))
    }
}

/// `‖Σ_i J_i x_i − y‖ / ‖y‖`.
pub fn reconstruction(j: &Tensor, x: &Tensor, y: &Tensor) -> f64 {
    let (n, d) = x.dims2().unwrap();
    let sum = j
        .matmul(&x.reshape((n, d, 1)).unwrap())
        .unwrap()
        .sum(0)
        .unwrap();
    rel_error(&sum, y).unwrap()
}
