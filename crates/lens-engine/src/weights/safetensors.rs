//! Hugging Face safetensors: tensors stay in their file dtype (bf16/f16/f32).

use crate::error::{candle_message, EngineError, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// Reads every tensor of one or more safetensors shards, by their HF names.
pub fn load_safetensors(shards: &[&[u8]]) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for bytes in shards {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| EngineError::Safetensors(candle_message(&e)))?;
        for (name, t) in tensors {
            match t.dtype() {
                DType::BF16 | DType::F16 | DType::F32 | DType::F64 => {}
                other => {
                    return Err(EngineError::UnsupportedDType {
                        name,
                        dtype: format!("{other:?}"),
                    })
                }
            }
            out.insert(name, t);
        }
    }
    Ok(out)
}
