//! The run's side of the page's pool of engine workers (the page's side is
//! `src/pool.rs`, the bookkeeping `lens_protocol::pool`): a pooled run
//! takes shares of `J`'s rows once it joins and gets the assembled `J`
//! back; a matrix-free run shares each Lanczos block's products the same
//! way ([`PooledProducts`]); a helper computes the rows or products it is
//! given from its own frozen forward. Values travel as little-endian bytes
//! (transferred buffers in the browser).

use crate::reply::{hook, Clock, Emit, Failure};
use candle_core::{DType, Tensor};
use lens_engine::analysis::lanczos::{self, Block};
use lens_engine::jacobian::{jacobian_rows, PassOptions};
use lens_engine::run::{Boxed, Limits, Pool as RunPool, Session};
use lens_engine::trace::Trace;
use lens_engine::{progress, EngineError, Model, Precision};
use lens_protocol::pool::Chunk;
use lens_protocol::{Reply, Stage};
use std::future::Future;
use std::pin::Pin;

/// The page's pool of engine workers, as the run's own worker sees it: the
/// page hands out `J`'s rows in chunks (to this worker too, once it joins)
/// and sends back the assembled `J` (`lens_protocol::pool::Assembly`).
pub trait Pool {
    /// Workers forming `J` together, this one included.
    fn workers(&self) -> usize;
    /// The page's next word while the pool forms `J`.
    fn next(&self) -> Pin<Box<dyn Future<Output = PoolWord> + '_>>;
    /// The values (`[n, count, d]`, little-endian) of a chunk computed here.
    fn send_rows(&self, job: u32, chunk: Chunk, values: Vec<u8>, ms: f64);
    /// A block's `count` vectors of `width` (f64, little-endian) whose
    /// products the pool is to compute (`Reply::ProductsWanted`).
    fn want_products(
        &self,
        job: u32,
        position: Option<usize>,
        vectors: Vec<u8>,
        count: usize,
        width: usize,
    );
}

/// What the page says to a run while its pool forms `J`.
#[derive(Debug)]
pub enum PoolWord {
    /// Compute these rows (of `J`, or of the block's products).
    Rows(Chunk),
    /// What the pool assembled: `J`'s bytes (`[n, d, d]`), or the block's
    /// products (`[b, d]`, f64).
    Assembled(Vec<u8>),
}

/// A tensor's values as little-endian bytes, in its own precision (f64 or f32).
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, EngineError> {
    let flat = t.flatten_all()?;
    Ok(match flat.dtype() {
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    })
}

/// `[n, d, d]` values of `dtype` from little-endian bytes.
pub(crate) fn tensor_of_bytes(
    bytes: &[u8],
    dims: (usize, usize, usize),
    dtype: DType,
) -> Result<Tensor, EngineError> {
    let expected = dims
        .0
        .checked_mul(dims.1)
        .and_then(|c| c.checked_mul(dims.2))
        .and_then(|c| c.checked_mul(dtype.size_in_bytes()));
    if expected != Some(bytes.len()) {
        return Err(EngineError::Backend(format!(
            "the pool's Jacobian has {} bytes, expected {expected:?}",
            bytes.len()
        )));
    }
    // wasm32 and the native targets are little-endian: the bytes are the values.
    Ok(Tensor::from_raw_buffer(
        bytes,
        dtype,
        &[dims.0, dims.1, dims.2],
        &candle_core::Device::Cpu,
    )?)
}

/// The run's side of the page's pool, as the engine's run driver sees it
/// (`lens_engine::run::Pool`): `J`'s rows, or a matrix-free block's
/// products, computed here in the shares the page hands this worker until
/// the page sends the assembled whole.
pub(crate) struct Pooled<'a> {
    pub job: u32,
    pub pool: &'a dyn Pool,
    pub emit: Emit,
    pub now_ms: Clock,
}

impl Pooled<'_> {
    /// Shares computed here by `share` until the page sends the whole.
    async fn shares(
        &self,
        mut share: impl FnMut(Chunk) -> Result<Vec<u8>, EngineError>,
    ) -> Result<Vec<u8>, EngineError> {
        loop {
            match self.pool.next().await {
                PoolWord::Rows(c) => {
                    let t = (self.now_ms)();
                    let values = share(c)?;
                    self.pool
                        .send_rows(self.job, c, values, (self.now_ms)() - t);
                }
                PoolWord::Assembled(bytes) => return Ok(bytes),
            }
        }
    }
}

impl RunPool for Pooled<'_> {
    fn workers(&self) -> usize {
        self.pool.workers()
    }

    fn start_jacobian(&self, n: usize, d: usize, elem: usize) {
        (self.emit)(Reply::JacobianWanted {
            job: self.job,
            n,
            rows: d,
            width: d,
            elem,
        });
    }

    fn jacobian<'a>(&'a self, model: &'a Model, tr: &'a Trace) -> Boxed<'a, Tensor> {
        Box::pin(async move {
            (self.emit)(Reply::Joining { job: self.job });
            let bytes = self
                .shares(|c| {
                    let (rows, _) =
                        jacobian_rows(model, tr, c.start, c.count, PassOptions::default())?;
                    tensor_bytes(&rows)
                })
                .await?;
            let d = model.config.hidden;
            tensor_of_bytes(&bytes, (tr.n(), d, d), tr.dtype())
        })
    }

    fn products<'a>(
        &'a self,
        model: &'a Model,
        tr: &'a Trace,
        x: &'a [Vec<f64>],
        position: Option<usize>,
    ) -> Boxed<'a, Block> {
        Box::pin(async move {
            let d = model.config.hidden;
            self.pool
                .want_products(self.job, position, block_bytes(x), x.len(), d);
            let bytes = self
                .shares(|c| {
                    let Some(share) = x.get(c.start..c.start.saturating_add(c.count)) else {
                        return Err(EngineError::Backend(format!(
                            "the pool asked for products {}..{} of a block of {}",
                            c.start,
                            c.start.saturating_add(c.count),
                            x.len()
                        )));
                    };
                    let ax = lanczos::product(model, tr, share, position, PassOptions::default())?;
                    Ok(block_bytes(&ax))
                })
                .await?;
            let ax = block_of_bytes(&bytes, d)?;
            if ax.len() != x.len() {
                return Err(EngineError::Backend(format!(
                    "the pool's products are {} vectors, expected {}",
                    ax.len(),
                    x.len()
                )));
            }
            Ok(ax)
        })
    }
}

/// Rows of `prompt`'s `J` for the page's pool (a worker other than the
/// run's), from the frozen forward kept in `session` or made afresh; its
/// values as little-endian bytes.
#[allow(clippy::too_many_arguments)]
pub fn rows(
    model: &Model,
    job: u32,
    prompt: &str,
    precision: Precision,
    chunk: Chunk,
    emit: Emit,
    session: &mut Option<Session>,
) -> Result<Vec<u8>, Failure> {
    let s = Session::for_prompt(model, prompt, precision, &Limits::TAB, session)?;
    let (rows, _) = progress::scoped(hook(&emit, job, Stage::Jacobian), || {
        jacobian_rows(
            model,
            &s.tr,
            chunk.start,
            chunk.count,
            PassOptions::default(),
        )
    })?;
    Ok(tensor_bytes(&rows)?)
}

/// Vectors as little-endian f64 bytes.
pub fn block_bytes(x: &[Vec<f64>]) -> Vec<u8> {
    x.iter().flatten().flat_map(|v| v.to_le_bytes()).collect()
}

/// Vectors of `width` f64 values from little-endian bytes.
pub fn block_of_bytes(bytes: &[u8], width: usize) -> Result<Block, EngineError> {
    let row = width * 8;
    if width == 0 || !bytes.len().is_multiple_of(row) {
        return Err(EngineError::Backend(format!(
            "{} bytes are not vectors of {width} numbers",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(row)
        .map(|r| {
            r.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect()
        })
        .collect())
}

/// Products `A x_j` of a matrix-free run's block for the page's pool (a
/// worker other than the run's), from the frozen forward kept in `session`
/// or made afresh; the vectors and the products as little-endian f64 bytes.
#[allow(clippy::too_many_arguments)]
pub fn products(
    model: &Model,
    job: u32,
    prompt: &str,
    precision: Precision,
    position: Option<usize>,
    vectors: &[u8],
    emit: Emit,
    session: &mut Option<Session>,
) -> Result<Vec<u8>, Failure> {
    let x = block_of_bytes(vectors, model.config.hidden)?;
    let s = Session::for_prompt(model, prompt, precision, &Limits::TAB, session)?;
    let ax = progress::scoped(hook(&emit, job, Stage::Krylov), || {
        lanczos::product(model, &s.tr, &x, position, PassOptions::default())
    })?;
    Ok(block_bytes(&ax))
}
