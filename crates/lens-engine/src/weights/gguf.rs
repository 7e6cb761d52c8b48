//! GGUF: candle's header reader (bounded against absurd counts), plus our own
//! checks that every tensor's data lies inside the file before anything is
//! allocated for it.

use super::{StoredTensor, WeightStore};
use crate::error::{candle_message, EngineError, Result};
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
#[cfg(target_pointer_width = "64")]
const MAX_TENSOR_ELEMS: usize = 1 << 36;
/// On 32-bit targets (wasm32) 2^28 elements, so that `elems * type_size`
/// (at most 8 bytes per element) cannot overflow a 32-bit usize.
#[cfg(not(target_pointer_width = "64"))]
const MAX_TENSOR_ELEMS: usize = 1 << 28;

impl GgufFile {
    pub fn parse(bytes: Arc<[u8]>) -> Result<Self> {
        if declares_zero_alignment(&bytes) {
            return Err(EngineError::Gguf("`general.alignment` is 0".into()));
        }
        let mut cursor = Cursor::new(&bytes[..]);
        let content = gguf_file::Content::read(&mut cursor).map_err(|e| {
            let msg = candle_message(&e);
            if msg.contains("failed to fill whole buffer") {
                EngineError::Gguf("the file is truncated (header ends early)".into())
            } else {
                EngineError::Gguf(msg)
            }
        })?;
        // Offsets are u64 in the file; on wasm32 a usize is 32 bits.
        let too_far = || EngineError::Gguf("tensor data offset does not fit in memory".into());
        let data_start = usize::try_from(content.tensor_data_offset).map_err(|_| too_far())?;
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
                .checked_add(usize::try_from(info.offset).map_err(|_| too_far())?)
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
            Some(_) => Err(EngineError::Gguf(format!(
                "metadata `{key}` is not a string"
            ))),
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
        n.and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                EngineError::Gguf(format!("metadata `{key}` is not a non-negative integer"))
            })
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
            Some(_) => Err(EngineError::Gguf(format!(
                "metadata `{key}` is not a float"
            ))),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Option<bool> {
        match self.metadata.get(key) {
            Some(MetadataValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}

/// Whether the header sets `general.alignment` (as candle reads it: an 8, 16
/// or 32-bit integer, last occurrence wins) to 0, which candle's reader
/// divides by. Walks the metadata only; a malformed header is left to candle.
fn declares_zero_alignment(bytes: &[u8]) -> bool {
    fn take<'a>(b: &'a [u8], pos: &mut usize, n: u64) -> Option<&'a [u8]> {
        let end = pos.checked_add(usize::try_from(n).ok()?)?;
        let s = b.get(*pos..end)?;
        *pos = end;
        Some(s)
    }
    fn int(b: &[u8], pos: &mut usize, n: u64) -> Option<u64> {
        let s = take(b, pos, n)?;
        Some(
            s.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    }
    // GGUF v1 writes lengths as u32, later versions as u64.
    fn len(b: &[u8], pos: &mut usize, v1: bool) -> Option<u64> {
        int(b, pos, if v1 { 4 } else { 8 })
    }
    fn skip(b: &[u8], pos: &mut usize, ty: u64, v1: bool, depth: usize) -> Option<()> {
        match ty {
            0 | 1 | 7 => take(b, pos, 1).map(drop),
            2 | 3 => take(b, pos, 2).map(drop),
            4..=6 => take(b, pos, 4).map(drop),
            10..=12 => take(b, pos, 8).map(drop),
            8 => {
                let n = len(b, pos, v1)?;
                take(b, pos, n).map(drop)
            }
            9 if depth < 4 => {
                let elem = int(b, pos, 4)?;
                let n = len(b, pos, v1)?;
                let size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    _ => 0,
                };
                if size > 0 {
                    return take(b, pos, n.checked_mul(size)?).map(drop);
                }
                for _ in 0..n {
                    skip(b, pos, elem, v1, depth + 1)?;
                }
                Some(())
            }
            _ => None,
        }
    }
    let walk = || -> Option<bool> {
        let pos = &mut 4; // after the magic
        let v1 = int(bytes, pos, 4)? == 1;
        let _tensor_count = len(bytes, pos, v1)?;
        let kv_count = len(bytes, pos, v1)?;
        let mut zero = false;
        for _ in 0..kv_count {
            let key_len = len(bytes, pos, v1)?;
            let key = take(bytes, pos, key_len)?;
            let ty = int(bytes, pos, 4)?;
            if key == b"general.alignment" && ty <= 5 {
                zero = int(bytes, pos, 1 << (ty / 2))? == 0;
            } else {
                zero &= key != b"general.alignment";
                skip(bytes, pos, ty, v1, 0)?;
            }
        }
        Some(zero)
    };
    walk().unwrap_or(false)
}
