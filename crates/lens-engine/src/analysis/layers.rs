//! Layer curves: the detached Jacobian cut at each asked-for layer (to the
//! residual stream, the attention output and the MLP output; from the
//! embeddings or from the block input), with spectra, decoded vectors, the
//! logit lens, and the path of the top singular vectors across layers.

use super::decode::Queue;
use super::svd::{decompose_concat, jacobian_values};
use super::{AnalyzeOptions, LayerRow, PathPoint};
use crate::error::Result;
use crate::jacobian::{reconstruction_error, tap_jacobian, tap_output, Tap, TapKind};
use crate::model::Model;
use crate::trace::Trace;
use candle_core::DType;

/// For each 1-based layer in `layers`: the Jacobians to the block's output,
/// its attention and its MLP, cumulative (from the embeddings) and layerwise
/// (from the block input), with their spectra and decoded vectors, and the
/// logit lens; and the path of the residual stream's top singular vectors
/// on `axes` (`J_cat`'s `u_1`, `u_2`). Progress: one step per tap.
pub fn layer_curves(
    model: &Model,
    tr: &Trace,
    layers: &[usize],
    opts: &AnalyzeOptions,
    axes: &[Vec<f64>],
) -> Result<(Vec<LayerRow>, Vec<PathPoint>)> {
    for &l in layers {
        if l == 0 || l > model.config.layers {
            return Err(crate::EngineError::Config(format!(
                "layer {l} is out of range (1..={})",
                model.config.layers
            )));
        }
    }
    let mut rows = Vec::new();
    let mut queue = Queue::default();
    // Per row: (u queue indices, logit-lens queue index); per path point:
    // the layer, its u_1, u_2.
    let mut asked = Vec::new();
    let mut path_us = Vec::new();
    let taps = layers.len() * 6;
    let mut step = 0;
    for &l in layers {
        for kind in TapKind::ALL {
            for cumulative in [true, false] {
                let tap = Tap {
                    layer: l - 1,
                    kind,
                    cumulative,
                };
                let (jt, _) = crate::progress::nested(step, taps, || {
                    tap_jacobian(model, tr, tap, opts.pass)
                })?;
                step += 1;
                let (target, _) = tap_output(model, tr, tap)?;
                let rel_error = reconstruction_error(&jt, tap.input(tr), &target)?;
                let (tv, tdims) = jacobian_values(&jt)?;
                drop(jt);
                let target: Vec<f64> = target.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
                let dec = decompose_concat(&tv, tdims, 3, Some(&target))?;
                drop(tv);
                if cumulative && kind == TapKind::Layer && dec.u.len() >= 2 {
                    path_us.push((l, dec.u[0].clone(), dec.u[1].clone()));
                }
                let us: Vec<usize> = dec.u.iter().map(|u| queue.unembed(u.clone())).collect();
                asked.push((us, queue.unembed(target)));
                let spectrum = dec.spectrum(opts.svd.max(1));
                rows.push(LayerRow {
                    layer: l,
                    kind,
                    mode: if cumulative {
                        "cumulative"
                    } else {
                        "layerwise"
                    }
                    .into(),
                    rel_error,
                    stable_rank: spectrum.stable_rank,
                    singular_values: spectrum.singular_values,
                    u_tokens: Vec::new(),
                    logit_lens_tokens: Vec::new(),
                });
            }
        }
    }
    crate::progress::report(taps, taps);
    let decoded = queue.run(model, opts.decode_top.max(1))?;
    for (row, (us, lens)) in rows.iter_mut().zip(asked) {
        row.u_tokens = us.iter().map(|&i| decoded.unembed[i].clone()).collect();
        row.logit_lens_tokens = decoded.unembed[lens].clone();
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let path = if axes.len() >= 2 {
        path_us
            .iter()
            .zip(
                rows.iter()
                    .filter(|r| r.kind == TapKind::Layer && r.mode == "cumulative"),
            )
            .map(|((l, u1, u2), row)| PathPoint {
                layer: *l,
                x: dot(u1, &axes[0]),
                y: dot(u2, &axes[1]),
                label: row
                    .u_tokens
                    .first()
                    .and_then(|t| t.first())
                    .map(|t| t.token.clone())
                    .unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok((rows, path))
}
