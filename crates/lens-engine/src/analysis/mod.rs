//! Analyses of the detached Jacobian, gathered in a `Report` (plain serde
//! data) that the CLI prints and the page draws.

pub mod attribution;
pub mod decode;
pub mod lanczos;
pub mod steering;
pub mod svd;

use crate::error::Result;
use crate::forward::{top_k, Precision, TopToken};
use crate::jacobian::{
    contributions, detached_jacobian, reconstruction_error, rel_error, tap_jacobian, tap_output,
    PassOptions, Tap, TapKind,
};
use crate::model::Model;
use crate::trace::trace;
use attribution::{attribute, Attribution};
use candle_core::DType;
use decode::{Decoded, Queue, TokenScore};
use serde::{Deserialize, Serialize};
use svd::{decompose_concat, decompose_token, jacobian_values, Decomposition, Spectrum};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconstruction {
    /// `‖Σ_i J_i x_i − y‖ / ‖y‖` of the detached Jacobian (`None` when it
    /// was not formed: matrix-free mode).
    pub detached_rel_error: Option<f64>,
    /// The same for the ordinary Jacobian (nothing frozen), when computed.
    pub ordinary_rel_error: Option<f64>,
    /// `‖Σ_i c_i − y‖ / ‖y‖` of the forward-mode contributions.
    pub contributions_rel_error: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRow {
    pub token: String,
    /// `‖J_i‖_F` (`None` in matrix-free mode).
    pub jacobian_fro_norm: Option<f64>,
    /// `‖c_i‖`, `c_i = J_i x_i`.
    pub contribution_norm: f64,
    /// `c_i · y / ‖y‖` (they sum to `‖y‖`).
    pub projection_on_y: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SvdReport {
    /// `J_cat = [J_1 … J_n]`.
    pub concat: Spectrum,
    /// Each `J_i`.
    pub per_token: Vec<Spectrum>,
}

/// One singular pair read as words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodedPair {
    /// 1-based rank.
    pub k: usize,
    pub sigma: f64,
    /// Top tokens of `W_U u_k` (`u_k` signed so that `u_k · y ≥ 0`).
    pub u_tokens: Vec<TokenScore>,
    /// Input embeddings nearest `v_k` by cosine (for `J_cat`: the block of
    /// `v_k` at `v_position`, the position where it is largest).
    pub v_tokens: Vec<TokenScore>,
    pub v_position: usize,
}

/// The top of `J_cat`'s spectrum found without forming `J`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixFree {
    pub method: String,
    /// Vector products with `J` or `Jᵀ`.
    pub products: usize,
    pub blocks: usize,
    pub singular_values: Vec<f64>,
    /// `‖J_cat v_k − σ_k u_k‖` for each triplet.
    pub residuals: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodeReport {
    pub concat: Vec<DecodedPair>,
    pub last_token: Vec<DecodedPair>,
}

/// A column or row of `J_i` with its norm, decoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub index: usize,
    pub norm: f64,
    pub tokens: Vec<TokenScore>,
}

/// The largest columns (input coordinates, decoded through the
/// unembedding) and rows (output coordinates, decoded as nearest input
/// embeddings) of `J_i` for the last token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Columns {
    pub position: usize,
    pub columns: Vec<Line>,
    pub rows: Vec<Line>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRow {
    /// 1-based: the output of the `layer`-th block.
    pub layer: usize,
    pub kind: TapKind,
    /// "cumulative" (from the embeddings) or "layerwise" (from the block input).
    pub mode: String,
    pub rel_error: f64,
    /// Of the tap's `J_cat` (`‖J‖_F² / σ₁²`).
    pub stable_rank: f64,
    /// The tap's largest singular values.
    pub singular_values: Vec<f64>,
    /// Top tokens of `W_U u_k` for `u_1..u_3` (signed towards the tap's vector).
    pub u_tokens: Vec<Vec<TokenScore>>,
    /// The logit lens: the tap's vector through the final norm (frozen at its
    /// own value) and the unembedding.
    pub logit_lens_tokens: Vec<TokenScore>,
}

/// Where a layer's top two left singular vectors (cumulative, residual
/// stream) point, as coordinates on the output's: `u_k(ℓ) · u_k(L)`, each
/// signed towards its own vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathPoint {
    pub layer: usize,
    pub x: f64,
    pub y: f64,
    /// Top token of `u_1(ℓ)`.
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Timings {
    pub forward: f64,
    pub jacobian: f64,
    pub contributions: f64,
    pub layers: f64,
    pub ordinary: f64,
    pub svd: f64,
    pub decode: f64,
    pub steering: f64,
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
    pub svd: Option<SvdReport>,
    /// With `matrix_free`: the top triplets of `J_cat` (then `svd` is absent
    /// and `decode.concat` reads these triplets).
    pub matrix_free: Option<MatrixFree>,
    pub decode: Option<DecodeReport>,
    /// Of the `--target` token, or the predicted one.
    pub attribution: Attribution,
    /// Of the predicted token, when the target is another one.
    pub attribution_predicted: Option<Attribution>,
    pub columns: Option<Columns>,
    /// The path of the top singular vectors across `layers` (cumulative).
    pub path: Vec<PathPoint>,
    /// The frozen attention probabilities `[layer][head][query][key]`.
    pub attention: Option<Vec<Vec<Vec<Vec<f64>>>>>,
    /// The prompt continued with and without another prompt's operator.
    pub steering: Option<steering::Steering>,
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
    /// Singular values kept per spectrum (0: no SVD).
    pub svd: usize,
    /// Singular pairs decoded (0: none).
    pub decode: usize,
    /// Tokens listed per decoded vector.
    pub decode_top: usize,
    /// The token to attribute (as the user names it: `" Paris"`, `id:123`);
    /// default the predicted one.
    pub target: Option<String>,
    /// Largest columns / rows of the last token's `J_i` (0: none).
    pub columns: usize,
    pub attention: bool,
    /// Steer the prompt's continuation with another prompt's operator.
    pub steer: Option<steering::SteerOptions>,
    /// Do not form `J`: top singular triplets of `J_cat` from probe
    /// products (long prompts).
    pub matrix_free: bool,
}

impl AnalyzeOptions {
    /// The defaults of `linear-lens analyze`.
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            top: 5,
            layers: Vec::new(),
            ordinary: true,
            pass: PassOptions::default(),
            svd: 16,
            decode: 5,
            decode_top: 5,
            target: None,
            columns: 5,
            attention: true,
            steer: None,
            matrix_free: false,
        }
    }
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

    let n = ids.len();
    let t = now_ms();
    let j = if opts.matrix_free {
        None
    } else {
        Some(detached_jacobian(model, &tr, opts.pass)?.0)
    };
    let detached_rel_error = match &j {
        Some(j) => Some(reconstruction_error(j, &tr.x, &tr.y)?),
        None => None,
    };
    timings.jacobian = now_ms() - t;

    let fro: Vec<Option<f64>> = match &j {
        Some(j) => j
            .sqr()?
            .sum((1, 2))?
            .sqrt()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; n],
    };
    let y = tr.y_vec()?;
    let (cn, proj) = attribution::norms_and_projections(&c, &y)?;
    let per_token = ids
        .iter()
        .zip(fro.iter().zip(&cn).zip(&proj))
        .map(|(&id, ((f, &c), &p))| TokenRow {
            token: model.tokenizer.token_str(id),
            jacobian_fro_norm: *f,
            contribution_norm: c,
            projection_on_y: p,
        })
        .collect();

    // Attribution of the target's logit (and of the prediction's beside it).
    let predicted = top_k(model, &logits, 1)
        .first()
        .map(|t| t.id)
        .unwrap_or_default();
    let target = match &opts.target {
        Some(name) => model.tokenizer.token_id(name)?,
        None => predicted,
    };
    let attribution = attribute(model, &tr, &c, target)?;
    let attribution_predicted = if target != predicted {
        Some(attribute(model, &tr, &c, predicted)?)
    } else {
        None
    };

    let t = now_ms();
    let d = model.config.hidden;
    let (values, dims) = match j {
        Some(j) => jacobian_values(&j)?,
        None => (Vec::new(), [n, d, d]),
    };
    let keep = opts.svd.max(opts.decode);
    let (mut concat, mut last): (Option<Decomposition>, Option<Decomposition>) = (None, None);
    let mut matrix_free = None;
    let svd = if opts.matrix_free {
        let k = opts.decode.max(2).max(opts.svd.min(8));
        let mf = lanczos::top_triplets(model, &tr, lanczos::KrylovOptions::new(k), opts.pass)?;
        matrix_free = Some(MatrixFree {
            method: mf.method.clone(),
            products: mf.products,
            blocks: mf.blocks,
            singular_values: mf.triplets.iter().map(|t| t.sigma).collect(),
            residuals: mf.triplets.iter().map(|t| t.residual).collect(),
        });
        concat = Some(triplets_as_decomposition(mf.triplets));
        if opts.decode > 0 {
            let at_last = lanczos::KrylovOptions {
                position: Some(n - 1),
                ..lanczos::KrylovOptions::new(opts.decode)
            };
            let mf_last = lanczos::top_triplets(model, &tr, at_last, opts.pass)?;
            last = Some(triplets_as_decomposition(mf_last.triplets));
        }
        None
    } else if keep > 0 {
        let cat = decompose_concat(&values, dims, opts.decode.max(2), Some(&y))?;
        let mut per = Vec::with_capacity(n);
        for i in 0..n {
            let want = if i + 1 == n { opts.decode } else { 0 };
            let dec = decompose_token(&values, dims, i, want, Some(&y))?;
            per.push(dec.spectrum(opts.svd));
            if i + 1 == n {
                last = Some(dec);
            }
        }
        let report = SvdReport {
            concat: cat.spectrum(opts.svd),
            per_token: per,
        };
        concat = Some(cat);
        Some(report)
    } else {
        None
    };
    timings.svd = now_ms() - t;

    let t = now_ms();
    // Every vector to read as words, decoded in one pass over the vocabulary.
    let mut queue = Queue::default();
    let final_u: Vec<Vec<f64>> = concat
        .as_ref()
        .map(|c| c.u.iter().take(2).cloned().collect())
        .unwrap_or_default();
    let pairs = |q: &mut Queue, dec: Option<Decomposition>, base: usize| {
        dec.map(|d| queue_pairs(q, &d, dims[2], base, opts.decode))
            .unwrap_or_default()
    };
    let cat_pairs = pairs(&mut queue, concat, 0);
    let last_pairs = pairs(&mut queue, last, n - 1);
    let lines = if opts.columns > 0 && !opts.matrix_free {
        Some(queue_lines(&mut queue, &values, dims, n - 1, opts.columns))
    } else {
        None
    };
    let decoded = queue.run(model, opts.decode_top)?;
    let decode = if opts.decode > 0 && keep > 0 {
        Some(DecodeReport {
            concat: answer_pairs(cat_pairs, &decoded),
            last_token: answer_pairs(last_pairs, &decoded),
        })
    } else {
        None
    };
    let columns = lines.map(|l| answer_lines(l, &decoded));
    timings.decode = now_ms() - t;
    drop(values);

    let attention = if opts.attention {
        let mut all = Vec::with_capacity(tr.layers.len());
        for rec in &tr.layers {
            let p = rec.p.to_dtype(DType::F64)?;
            all.push(p.to_vec3::<f64>()?);
        }
        Some(all)
    } else {
        None
    };

    let t = now_ms();
    let mut layers = Vec::new();
    let mut queue = Queue::default();
    // Per row: (u queue indices, logit-lens queue index); per path point:
    // the layer, its u_1, u_2.
    let mut asked = Vec::new();
    let mut path_us = Vec::new();
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
                let rel_error = reconstruction_error(&jt, tap.input(&tr), &target)?;
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
                layers.push(LayerRow {
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
    let decoded = queue.run(model, opts.decode_top.max(1))?;
    for (row, (us, lens)) in layers.iter_mut().zip(asked) {
        row.u_tokens = us.iter().map(|&i| decoded.unembed[i].clone()).collect();
        row.logit_lens_tokens = decoded.unembed[lens].clone();
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let path = if final_u.len() == 2 {
        path_us
            .iter()
            .zip(
                layers
                    .iter()
                    .filter(|r| r.kind == TapKind::Layer && r.mode == "cumulative"),
            )
            .map(|((l, u1, u2), row)| PathPoint {
                layer: *l,
                x: dot(u1, &final_u[0]),
                y: dot(u2, &final_u[1]),
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
    timings.layers = now_ms() - t;

    let steering = match &opts.steer {
        Some(so) => {
            let t = now_ms();
            let s = steering::steer(model, prompt, so, opts.precision, opts.pass)?;
            timings.steering = now_ms() - t;
            Some(s)
        }
        None => None,
    };

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
        svd,
        matrix_free,
        decode,
        attribution,
        attribution_predicted,
        columns,
        path,
        attention,
        steering,
        timings_ms: timings,
    })
}

fn triplets_as_decomposition(triplets: Vec<lanczos::Triplet>) -> Decomposition {
    Decomposition {
        singular_values: triplets.iter().map(|t| t.sigma).collect(),
        u: triplets.iter().map(|t| t.u.clone()).collect(),
        v: triplets.into_iter().map(|t| t.v).collect(),
    }
}

/// A decoded pair waiting for its words: `(sigma, u index, v index, position)`.
type PairRequest = (f64, usize, usize, usize);

/// Queues the decomposition's pairs; `width` is the input dimension (a
/// `J_cat` right vector is read at its largest position block; `base` is
/// the position of a single `J_i`).
fn queue_pairs(
    q: &mut Queue,
    dec: &Decomposition,
    width: usize,
    base: usize,
    count: usize,
) -> Vec<PairRequest> {
    dec.u
        .iter()
        .take(count)
        .zip(&dec.v)
        .zip(&dec.singular_values)
        .map(|((u, v), &sigma)| {
            let (pos, block) = v
                .chunks(width)
                .enumerate()
                .max_by(|a, b| norm(a.1).total_cmp(&norm(b.1)))
                .unwrap_or((0, &[]));
            (
                sigma,
                q.unembed(u.clone()),
                q.embed(block.to_vec()),
                base + pos,
            )
        })
        .collect()
}

fn answer_pairs(requests: Vec<PairRequest>, decoded: &Decoded) -> Vec<DecodedPair> {
    requests
        .into_iter()
        .enumerate()
        .map(|(k, (sigma, u, v, pos))| DecodedPair {
            k: k + 1,
            sigma,
            u_tokens: decoded.unembed[u].clone(),
            v_tokens: decoded.embed[v].clone(),
            v_position: pos,
        })
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The largest columns and rows of `J_i` queued for decoding:
/// `(position, [(index, norm, queue index)] columns, ... rows)`.
type LineRequests = (usize, Vec<(usize, f64, usize)>, Vec<(usize, f64, usize)>);

/// Queues the `count` largest columns and rows of `J_i`.
fn queue_lines(
    q: &mut Queue,
    values: &[f64],
    dims: [usize; 3],
    i: usize,
    count: usize,
) -> LineRequests {
    let [_, r, c] = dims;
    let block = &values[i * r * c..(i + 1) * r * c];
    let column = |j: usize| (0..r).map(|a| block[a * c + j]).collect::<Vec<f64>>();
    let row = |a: usize| block[a * c..(a + 1) * c].to_vec();
    let largest = |len: usize, get: &dyn Fn(usize) -> Vec<f64>| {
        let mut idx: Vec<(usize, f64)> = (0..len).map(|j| (j, norm(&get(j)))).collect();
        idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        idx.truncate(count);
        idx
    };
    let cols = largest(c, &column)
        .into_iter()
        .map(|(j, nm)| (j, nm, q.unembed(column(j))))
        .collect();
    let rows = largest(r, &row)
        .into_iter()
        .map(|(a, nm)| (a, nm, q.embed(row(a))))
        .collect();
    (i, cols, rows)
}

fn answer_lines((position, cols, rows): LineRequests, decoded: &Decoded) -> Columns {
    let lines = |list: Vec<(usize, f64, usize)>, answers: &[Vec<TokenScore>]| {
        list.into_iter()
            .map(|(index, norm, at)| Line {
                index,
                norm,
                tokens: answers[at].clone(),
            })
            .collect()
    };
    Columns {
        position,
        columns: lines(cols, &decoded.unembed),
        rows: lines(rows, &decoded.embed),
    }
}
