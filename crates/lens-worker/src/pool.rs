//! The run's side of the page's pool of engine workers (the page's side is
//! `src/pool.rs`, the bookkeeping `lens_protocol::pool`): a pooled run
//! takes shares of `J`'s rows once it joins and gets the assembled `J`
//! back; a matrix-free run shares each Lanczos block's products the same
//! way ([`PooledProducts`]); a helper computes the rows or products it is
//! given from its own frozen forward. Values travel as little-endian bytes
//! (transferred buffers in the browser).

use crate::stages::{hook, session_for, Emit, Failure, Session};
use candle_core::{DType, Tensor};
use lens_engine::analysis::lanczos::{self, Block, Products};
use lens_engine::jacobian::{jacobian_rows, PassOptions};
use lens_engine::trace::Trace;
use lens_engine::{progress, EngineError, Model, Precision};
use lens_protocol::pool::Chunk;
use lens_protocol::{ErrorKind, Reply, Stage};
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
pub fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, Failure> {
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
) -> Result<Tensor, Failure> {
    let count = dims.0 * dims.1 * dims.2;
    let elem = dtype.size_in_bytes();
    if bytes.len() != count * elem {
        return Err(Failure {
            kind: ErrorKind::Engine,
            message: format!(
                "the pool's Jacobian has {} bytes, expected {}",
                bytes.len(),
                count * elem
            ),
        });
    }
    // wasm32 and the native targets are little-endian: the bytes are the values.
    Ok(Tensor::from_raw_buffer(
        bytes,
        dtype,
        &[dims.0, dims.1, dims.2],
        &candle_core::Device::Cpu,
    )?)
}

/// The run's side of a pooled `J`: chunks computed here until the page
/// sends the whole.
pub(crate) async fn from_pool(
    model: &Model,
    tr: &Trace,
    job: u32,
    pool: &dyn Pool,
    emit: &Emit,
    now_ms: &dyn Fn() -> f64,
) -> Result<Tensor, Failure> {
    emit(Reply::Joining { job });
    let d = model.config.hidden;
    loop {
        match pool.next().await {
            PoolWord::Rows(c) => {
                let t = now_ms();
                let (rows, _) = jacobian_rows(model, tr, c.start, c.count, PassOptions::default())?;
                pool.send_rows(job, c, tensor_bytes(&rows)?, now_ms() - t);
            }
            PoolWord::Assembled(bytes) => {
                return tensor_of_bytes(&bytes, (tr.n(), d, d), tr.dtype())
            }
        }
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
    let s = session_for(model, prompt, precision, session)?;
    let (rows, _) = progress::scoped(hook(&emit, job, Stage::Jacobian), || {
        jacobian_rows(
            model,
            &s.tr,
            chunk.start,
            chunk.count,
            PassOptions::default(),
        )
    })?;
    tensor_bytes(&rows)
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

/// A matrix-free run's products computed by the page's pool: each block's
/// vectors go to the page, which shares them out (this worker takes a
/// share too) and sends the assembled products back.
pub(crate) struct PooledProducts<'a> {
    pub job: u32,
    pub pool: &'a dyn Pool,
    pub now_ms: &'a dyn Fn() -> f64,
}

impl Products for PooledProducts<'_> {
    fn lanes(&self) -> usize {
        self.pool.workers()
    }

    async fn apply(
        &mut self,
        model: &Model,
        trace: &Trace,
        x: &[Vec<f64>],
        position: Option<usize>,
        pass: PassOptions,
    ) -> Result<Block, EngineError> {
        let d = model.config.hidden;
        self.pool
            .want_products(self.job, position, block_bytes(x), x.len(), d);
        loop {
            match self.pool.next().await {
                PoolWord::Rows(c) => {
                    let Some(share) = x.get(c.start..c.start + c.count) else {
                        return Err(EngineError::Backend(format!(
                            "the pool asked for products {}..{} of a block of {}",
                            c.start,
                            c.start + c.count,
                            x.len()
                        )));
                    };
                    let t = (self.now_ms)();
                    let ax = lanczos::product(model, trace, share, position, pass)?;
                    let ms = (self.now_ms)() - t;
                    self.pool.send_rows(self.job, c, block_bytes(&ax), ms);
                }
                PoolWord::Assembled(bytes) => {
                    let ax = block_of_bytes(&bytes, d)?;
                    if ax.len() != x.len() {
                        return Err(EngineError::Backend(format!(
                            "the pool's products are {} vectors, expected {}",
                            ax.len(),
                            x.len()
                        )));
                    }
                    return Ok(ax);
                }
            }
        }
    }
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
    let s = session_for(model, prompt, precision, session)?;
    let ax = progress::scoped(hook(&emit, job, Stage::Krylov), || {
        lanczos::product(model, &s.tr, &x, position, PassOptions::default())
    })?;
    Ok(block_bytes(&ax))
}
