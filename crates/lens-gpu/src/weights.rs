//! The model's weight matrices resident on the GPU in their stored form
//! (GGML blocks, f16/bf16/f32), uploaded once per model and decoded to f32
//! on the device (`shaders/dequant.wgsl`) each time a pass needs a layer:
//! a pass then moves no weights over the bus, and the resident copy is the
//! file's size (Gemma 3 270M's blocks: about 4.5 bits a weight), not f32's.

use crate::device::{Gpu, GpuBuf};
use crate::error::{GpuError, Result};
use crate::resident::{kernel_kind, Resident, ResidentSet};
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use lens_engine::forward::{matrix, matrix_rows};
use lens_engine::model::Model;
use lens_engine::weights::RawTensor;
use lens_engine::EngineError;

fn bad_blocks(what: String) -> GpuError {
    GpuError::Engine(EngineError::Gguf(what))
}

impl Gpu {
    /// `bytes` (a `rows × cols` matrix in `dtype`) on the GPU, or `None` for
    /// a format the kernel does not decode.
    fn keep(
        &self,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Option<Resident>> {
        let Some((kind, block, block_bytes)) = kernel_kind(dtype) else {
            return Ok(None);
        };
        if !cols.is_multiple_of(block) || bytes.len() != rows * (cols / block) * block_bytes {
            return Err(bad_blocks(format!(
                "{dtype:?} data of {} bytes is not a {rows}×{cols} matrix of {block}-wide blocks",
                bytes.len()
            )));
        }
        // Storage buffers are read as u32 words: pad to a multiple of 4.
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        let raw = self.upload_bytes(&padded)?;
        Ok(Some(Resident {
            raw,
            kind,
            rows,
            cols,
            row_bytes: (cols / block) * block_bytes,
        }))
    }

    /// Decodes a resident matrix into a fresh f32 buffer `[rows, cols]`.
    fn decode(&self, r: &Resident) -> Result<GpuBuf> {
        let total = r.rows * r.cols;
        // Every element is written by the decoder.
        let out = self.uninit(total)?;
        let u = |v: usize| {
            u32::try_from(v).map_err(|_| GpuError::TooLarge {
                bytes: v as u64,
                limit: u32::MAX as u64,
            })
        };
        let params = [u(total)?, u(r.cols)?, u(r.row_bytes)?, r.kind];
        // With shader-f16 the blocks are bound twice, as u32 words and as
        // f16 (the uniform is binding 2 either way).
        let storage: &[&GpuBuf] = if self.adapter().shader_f16 {
            &[&out, &r.raw, &r.raw]
        } else {
            &[&out, &r.raw]
        };
        self.dispatch(&self.dequant, storage, &params, self.grid(total));
        Ok(out)
    }

    /// Decodes a `rows × cols` matrix stored as `dtype` (GGML blocks, f16,
    /// bf16 or f32 little-endian bytes) on the GPU.
    pub fn dequantize(
        &self,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<GpuBuf> {
        let r = self
            .keep(dtype, rows, cols, bytes)?
            .ok_or_else(|| bad_blocks(format!("the GPU does not decode {dtype:?} blocks")))?;
        self.decode(&r)
    }

    /// The resident form of `name`, made on first use.
    fn resident(&self, model: &Model, name: &str) -> Result<Resident> {
        let as_f32 = |gpu: &Gpu| -> Result<Resident> {
            // A format the kernel lacks: decode once here.
            let w = matrix(model, name, DType::F32)?;
            let (rows, cols) = w.dims2()?;
            let vals = w.flatten_all()?.to_vec1::<f32>()?;
            let r = gpu.keep(GgmlDType::F32, rows, cols, bytemuck::cast_slice(&vals))?;
            r.ok_or_else(|| bad_blocks("f32 is always decodable".into()))
        };
        let order = matrix_rows(model, name);
        let raw = model.weights.raw(name)?;
        let (dtype, shape, bytes): (GgmlDType, &[usize], Vec<u8>) = match raw {
            RawTensor::Ggml {
                dtype,
                shape,
                bytes,
            } => {
                let bytes = match &order {
                    // Rows are whole blocks: reorder them as stored.
                    Some(order) if shape.len() == 2 && order.len() == shape[0] => {
                        let row = bytes.len() / shape[0];
                        order
                            .iter()
                            .flat_map(|&r| &bytes[r * row..(r + 1) * row])
                            .copied()
                            .collect()
                    }
                    Some(_) => return as_f32(self),
                    None => bytes.to_vec(),
                };
                (dtype, shape, bytes)
            }
            RawTensor::Dense(_) if order.is_some() => return as_f32(self),
            RawTensor::Dense(t) => {
                let flat = t.flatten_all()?;
                let bytes = match t.dtype() {
                    DType::F32 => bytemuck::cast_slice(&flat.to_vec1::<f32>()?).to_vec(),
                    DType::F16 => flat
                        .to_vec1::<half::f16>()?
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                    DType::BF16 => flat
                        .to_vec1::<half::bf16>()?
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                    _ => return as_f32(self),
                };
                let dtype = match t.dtype() {
                    DType::F32 => GgmlDType::F32,
                    DType::F16 => GgmlDType::F16,
                    _ => GgmlDType::BF16,
                };
                (dtype, t.dims(), bytes)
            }
        };
        let &[rows, cols] = shape else {
            return Err(bad_blocks(format!(
                "`{name}` has shape {shape:?}, not a matrix"
            )));
        };
        match self.keep(dtype, rows, cols, &bytes)? {
            Some(r) => Ok(r),
            None => as_f32(self),
        }
    }

    /// The weight matrix `name` of `model` in a fresh f32 buffer, decoded on
    /// the GPU from its resident copy (uploaded on first use; a new model
    /// drops the previous one's).
    pub fn resident_weight(&self, model: &Model, name: &str) -> Result<GpuBuf> {
        let store = model.weights.id();
        {
            let mut set = self.resident.borrow_mut();
            if set.store != store {
                *set = ResidentSet {
                    store,
                    ..Default::default()
                };
            }
            if let Some(r) = set.matrices.get(name) {
                return self.decode(r);
            }
        }
        let r = self.resident(model, name)?;
        let out = self.decode(&r)?;
        let mut set = self.resident.borrow_mut();
        set.bytes += r.raw.buf.size();
        set.matrices.insert(name.to_string(), r);
        Ok(out)
    }

    /// Bytes of weights resident on the GPU.
    pub fn resident_bytes(&self) -> u64 {
        self.resident.borrow().bytes
    }
}
