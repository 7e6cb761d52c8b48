//! Reading vectors as words: output-space vectors through the unembedding
//! (top tokens of `W_U u`), input-space vectors as the nearest rows of the
//! input embedding by cosine. The vocabulary matrix is read in row blocks
//! from its compact form (never a full f32 or f64 copy), one pass for all
//! vectors.

use crate::error::Result;
pub use crate::forward::unembedding_name;
use crate::model::Model;
use candle_core::{DType, Device, Tensor};

/// Rows of the vocabulary matrix dequantized at a time.
const BLOCK: usize = 16_384;

pub use lens_report::TokenScore;

/// Vectors to decode, gathered so that each vocabulary matrix is read once
/// (once in all when the model ties its embeddings).
#[derive(Debug, Default)]
pub struct Queue {
    unembed: Vec<Vec<f64>>,
    embed: Vec<Vec<f64>>,
}

/// A [`Queue`]'s answers, in the order the vectors were queued.
#[derive(Debug)]
pub struct Decoded {
    pub unembed: Vec<Vec<TokenScore>>,
    pub embed: Vec<Vec<TokenScore>>,
}

impl Queue {
    /// Queues an output-space vector; returns its index in `Decoded::unembed`.
    pub fn unembed(&mut self, v: Vec<f64>) -> usize {
        self.unembed.push(v);
        self.unembed.len() - 1
    }

    /// Queues an input-space vector; returns its index in `Decoded::embed`.
    pub fn embed(&mut self, v: Vec<f64>) -> usize {
        self.embed.push(v);
        self.embed.len() - 1
    }

    pub fn run(self, model: &Model, top: usize) -> Result<Decoded> {
        let un = unembedding_name(model);
        if un == "token_embd.weight" {
            scan(model, un, &self.unembed, &self.embed, top)
        } else {
            Ok(Decoded {
                unembed: scan(model, un, &self.unembed, &[], top)?.unembed,
                embed: scan(model, "token_embd.weight", &[], &self.embed, top)?.embed,
            })
        }
    }
}

/// One pass over the rows of `name`: top rows by dot product for `plain`,
/// by cosine for `cosine`.
fn scan(
    model: &Model,
    name: &str,
    plain: &[Vec<f64>],
    cosine: &[Vec<f64>],
    top: usize,
) -> Result<Decoded> {
    let d = model.config.hidden;
    let (kp, k) = (plain.len(), plain.len() + cosine.len());
    if k == 0 || top == 0 {
        return Ok(Decoded {
            unembed: vec![Vec::new(); kp],
            embed: vec![Vec::new(); cosine.len()],
        });
    }
    let mut flat = Vec::with_capacity(d * k);
    for (j, v) in plain.iter().chain(cosine).enumerate() {
        if v.len() != d {
            return Err(crate::EngineError::Config(format!(
                "cannot decode a vector of {} values with a {d}-wide vocabulary matrix",
                v.len()
            )));
        }
        let norm = if j >= kp {
            v.iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE)
        } else {
            1.0
        };
        flat.extend(v.iter().map(|x| (x / norm) as f32));
    }
    // [d, k]: column j is vector j.
    let vt = Tensor::from_vec(flat, (k, d), &Device::Cpu)?
        .t()?
        .contiguous()?;
    let vocab = model.weights.shape(name)?[0];
    let mut best: Vec<Vec<(f64, u32)>> = vec![Vec::new(); k];
    for start in (0..vocab).step_by(BLOCK) {
        let count = BLOCK.min(vocab - start);
        let w = model.weights.rows(name, start, count, DType::F32)?;
        let scores = w.matmul(&vt)?.t()?.contiguous()?.to_vec2::<f32>()?; // [k][count]
        let inv_norms: Vec<f32> = if cosine.is_empty() {
            Vec::new()
        } else {
            w.sqr()?
                .sum(1)?
                .sqrt()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|n| 1.0 / n.max(f32::MIN_POSITIVE))
                .collect()
        };
        for (j, row) in scores.iter().enumerate() {
            let mut cand: Vec<(f64, u32)> = row
                .iter()
                .enumerate()
                .map(|(r, &s)| {
                    let s = if j >= kp { s * inv_norms[r] } else { s };
                    (s as f64, (start + r) as u32)
                })
                .collect();
            keep_top(&mut cand, top);
            best[j].extend(cand);
            keep_top(&mut best[j], top);
        }
    }
    let mut named: Vec<Vec<TokenScore>> = best
        .into_iter()
        .map(|list| {
            list.into_iter()
                .map(|(score, id)| TokenScore {
                    id,
                    token: model.tokenizer.token_str(id),
                    score,
                })
                .collect()
        })
        .collect();
    let embed = named.split_off(kp);
    Ok(Decoded {
        unembed: named,
        embed,
    })
}

/// The `top` largest by score, sorted descending (ties by id).
fn keep_top(list: &mut Vec<(f64, u32)>, top: usize) {
    let order = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if list.len() > top {
        list.select_nth_unstable_by(top - 1, order);
        list.truncate(top);
    }
    list.sort_by(order);
}
