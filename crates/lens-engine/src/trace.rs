//! The frozen forward: one ordinary forward pass that records every
//! input-dependent coefficient (norm scales, gate activations, attention
//! probabilities) and the residual stream. Freezing them leaves a linear map
//! `f_det` with `f_det(x) = f(x)` at this prompt.

use crate::error::Result;
use crate::forward::PrecisionDType;
use crate::forward::{
    check_final_norm, check_ids, embed, layer, norm_weight, rms_scale, scale_norm, unembed,
    LayerRecord, Precision, RopeTables,
};
use crate::model::Model;
use candle_core::{DType, Tensor};

#[derive(Debug, Clone)]
pub struct Trace {
    pub precision: Precision,
    pub ids: Vec<u32>,
    /// Input embeddings as the first block receives them, `[n, d]`.
    pub x: Tensor,
    pub layers: Vec<LayerRecord>,
    /// Final norm's scale at the last position, `[1, 1]`.
    pub r_final: Tensor,
    /// Final norm's effective weight, `[d]`.
    pub w_final: Tensor,
    /// Final-normed hidden state of the last position, `[1, d]`.
    pub y: Tensor,
}

impl Trace {
    pub fn n(&self) -> usize {
        self.ids.len()
    }
    pub fn dtype(&self) -> DType {
        self.precision.dtype()
    }
    /// `y` as f64 values.
    pub fn y_vec(&self) -> Result<Vec<f64>> {
        Ok(self.y.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
    }
    /// Next-token logits at the last position.
    pub fn logits(&self, model: &Model) -> Result<Vec<f64>> {
        unembed(model, &self.y)
    }
}

/// Runs the forward pass on `ids` and records everything the frozen-linear
/// network needs.
pub fn trace(model: &Model, ids: &[u32], precision: Precision) -> Result<Trace> {
    check_ids(model, ids)?;
    let dtype = precision.dtype();
    let n = ids.len();
    let x = embed(model, ids, dtype)?;
    let ropes = RopeTables::new(model, n, dtype)?;
    let mut layers = Vec::with_capacity(model.config.layers);
    let mut h = x.clone();
    for l in 0..model.config.layers {
        let rec = layer(model, l, &h, &ropes, dtype)?;
        h = rec.h_out.clone();
        layers.push(rec);
    }
    let last = h.narrow(0, n - 1, 1)?;
    let r_final = rms_scale(&last, model.config.norm_eps)?;
    check_final_norm(&r_final, model.config.layers)?;
    let w_final = norm_weight(model, "output_norm.weight", dtype)?;
    let y = scale_norm(&last, &r_final, &w_final)?;
    Ok(Trace {
        precision,
        ids: ids.to_vec(),
        x,
        layers,
        r_final,
        w_final,
        y,
    })
}
