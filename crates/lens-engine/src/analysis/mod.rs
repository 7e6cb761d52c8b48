//! Analyses of the detached Jacobian: spectra (exact or matrix-free),
//! decoding, columns, heatmaps, layer curves, attribution, steering. The
//! stages (`crate::stages`) call these and return the Report's parts.

pub mod attribution;
pub mod certificate;
pub mod compare;
pub mod decode;
pub mod lanczos;
pub mod layers;
pub mod steering;
pub mod svd;

use crate::error::Result;
use crate::forward::Precision;
use crate::jacobian::PassOptions;
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{DType, Tensor};
use decode::{Decoded, Queue, TokenScore};
pub use layers::layer_curves;
pub use lens_report::{
    Columns, DecodeReport, DecodedPair, Heatmap, LayerRow, Line, MatrixFree, PathPoint,
    Reconstruction, Report, SvdReport, Timings, TokenRow,
};
use svd::{decompose_concat, decompose_token, jacobian_values, Decomposition};

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
    /// How `J_cat`'s spectrum is found: by forming `J` (`Full`), from
    /// probe products without it (`Krylov`), or by the prompt's length.
    pub svd_mode: SvdMode,
    /// How far the run goes: the shares alone (typing), the contributions
    /// too (a quick look), or everything.
    pub extent: Extent,
    /// What the caller allows a run (a tab's memory, the longest prompt).
    pub limits: Limits,
}

/// What a caller allows a run: the page's tab has less room than a
/// command line. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Longest prompt (tokens).
    pub max_tokens: Option<usize>,
    /// The full `J` (`n·d²` values) must fit this many bytes: past it
    /// `SvdMode::Auto` goes matrix-free and `SvdMode::Full` is refused.
    pub max_jacobian_bytes: Option<usize>,
    /// Longest prompt whose attention probabilities go into the Report
    /// (`L·H·n²` numbers).
    pub max_attention_tokens: Option<usize>,
    /// The most memory the run may use with the model: a run estimated
    /// past it is refused before its frozen forward.
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// No limits: the command line and Python.
    pub const NONE: Limits = Limits {
        max_tokens: None,
        max_jacobian_bytes: None,
        max_attention_tokens: None,
        memory_bytes: None,
    };

    /// A browser tab (wasm32, 4 GB): `J` within 384 MB keeps the SVD's
    /// peak (J's values, faer's matrix, V) near 1.5 GB; attention for at
    /// most 64 tokens (0.3 M numbers for Gemma 3 270M).
    pub const TAB: Limits = Limits {
        max_tokens: Some(512),
        max_jacobian_bytes: Some(384 << 20),
        max_attention_tokens: Some(64),
        memory_bytes: None,
    };
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
            svd_mode: SvdMode::Full,
            extent: Extent::Full,
            limits: Limits::NONE,
        }
    }
}

pub use lens_report::{Extent, SvdMode};

/// `‖J_i‖_F` per token of `J` (`[n, d, d]`).
pub fn fro_norms(j: &Tensor) -> Result<Vec<f64>> {
    Ok(j.sqr()?
        .sum((1, 2))?
        .sqrt()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?)
}

/// `J`'s entries in f64, `[n, d, d]` row-major, kept for the SVDs and for
/// reading single `J_i` (heatmaps, columns) later.
#[derive(Debug, Clone)]
pub struct JacobianValues {
    pub values: Vec<f64>,
    pub dims: [usize; 3],
}

impl JacobianValues {
    pub fn of(j: &Tensor) -> Result<Self> {
        let (values, dims) = jacobian_values(j)?;
        Ok(Self { values, dims })
    }

    /// `J_i` as a row-major `d × d` slice.
    pub fn block(&self, i: usize) -> &[f64] {
        let [_, r, c] = self.dims;
        &self.values[i * r * c..(i + 1) * r * c]
    }
}

/// The SVD part of the Report, read as words.
#[derive(Debug, Clone)]
pub struct Spectra {
    pub svd: Option<SvdReport>,
    pub matrix_free: Option<MatrixFree>,
    pub decode: Option<DecodeReport>,
    pub columns: Option<Columns>,
    /// `J_cat`'s top left singular vectors (`u_1`, `u_2` are the axes of
    /// the layer path).
    pub u_cat: Vec<Vec<f64>>,
    /// Time spent decoding (part of the step's time).
    pub decode_ms: f64,
}

/// SVDs of `J_cat` and of every `J_i`, the top pairs decoded, and the
/// largest columns and rows of the last token's `J_i`.
pub fn spectra(
    model: &Model,
    tr: &Trace,
    jv: &JacobianValues,
    opts: &AnalyzeOptions,
    now_ms: &dyn Fn() -> f64,
) -> Result<Spectra> {
    let y = tr.y_vec()?;
    let n = tr.n();
    let (values, dims) = (&jv.values, jv.dims);
    let keep = opts.svd.max(opts.decode);
    if keep == 0 {
        return decode_spectra(model, None, None, None, n, dims[2], opts, now_ms);
    }
    // J_cat's top `svd` left vectors are kept (a comparison's subspace; the
    // path's axes are the first two), `decode` of them decoded.
    let cat = decompose_concat(values, dims, keep.max(2), Some(&y))?;
    let mut per = Vec::with_capacity(n);
    let mut last = None;
    for i in 0..n {
        let want = if i + 1 == n { opts.decode } else { 0 };
        let dec = decompose_token(values, dims, i, want, Some(&y))?;
        per.push(dec.spectrum(opts.svd));
        if i + 1 == n {
            last = Some(dec);
        }
    }
    let report = SvdReport {
        concat: cat.spectrum(opts.svd),
        per_token: per,
    };
    let mut sp = decode_spectra(model, Some(cat), last, Some(jv), n, dims[2], opts, now_ms)?;
    sp.svd = Some(report);
    Ok(sp)
}

/// The top triplets of `J_cat` (and of the last `J_i`) without forming `J`,
/// each block's products computed by `products`.
pub async fn spectra_matrix_free(
    model: &Model,
    tr: &Trace,
    opts: &AnalyzeOptions,
    now_ms: &dyn Fn() -> f64,
    products: &mut impl lanczos::Products,
) -> Result<Spectra> {
    let n = tr.n();
    let k = opts.decode.max(2).max(opts.svd.min(8));
    // Progress: J_cat's blocks, then the last token's.
    let parts = if opts.decode > 0 { 2 } else { 1 };
    let mf = {
        let _part = crate::progress::nest(0, parts);
        let cat = lanczos::KrylovOptions::new(k);
        lanczos::top_triplets_by(model, tr, cat, opts.pass, products).await?
    };
    let matrix_free = MatrixFree {
        method: mf.method.clone(),
        products: mf.products,
        blocks: mf.blocks,
        singular_values: mf.triplets.iter().map(|t| t.sigma).collect(),
        residuals: mf.triplets.iter().map(|t| t.residual).collect(),
    };
    let concat = triplets_as_decomposition(mf.triplets);
    let last = if opts.decode > 0 {
        let at_last = lanczos::KrylovOptions {
            position: Some(n - 1),
            ..lanczos::KrylovOptions::new(opts.decode)
        };
        let _part = crate::progress::nest(1, parts);
        let mf_last = lanczos::top_triplets_by(model, tr, at_last, opts.pass, products).await?;
        Some(triplets_as_decomposition(mf_last.triplets))
    } else {
        None
    };
    let width = model.config.hidden;
    let mut sp = decode_spectra(model, Some(concat), last, None, n, width, opts, now_ms)?;
    sp.matrix_free = Some(matrix_free);
    Ok(sp)
}

/// Every vector to read as words, decoded in one pass over the vocabulary.
#[allow(clippy::too_many_arguments)]
fn decode_spectra(
    model: &Model,
    concat: Option<Decomposition>,
    last: Option<Decomposition>,
    jv: Option<&JacobianValues>,
    n: usize,
    width: usize,
    opts: &AnalyzeOptions,
    now_ms: &dyn Fn() -> f64,
) -> Result<Spectra> {
    let t = now_ms();
    let any = concat.is_some();
    let mut queue = Queue::default();
    let u_cat: Vec<Vec<f64>> = concat.as_ref().map(|c| c.u.clone()).unwrap_or_default();
    let pairs = |q: &mut Queue, dec: Option<Decomposition>, base: usize| {
        dec.map(|d| queue_pairs(q, &d, width, base, opts.decode))
            .unwrap_or_default()
    };
    let cat_pairs = pairs(&mut queue, concat, 0);
    let last_pairs = pairs(&mut queue, last, n - 1);
    let lines = match jv {
        Some(jv) if opts.columns > 0 => Some(queue_lines(&mut queue, jv, n - 1, opts.columns)),
        _ => None,
    };
    let decoded = queue.run(model, opts.decode_top)?;
    let decode = (opts.decode > 0 && any).then(|| DecodeReport {
        concat: answer_pairs(cat_pairs, &decoded),
        last_token: answer_pairs(last_pairs, &decoded),
    });
    Ok(Spectra {
        svd: None,
        matrix_free: None,
        decode,
        columns: lines.map(|l| answer_lines(l, &decoded)),
        u_cat,
        decode_ms: now_ms() - t,
    })
}

/// The largest columns and rows of `J_i` at `position`, decoded.
pub fn columns_at(
    model: &Model,
    jv: &JacobianValues,
    position: usize,
    count: usize,
    decode_top: usize,
) -> Result<Columns> {
    if position >= jv.dims[0] {
        return Err(crate::EngineError::Config(format!(
            "position {position} is past the prompt's {} tokens",
            jv.dims[0]
        )));
    }
    let mut queue = Queue::default();
    let lines = queue_lines(&mut queue, jv, position, count);
    let decoded = queue.run(model, decode_top)?;
    Ok(answer_lines(lines, &decoded))
}

/// `J_i` at `position` drawn on at most `cells × cells` cells: each cell is
/// the entry of largest magnitude in its block (signed), so that a single
/// strong coordinate stays visible however small the picture.
pub fn heatmap(jv: &JacobianValues, position: usize, cells: usize) -> Result<Heatmap> {
    let [n, r, c] = jv.dims;
    if position >= n {
        return Err(crate::EngineError::Config(format!(
            "position {position} is past the prompt's {n} tokens"
        )));
    }
    let cells = cells.max(1);
    let row_block = r.div_ceil(cells);
    let col_block = c.div_ceil(cells);
    let (rows, cols) = (r.div_ceil(row_block), c.div_ceil(col_block));
    let block = jv.block(position);
    let mut values = vec![0.0f64; rows * cols];
    let mut max_abs = 0.0f64;
    for a in 0..r {
        for b in 0..c {
            let x = block[a * c + b];
            let cell = &mut values[(a / row_block) * cols + b / col_block];
            if x.abs() > cell.abs() {
                *cell = x;
            }
            max_abs = max_abs.max(x.abs());
        }
    }
    Ok(Heatmap {
        position,
        rows,
        cols,
        row_block,
        col_block,
        values,
        max_abs,
    })
}

/// The frozen attention probabilities `[layer][head][query][key]`.
pub fn attention(tr: &Trace) -> Result<Vec<Vec<Vec<Vec<f64>>>>> {
    let mut all = Vec::with_capacity(tr.layers.len());
    for rec in &tr.layers {
        let p = rec.p.to_dtype(DType::F64)?;
        all.push(p.to_vec3::<f64>()?);
    }
    Ok(all)
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
fn queue_lines(q: &mut Queue, jv: &JacobianValues, i: usize, count: usize) -> LineRequests {
    let [_, r, c] = jv.dims;
    let block = jv.block(i);
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
