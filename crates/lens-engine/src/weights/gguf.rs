//! GGUF: candle's header reader (bounded against absurd counts), plus our own
//! checks that every tensor's data lies inside the file before anything is
//! allocated for it.

use super::{StoredTensor, WeightStore};
use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file;
pub use candle_core::quantized::gguf_file::Value as MetadataValue;
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

/// A parsed GGUF file: metadata and the (still compact) tensors.
pub struct GgufFile {
    pub metadata: HashMap<String, MetadataValue>,
    pub weights: WeightStore,
}

/// Largest element count we accept for one tensor (2^36: far above any model
/// this tool opens, far below an overflow).
const MAX_TENSOR_ELEMS: usize = 1 << 36;

impl GgufFile {
    pub fn parse(bytes: Arc<[u8]>) -> Result<Self> {
        let mut cursor = Cursor::new(&bytes[..]);
        let content = gguf_file::Content::read(&mut cursor).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("failed to fill whole buffer") {
                EngineError::Gguf("the file is truncated (header ends early)".into())
            } else {
                EngineError::Gguf(msg)
            }
        })?;
        let data_start = content.tensor_data_offset as usize;
        let mut tensors = HashMap::new();
        for (name, info) in content.tensor_infos {
            let shape = info.shape.dims().to_vec();
            let elems = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= MAX_TENSOR_ELEMS)
                .ok_or_else(|| {
                    EngineError::Gguf(format!("tensor `{name}` has absurd dimensions {shape:?}"))
                })?;
            let block = info.ggml_dtype.block_size();
            let last = shape.last().copied().unwrap_or(1);
            if elems % block != 0 || last % block != 0 {
                return Err(EngineError::Gguf(format!(
                    "tensor `{name}` ({:?}) has {last} columns, not a multiple of the block size {block}",
                    info.ggml_dtype
                )));
            }
            let len = elems / block * info.ggml_dtype.type_size();
            let start = data_start
                .checked_add(info.offset as usize)
                .filter(|s| s.checked_add(len).is_some_and(|end| end <= bytes.len()))
                .ok_or_else(|| {
                    EngineError::Gguf(format!(
                        "tensor `{name}` needs {len} bytes at offset {}, past the end of the file ({} bytes)",
                        info.offset,
                        bytes.len()
                    ))
                })?;
            tensors.insert(
                name,
                StoredTensor::Ggml {
                    dtype: info.ggml_dtype,
                    shape,
                    start,
                    len,
                },
            );
        }
        Ok(Self {
            metadata: content.metadata,
            weights: WeightStore::new(tensors, bytes),
        })
    }

    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        match self.metadata.get(key) {
            Some(MetadataValue::String(s)) => Ok(s),
            Some(_) => Err(EngineError::Gguf(format!("metadata `{key}` is not a string"))),
            None => Err(EngineError::Gguf(format!("metadata `{key}` is missing"))),
        }
    }

    /// An unsigned integer (any integer type) from the metadata.
    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.metadata.get(key) else {
            return Ok(None);
        };
        let n = match v {
            MetadataValue::U8(x) => Some(*x as u64),
            MetadataValue::U16(x) => Some(*x as u64),
            MetadataValue::U32(x) => Some(*x as u64),
            MetadataValue::U64(x) => Some(*x),
            MetadataValue::I8(x) => u64::try_from(*x).ok(),
            MetadataValue::I16(x) => u64::try_from(*x).ok(),
            MetadataValue::I32(x) => u64::try_from(*x).ok(),
            MetadataValue::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(|n| Some(n as usize))
            .ok_or_else(|| EngineError::Gguf(format!("metadata `{key}` is not a non-negative integer")))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| EngineError::Gguf(format!("metadata `{key}` is missing")))
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(MetadataValue::F32(x)) => Ok(Some(*x as f64)),
            Some(MetadataValue::F64(x)) => Ok(Some(*x)),
            Some(_) => Err(EngineError::Gguf(format!("metadata `{key}` is not a float"))),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Option<bool> {
        match self.metadata.get(key) {
            Some(MetadataValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}
