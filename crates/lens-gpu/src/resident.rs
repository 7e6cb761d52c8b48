//! What the GPU keeps of a model's weights between passes (the matrices in
//! their stored blocks) and the decoder's source: what the device holds
//! (`device.rs`) and the decoding passes read (`weights.rs`).

use crate::record::GpuBuf;
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;

/// The kernel's code for a format (`kind` in dequant.wgsl), its block size
/// in elements and in bytes; `None` for formats it does not decode (those
/// are decoded on the host once and kept as f32).
pub(crate) fn kernel_kind(dtype: GgmlDType) -> Option<(u32, usize, usize)> {
    Some(match dtype {
        GgmlDType::F32 => (0, 1, 4),
        GgmlDType::F16 => (1, 1, 2),
        GgmlDType::BF16 => (2, 1, 2),
        GgmlDType::Q4_0 => (3, 32, 18),
        GgmlDType::Q4_1 => (4, 32, 20),
        GgmlDType::Q5_0 => (5, 32, 22),
        GgmlDType::Q5_1 => (6, 32, 24),
        GgmlDType::Q8_0 => (7, 32, 34),
        GgmlDType::Q4K => (8, 256, 144),
        GgmlDType::Q5K => (9, 256, 176),
        GgmlDType::Q6K => (10, 256, 210),
        _ => return None,
    })
}

/// One matrix kept on the GPU as stored.
pub(crate) struct Resident {
    pub(crate) raw: GpuBuf,
    pub(crate) kind: u32,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_bytes: usize,
}

/// The resident weights of the model the passes last asked for.
#[derive(Default)]
pub(crate) struct ResidentSet {
    pub(crate) store: u64,
    pub(crate) matrices: HashMap<String, Resident>,
    pub(crate) bytes: u64,
}

/// `f16_at` in dequant.wgsl as it reads without `shader-f16`: two bytes
/// unpacked through `unpack2x16float`.
const F16_UNPACKED: &str = "fn f16_at(i: u32) -> f32 {
    return unpack2x16float(u16_at(i)).x;
}";

/// The same with `shader-f16`: the blocks bound a second time as f16
/// (binding 3; both bindings read-only), each field read as itself. Every
/// f16 field of a GGUF block (and every element of a dense f16 matrix)
/// starts at an even byte.
const F16_NATIVE: &str = "@group(0) @binding(3) var<storage, read> h: array<f16>;

fn f16_at(i: u32) -> f32 {
    return f32(h[i >> 1u]);
}";

/// The GGUF decoder's source, reading f16 fields natively when `f16`.
/// Both decode to the same bits: an f16 widens to f32 exactly.
pub(crate) fn dequant_source(f16: bool) -> String {
    let src = include_str!("shaders/dequant.wgsl");
    if f16 {
        format!("enable f16;\n{}", src.replace(F16_UNPACKED, F16_NATIVE))
    } else {
        src.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_f16_decoder_replaces_the_unpacking() {
        let src = super::dequant_source(true);
        assert!(src.contains(super::F16_NATIVE));
        assert!(!src.contains("unpack2x16float"));
    }
}
