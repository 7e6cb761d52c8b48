//! Top singular triplets of `J_cat = [J_1 … J_n]` (`d × n·d`), or of one
//! `J_i`, without forming `J`, for prompts whose full Jacobian would not fit: block Krylov
//! (block Lanczos with full reorthogonalization) on `A = J_cat J_catᵀ`
//! (`d × d`), each `A·X` being one transpose pass with the block's rows
//! (`Jᵀ X`) and one forward-mode pass with those as tangents (`J (Jᵀ X)`).
//! Rayleigh–Ritz on the Krylov basis gives `σ_k² `, `u_k`; then
//! `v_k = Jᵀ u_k / σ_k`. The residual `‖A u_k − σ_k² u_k‖` bounds the error
//! of `σ_k²` (some eigenvalue of `A` lies that close) and equals
//! `σ_k ‖J v_k − σ_k u_k‖`.

use crate::error::{EngineError, Result};
use crate::jacobian::{jvp, vjp, PassOptions};
use crate::model::Model;
use crate::trace::Trace;
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use serde::{Deserialize, Serialize};
use std::future::Future;

#[derive(Debug, Clone, Copy)]
pub struct KrylovOptions {
    /// Triplets wanted.
    pub k: usize,
    /// Vectors per block (≥ k; a few more than k converge faster).
    pub block: usize,
    /// Stop when every wanted residual `‖A u − θ u‖ ≤ tol · θ₁`.
    pub tol: f64,
    /// At most this many blocks.
    pub max_blocks: usize,
    pub seed: u64,
    /// `Some(i)`: the triplets of `J_i` instead of `J_cat`.
    pub position: Option<usize>,
}

impl KrylovOptions {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            block: (k + 8).max(12),
            tol: 1e-10,
            max_blocks: 40,
            seed: 0x1e57,
            position: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Triplet {
    pub sigma: f64,
    /// Left singular vector (output space, `d`), signed so that `u · y ≥ 0`.
    pub u: Vec<f64>,
    /// Right singular vector (`n·d`, position-major; `d` for one `J_i`).
    pub v: Vec<f64>,
    /// `‖J_cat v − σ u‖` (and `Jᵀ u = σ v` holds by construction).
    pub residual: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KrylovSvd {
    pub method: String,
    /// Vector products with `J` or `Jᵀ` (one per row of a block, each way).
    pub products: usize,
    pub blocks: usize,
    pub triplets: Vec<Triplet>,
}

/// `d × b` column blocks kept as `b` vectors of `d`.
pub type Block = Vec<Vec<f64>>;

/// Where `A·X` is computed for a block of `d`-vectors: `J_cat J_catᵀ X`, or
/// `J_i J_iᵀ X` at `position`. [`OnThisThread`] runs both passes here; the
/// page's pool of workers shares a block's vectors out (`lens_worker::pool`).
/// Each vector's product is independent of the others, so every
/// implementation returns [`product`]'s values (to the last bits that the
/// passes' blocking changes).
pub trait Products {
    /// Workers that compute a block's products side by side. A product's
    /// cost is mostly fixed per pass (about 0.9 s of Gemma 3 270M's 1.3 s
    /// for 16 vectors at 4 tokens), so a block grows by this factor and
    /// each worker takes a full share: fewer, larger blocks (13 → 9 for
    /// `J_cat` at 2 workers), the same triplets to the tolerance.
    fn lanes(&self) -> usize {
        1
    }

    fn apply(
        &mut self,
        model: &Model,
        trace: &Trace,
        x: &[Vec<f64>],
        position: Option<usize>,
        pass: PassOptions,
    ) -> impl Future<Output = Result<Block>>;
}

/// Both passes of every product on the calling thread.
pub struct OnThisThread;

impl Products for OnThisThread {
    fn apply(
        &mut self,
        model: &Model,
        trace: &Trace,
        x: &[Vec<f64>],
        position: Option<usize>,
        pass: PassOptions,
    ) -> impl Future<Output = Result<Block>> {
        std::future::ready(product(model, trace, x, position, pass))
    }
}

/// `A x_j` for each vector `x_j` (`d` values): one transpose pass with the
/// vectors as cotangent rows, one forward-mode pass with the results as
/// tangents.
pub fn product(
    model: &Model,
    trace: &Trace,
    x: &[Vec<f64>],
    position: Option<usize>,
    pass: PassOptions,
) -> Result<Block> {
    if let Some(i) = position.filter(|&i| i >= trace.n()) {
        return Err(EngineError::Config(format!(
            "position {i} is past the prompt's {} tokens",
            trace.n()
        )));
    }
    let d = model.config.hidden;
    if let Some(v) = x.iter().find(|v| v.len() != d) {
        return Err(EngineError::Config(format!(
            "a vector of {} values where the model's width is {d}",
            v.len()
        )));
    }
    j(
        model,
        trace,
        &jt(model, trace, x, position, pass)?,
        position,
    )
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Orthonormalizes `x` against `basis` and itself (twice, for f64-level
/// orthogonality); drops vectors that vanish.
fn orthonormalize(x: Block, basis: &[Vec<f64>]) -> Block {
    let mut out: Block = Vec::with_capacity(x.len());
    for mut v in x {
        let before = norm(&v);
        for _ in 0..2 {
            for q in basis.iter().chain(out.iter()) {
                let c = dot(&v, q);
                v.iter_mut().zip(q).for_each(|(a, b)| *a -= c * b);
            }
        }
        let after = norm(&v);
        if after > 1e-10 * before.max(f64::MIN_POSITIVE) && after > 0.0 {
            v.iter_mut().for_each(|a| *a /= after);
            out.push(v);
        }
    }
    out
}

/// `Jᵀ x_j` for each vector: `[b][n·d]`, or `[b][d]` (`J_iᵀ x_j`) at `position`.
fn jt(
    model: &Model,
    trace: &Trace,
    x: &[Vec<f64>],
    position: Option<usize>,
    opts: PassOptions,
) -> Result<Vec<Vec<f64>>> {
    let (b, d) = (x.len(), model.config.hidden);
    let flat: Vec<f64> = x.iter().flatten().copied().collect();
    let u = Tensor::from_vec(flat, (b, d), &Device::Cpu)?.to_dtype(trace.dtype())?;
    let (g, _) = vjp(model, trace, &u, opts)?; // [n, b, d]
    let g = match position {
        Some(i) => g.narrow(0, i, 1)?,
        None => g,
    };
    let g = g.transpose(0, 1)?.contiguous()?.to_dtype(DType::F64)?; // [b, n|1, d]
    Ok(g.flatten_from(1)?.to_vec2::<f64>()?)
}

/// `J t_j` for tangents `t_j` of `n·d` values each (or `d` at `position`).
fn j(model: &Model, trace: &Trace, t: &[Vec<f64>], position: Option<usize>) -> Result<Block> {
    let (b, n, d) = (t.len(), trace.n(), model.config.hidden);
    let flat: Vec<f64> = match position {
        Some(i) => {
            let mut full = vec![0.0; b * n * d];
            for (r, v) in t.iter().enumerate() {
                full[(r * n + i) * d..(r * n + i + 1) * d].copy_from_slice(v);
            }
            full
        }
        None => t.iter().flatten().copied().collect(),
    };
    let v = Tensor::from_vec(flat, (b, n, d), &Device::Cpu)?.to_dtype(trace.dtype())?;
    Ok(jvp(model, trace, &v)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?)
}

/// A deterministic pseudo-random start block.
fn start_block(d: usize, b: usize, seed: u64) -> Block {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..b)
        .map(|_| {
            (0..d)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect()
        })
        .collect()
}

/// The top `opts.k` singular triplets of `J_cat` by block Krylov iteration,
/// the products on this thread.
pub fn top_triplets(
    model: &Model,
    trace: &Trace,
    opts: KrylovOptions,
    pass: PassOptions,
) -> Result<KrylovSvd> {
    crate::jacobian::now(top_triplets_by(model, trace, opts, pass, &mut OnThisThread))
}

/// [`top_triplets`] with each block's products computed by `products`.
pub async fn top_triplets_by(
    model: &Model,
    trace: &Trace,
    opts: KrylovOptions,
    pass: PassOptions,
    products: &mut impl Products,
) -> Result<KrylovSvd> {
    let d = model.config.hidden;
    let k = opts.k.min(d);
    if let Some(i) = opts.position {
        if i >= trace.n() {
            return Err(EngineError::Config(format!(
                "position {i} is past the prompt's {} tokens",
                trace.n()
            )));
        }
    }
    if k == 0 {
        return Err(EngineError::Config(
            "ask for at least one singular triplet".into(),
        ));
    }
    let b = (opts.block.max(k) * products.lanes().max(1)).min(d);
    let y = trace.y_vec()?;
    let mut basis: Block = Vec::new(); // Q
    let mut images: Block = Vec::new(); // A Q
    let mut x = orthonormalize(start_block(d, b, opts.seed), &[]);
    let mut count = 0;
    let mut blocks = 0;
    let mut ritz: Option<(Vec<f64>, Block, Block)> = None; // θ, U, A U
    while !x.is_empty() && blocks < opts.max_blocks {
        let ax = {
            let _step = crate::progress::nest(blocks, opts.max_blocks);
            products
                .apply(model, trace, &x, opts.position, pass)
                .await?
        };
        if ax.len() != x.len() || ax.iter().any(|v| v.len() != d) {
            return Err(EngineError::Backend(format!(
                "a block of {} products came back as {} vectors",
                x.len(),
                ax.len()
            )));
        }
        count += 2 * x.len();
        blocks += 1;
        basis.extend(x);
        images.extend(ax.iter().cloned());
        // Rayleigh–Ritz: T = Qᵀ A Q, symmetrized.
        let m = basis.len();
        let t = Mat::<f64>::from_fn(m, m, |r, c| {
            0.5 * (dot(&basis[r], &images[c]) + dot(&basis[c], &images[r]))
        });
        let eig = t
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|e| EngineError::Backend(format!("eigen solver: {e:?}")))?;
        let (s, w) = (eig.S().column_vector(), eig.U());
        // Eigenvalues ascending: take the top k.
        let take = k.min(m);
        let mut theta = Vec::with_capacity(take);
        let (mut us, mut aus) = (Vec::with_capacity(take), Vec::with_capacity(take));
        for idx in (m - take..m).rev() {
            theta.push(s[idx].max(0.0));
            let mut u = vec![0.0; d];
            let mut au = vec![0.0; d];
            for r in 0..m {
                let c = w[(r, idx)];
                u.iter_mut().zip(&basis[r]).for_each(|(a, q)| *a += c * q);
                au.iter_mut().zip(&images[r]).for_each(|(a, q)| *a += c * q);
            }
            us.push(u);
            aus.push(au);
        }
        let top = theta.first().copied().unwrap_or(0.0);
        let converged = take == k
            && us.iter().zip(&aus).zip(&theta).all(|((u, au), th)| {
                let r: Vec<f64> = au.iter().zip(u).map(|(a, b)| a - th * b).collect();
                norm(&r) <= opts.tol * top
            });
        ritz = Some((theta, us, aus));
        if converged || m >= d {
            break;
        }
        x = orthonormalize(ax, &basis);
    }
    let Some((theta, mut us, aus)) = ritz else {
        return Err(EngineError::Config("no Krylov step was possible".into()));
    };
    // Sign towards y, then v = Jᵀ u / σ.
    for u in us.iter_mut() {
        if dot(u, &y) < 0.0 {
            u.iter_mut().for_each(|a| *a = -*a);
        }
    }
    let vs = jt(model, trace, &us, opts.position, pass)?;
    count += us.len();
    let triplets = theta
        .iter()
        .zip(us)
        .zip(vs)
        .zip(&aus)
        .map(|(((&th, u), v), au)| {
            let sigma = th.sqrt();
            // ‖J v − σ u‖ = ‖A u − σ² u‖ / σ (au is A u up to u's sign).
            let sgn = if dot(au, &u) < 0.0 { -1.0 } else { 1.0 };
            let r: Vec<f64> = au.iter().zip(&u).map(|(a, b)| sgn * a - th * b).collect();
            let residual = if sigma > 0.0 { norm(&r) / sigma } else { 0.0 };
            let v = if sigma > 0.0 {
                v.into_iter().map(|x| x / sigma).collect()
            } else {
                v
            };
            Triplet {
                sigma,
                u,
                v,
                residual,
            }
        })
        .collect();
    let of = match opts.position {
        Some(i) => format!("J_{i}·J_{i}ᵀ"),
        None => "J_cat·J_catᵀ".to_string(),
    };
    Ok(KrylovSvd {
        method: format!("block Lanczos on {of} (block {b}, full reorthogonalization)"),
        products: count,
        blocks,
        triplets,
    })
}
