//! Weights as the file stores them (quantized GGUF blocks or bf16/f16/f32
//! safetensors), dequantized to the working precision only when a pass needs
//! them. Names are canonical (GGUF style: `blk.3.attn_q.weight`) whatever the
//! source, so the model recipes read one vocabulary of names.

mod gguf;
mod safetensors;

pub use gguf::{GgufFile, MetadataValue};
pub use safetensors::load_safetensors;

use crate::error::{EngineError, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// One stored tensor.
#[derive(Debug, Clone)]
pub enum StoredTensor {
    /// GGML blocks at `start..start+len` of the file bytes; `shape` is
    /// row-major (`[rows, cols]` for a matrix).
    Ggml {
        dtype: GgmlDType,
        shape: Vec<usize>,
        start: usize,
        len: usize,
    },
    /// A dense tensor in its file dtype (bf16, f16 or f32).
    Dense(Tensor),
}

impl StoredTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            StoredTensor::Ggml { shape, .. } => shape,
            StoredTensor::Dense(t) => t.dims(),
        }
    }

    /// The storage type, for display.
    pub fn dtype_name(&self) -> String {
        match self {
            StoredTensor::Ggml { dtype, .. } => format!("{dtype:?}"),
            StoredTensor::Dense(t) => format!("{:?}", t.dtype()),
        }
    }
}

/// All tensors of a model, compact.
#[derive(Debug, Clone, Default)]
pub struct WeightStore {
    tensors: HashMap<String, StoredTensor>,
    /// The GGUF file's bytes (empty for safetensors models).
    blob: Arc<[u8]>,
    /// Unique per loaded store (clones share it), so that a backend that
    /// keeps weights resident knows when the model changed.
    id: u64,
}

/// A stored tensor as the file has it, for a backend that decodes it
/// itself (the GPU keeps the compact form resident).
#[derive(Debug, Clone, Copy)]
pub enum RawTensor<'a> {
    /// GGML blocks, rows of whole blocks.
    Ggml {
        dtype: GgmlDType,
        shape: &'a [usize],
        bytes: &'a [u8],
    },
    Dense(&'a Tensor),
}

impl WeightStore {
    pub fn new(tensors: HashMap<String, StoredTensor>, blob: Arc<[u8]>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            tensors,
            blob,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// This store's identity (0 for an empty default store).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stored form of `name`, undecoded.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        Ok(match self.stored(name)? {
            StoredTensor::Ggml {
                dtype,
                shape,
                start,
                len,
            } => RawTensor::Ggml {
                dtype: *dtype,
                shape,
                bytes: self.blob.get(*start..*start + *len).ok_or_else(|| {
                    EngineError::Gguf(format!("tensor `{name}` lies past the file's end"))
                })?,
            },
            StoredTensor::Dense(t) => RawTensor::Dense(t),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn stored(&self, name: &str) -> Result<&StoredTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| EngineError::MissingTensor(name.to_string()))
    }

    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(self.stored(name)?.shape())
    }

    /// Bytes held in memory by the weights (the compact form).
    pub fn stored_bytes(&self) -> usize {
        let dense: usize = self
            .tensors
            .values()
            .map(|t| match t {
                StoredTensor::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
                StoredTensor::Ggml { .. } => 0,
            })
            .sum();
        dense + self.blob.len()
    }

    /// Checks that `name` exists with exactly `expected` shape.
    pub fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let got = self.shape(name)?;
        if got != expected {
            return Err(EngineError::ShapeMismatch {
                name: name.to_string(),
                got: got.to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    /// The whole tensor, dequantized to `dtype` (F32 or F64), checked finite.
    pub fn get(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = match self.stored(name)? {
            StoredTensor::Ggml {
                dtype: gd,
                shape,
                start,
                len,
            } => {
                let bytes = &self.blob[*start..*start + *len];
                return decode(name, *gd, bytes, shape.clone(), dtype);
            }
            StoredTensor::Dense(t) => t.clone(),
        };
        finish(name, t, dtype)
    }

    /// Rows `start..start+count` of a 2-D tensor, dequantized to `dtype`.
    pub fn rows(&self, name: &str, start: usize, count: usize, dtype: DType) -> Result<Tensor> {
        let shape = self.shape(name)?;
        if shape.len() != 2 || start + count > shape[0] {
            return Err(EngineError::ShapeMismatch {
                name: name.to_string(),
                got: shape.to_vec(),
                expected: vec![start + count, shape.get(1).copied().unwrap_or(0)],
            });
        }
        let t = match self.stored(name)? {
            StoredTensor::Ggml {
                dtype: gd,
                shape,
                start: s0,
                len,
            } => {
                let row_bytes = len / shape[0];
                let a = s0 + start * row_bytes;
                let bytes = &self.blob[a..a + count * row_bytes];
                return decode(name, *gd, bytes, vec![count, shape[1]], dtype);
            }
            StoredTensor::Dense(t) => t.narrow(0, start, count)?,
        };
        finish(name, t, dtype)
    }

    /// The rows `ids` of a 2-D tensor (an embedding lookup), as `[ids.len(), cols]`.
    pub fn select_rows(&self, name: &str, ids: &[u32], dtype: DType) -> Result<Tensor> {
        let vocab = self.shape(name)?.first().copied().unwrap_or(0);
        let mut rows = Vec::with_capacity(ids.len());
        for &id in ids {
            if id as usize >= vocab {
                return Err(EngineError::TokenOutOfRange { id, vocab });
            }
            rows.push(self.rows(name, id as usize, 1, dtype)?);
        }
        Ok(Tensor::cat(&rows, 0)?)
    }
}

/// The alignment candle's block types need, with room to spare.
const BLOCK_ALIGN: usize = 16;

/// GGML blocks decoded into `dtype` (F32 or F64) values, NaN and infinity
/// rejected. The blocks are read where they lie (copied first only when a
/// malformed file's offset breaks their alignment) and decoded a few at a
/// time into a buffer that stays in cache, checked and widened from there:
/// one pass over the output instead of candle's copy of the blocks, f32
/// tensor, cast and sum. Gemma 3 270M's layer matrices to f64: 0.18 s →
/// 0.10 s; its frozen forward 0.27 → 0.19 s, its 262144 logits 0.27 →
/// 0.14 s (one thread, release build).
fn decode(
    name: &str,
    dtype: GgmlDType,
    bytes: &[u8],
    shape: Vec<usize>,
    to: DType,
) -> Result<Tensor> {
    use candle_core::quantized::k_quants::*;
    let bad =
        |m: String| EngineError::Gguf(format!("cannot decode tensor `{name}` ({dtype:?}): {m}"));
    let n: usize = shape.iter().product();
    if !n.is_multiple_of(dtype.block_size())
        || bytes.len() != n / dtype.block_size() * dtype.type_size()
    {
        return Err(bad(format!("{} bytes for {n} values", bytes.len())));
    }
    let mut copy = Vec::new();
    let bytes = if bytes.as_ptr().align_offset(BLOCK_ALIGN) == 0 {
        bytes
    } else {
        copy.resize(bytes.len() + BLOCK_ALIGN, 0u8);
        let at = copy.as_ptr().align_offset(BLOCK_ALIGN);
        copy[at..at + bytes.len()].copy_from_slice(bytes);
        &copy[at..at + bytes.len()]
    };
    let values = match dtype {
        GgmlDType::F32 => decode_as::<f32>(bytes, n, to),
        GgmlDType::F16 => decode_as::<half::f16>(bytes, n, to),
        GgmlDType::BF16 => decode_as::<half::bf16>(bytes, n, to),
        GgmlDType::Q4_0 => decode_as::<BlockQ4_0>(bytes, n, to),
        GgmlDType::Q4_1 => decode_as::<BlockQ4_1>(bytes, n, to),
        GgmlDType::Q5_0 => decode_as::<BlockQ5_0>(bytes, n, to),
        GgmlDType::Q5_1 => decode_as::<BlockQ5_1>(bytes, n, to),
        GgmlDType::Q8_0 => decode_as::<BlockQ8_0>(bytes, n, to),
        GgmlDType::Q2K => decode_as::<BlockQ2K>(bytes, n, to),
        GgmlDType::Q3K => decode_as::<BlockQ3K>(bytes, n, to),
        GgmlDType::Q4K => decode_as::<BlockQ4K>(bytes, n, to),
        GgmlDType::Q5K => decode_as::<BlockQ5K>(bytes, n, to),
        GgmlDType::Q6K => decode_as::<BlockQ6K>(bytes, n, to),
        other => return Err(bad(format!("{other:?} is not supported"))),
    };
    match values {
        Some(Decoded::F32(v)) => Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(to)?),
        Some(Decoded::F64(v)) => Ok(Tensor::from_vec(v, shape, &Device::Cpu)?),
        None => Err(EngineError::NonFinite(name.to_string())),
    }
}

enum Decoded {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Values decoded per step: a buffer of this many f32 stays in cache.
const DECODE_CHUNK: usize = 8192;

/// `n` values from the blocks of type `B` in `bytes` (aligned, sized by
/// [`decode`]); `None` when one is NaN or infinite.
fn decode_as<B: candle_core::quantized::GgmlType>(
    bytes: &[u8],
    n: usize,
    to: DType,
) -> Option<Decoded> {
    let count = n / B::BLCK_SIZE;
    // SAFETY: `decode` checked that `bytes` holds exactly `count` blocks of
    // `B` (GGML's `type_size` is the block's size) and aligned them to
    // BLOCK_ALIGN, which is at least `B`'s alignment (f16 / f32 fields);
    // every bit pattern is a valid block (integers and floats).
    debug_assert!(std::mem::align_of::<B>() <= BLOCK_ALIGN);
    debug_assert_eq!(bytes.len(), count * std::mem::size_of::<B>());
    let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, count) };
    let per = (DECODE_CHUNK / B::BLCK_SIZE).max(1);
    let mut buf = vec![0f32; per * B::BLCK_SIZE];
    let mut finite = true;
    let mut step = |chunk: &[B], emit: &mut dyn FnMut(&[f32])| {
        let out = &mut buf[..chunk.len() * B::BLCK_SIZE];
        B::to_float(chunk, out);
        // `v · 0` is 0 for finite values, NaN otherwise.
        // No short cut: the test vectorizes.
        finite &= out.iter().fold(true, |ok, v| ok & v.is_finite());
        emit(out);
    };
    let values = if to == DType::F64 {
        let mut v = Vec::with_capacity(n);
        for chunk in blocks.chunks(per) {
            step(chunk, &mut |out| {
                v.extend(out.iter().map(|&x| f64::from(x)))
            });
        }
        Decoded::F64(v)
    } else {
        let mut v = Vec::with_capacity(n);
        for chunk in blocks.chunks(per) {
            step(chunk, &mut |out| v.extend_from_slice(out));
        }
        Decoded::F32(v)
    };
    finite.then_some(values)
}

/// Casts to the working dtype and rejects NaN/inf.
fn finish(name: &str, t: Tensor, dtype: DType) -> Result<Tensor> {
    let t = t.to_dtype(dtype)?;
    if !finite(&t)? {
        return Err(EngineError::NonFinite(name.to_string()));
    }
    Ok(t)
}

/// No NaN and no infinity in `t`. A finite sum proves it without a copy;
/// a non-finite one may be large finite values overflowing, so then `t · 0`
/// (0 for finite values, NaN otherwise) decides.
pub(crate) fn finite(t: &Tensor) -> Result<bool> {
    let sum_finite = |t: &Tensor| -> Result<bool> {
        Ok(t.sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            .is_finite())
    };
    Ok(sum_finite(t)? || sum_finite(&(t * 0.0)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;

    /// Every GGML type decodes to exactly candle's dequantized values, in
    /// f32 and f64, whole and by rows; a NaN is refused.
    #[test]
    fn blocks_decode_to_candles_values() {
        let (rows, cols) = (6, 512);
        let src = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::BF16,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&src, dtype).unwrap();
            let expected = q.dequantize(&Device::Cpu).unwrap();
            let bytes = q.data().unwrap().into_owned();
            let mut tensors = HashMap::new();
            tensors.insert(
                "w".to_string(),
                StoredTensor::Ggml {
                    dtype,
                    shape: vec![rows, cols],
                    start: 0,
                    len: bytes.len(),
                },
            );
            let store = WeightStore::new(tensors, Arc::from(bytes));
            for to in [DType::F32, DType::F64] {
                let got = store.get("w", to).unwrap();
                let want = expected.to_dtype(to).unwrap();
                let diff = (got - &want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert_eq!(diff, 0.0, "{dtype:?} → {to:?}");
                let two = store.rows("w", 2, 2, to).unwrap();
                assert_eq!(
                    two.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap(),
                    want.narrow(0, 2, 2)
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_vec2::<f64>()
                        .unwrap(),
                    "{dtype:?} rows"
                );
            }
        }
        let mut nan = vec![1f32; 64];
        nan[17] = f32::NAN;
        let bytes: Vec<u8> = nan.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut tensors = HashMap::new();
        tensors.insert(
            "w".to_string(),
            StoredTensor::Ggml {
                dtype: GgmlDType::F32,
                shape: vec![2, 32],
                start: 0,
                len: bytes.len(),
            },
        );
        let store = WeightStore::new(tensors, Arc::from(bytes));
        assert!(matches!(
            store.get("w", DType::F64),
            Err(EngineError::NonFinite(_))
        ));
    }
}
