//! Weights as the file stores them (quantized GGUF blocks or bf16/f16/f32
//! safetensors), dequantized to the working precision only when a pass needs
//! them. Names are canonical (GGUF style: `blk.3.attn_q.weight`) whatever the
//! source, so the model recipes read one vocabulary of names.

mod gguf;
mod safetensors;

pub use gguf::{GgufFile, MetadataValue};
pub use safetensors::load_safetensors;

use crate::error::{candle_message, EngineError, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
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
            } => self.dequantize(name, *gd, &self.blob[*start..*start + *len], shape.clone())?,
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
                self.dequantize(name, *gd, bytes, vec![count, shape[1]])?
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

    fn dequantize(
        &self,
        name: &str,
        dtype: GgmlDType,
        bytes: &[u8],
        shape: Vec<usize>,
    ) -> Result<Tensor> {
        // candle reads the bytes as a slice of blocks (f16 and f32 fields): a
        // tensor at an offset that breaks their alignment (a malformed file's
        // offsets) is copied to an aligned place first, never read misaligned.
        let mut copy = Vec::new();
        let bytes = if bytes.as_ptr().align_offset(BLOCK_ALIGN) == 0 {
            bytes
        } else {
            copy.resize(bytes.len() + BLOCK_ALIGN, 0u8);
            let at = copy.as_ptr().align_offset(BLOCK_ALIGN);
            copy[at..at + bytes.len()].copy_from_slice(bytes);
            &copy[at..at + bytes.len()]
        };
        let q = qtensor_from_ggml(dtype, bytes, shape, &Device::Cpu).map_err(|e| {
            EngineError::Gguf(format!(
                "cannot decode tensor `{name}` ({dtype:?}): {}",
                candle_message(&e)
            ))
        })?;
        Ok(q.dequantize(&Device::Cpu)?)
    }
}

/// The alignment candle's block types need, with room to spare.
const BLOCK_ALIGN: usize = 16;

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
