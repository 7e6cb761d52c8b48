//! [`Gpu`] as the engine's [`Backend`]: f32 buffers, the WGSL kernels.

use crate::device::{Gpu, GpuBuf};
#[cfg(target_arch = "wasm32")]
use crate::error::GpuError;
use candle_core::{DType, Tensor};
use lens_engine::backend::{
    check_elementwise, check_gemm, Backend, Batch, MatView, Store, Strided,
};
use lens_engine::model::Model;
use lens_engine::{EngineError, Result};

fn bad(what: String) -> EngineError {
    EngineError::Backend(what)
}

/// Element offsets and strides go to the kernels as u32.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad(format!("{what} {v} is past the GPU's 32-bit indices")))
}

impl Backend for Gpu {
    type Buf = GpuBuf;

    fn dtype(&self) -> DType {
        DType::F32
    }

    fn zeros(&self, len: usize) -> Result<GpuBuf> {
        Ok(Gpu::zeros(self, len)?)
    }

    fn len(&self, buf: &GpuBuf) -> usize {
        buf.len
    }

    fn upload(&self, t: &Tensor) -> Result<GpuBuf> {
        let data = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(self.upload_f32(&data)?)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn download(&self, buf: &GpuBuf, offset: usize, shape: &[usize]) -> Result<Tensor> {
        let len = shape.iter().product();
        let data = crate::block_on(self.read(buf, offset, len))?;
        Ok(Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)
    }

    #[cfg(target_arch = "wasm32")]
    fn download(&self, _: &GpuBuf, _: usize, _: &[usize]) -> Result<Tensor> {
        Err(GpuError::Readback(
            "a browser reads the GPU back asynchronously: use Backend::read".into(),
        )
        .into())
    }

    async fn read(&self, buf: &GpuBuf, offset: usize, shape: &[usize]) -> Result<Tensor> {
        let len = shape.iter().product();
        let data = Gpu::read(self, buf, offset, len).await?;
        Ok(Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)
    }

    async fn settle(&self) -> Result<()> {
        Ok(Gpu::settle(self).await?)
    }

    /// Every buffer of a pass fits one binding.
    fn max_buffer_bytes(&self) -> usize {
        usize::try_from(self.adapter().max_binding).unwrap_or(usize::MAX)
    }

    fn gemm(
        &self,
        dst: &mut GpuBuf,
        dv: MatView,
        a: &GpuBuf,
        av: MatView,
        b: &GpuBuf,
        bv: MatView,
        batch: Batch,
        accumulate: bool,
    ) -> Result<()> {
        check_gemm(&dv, &av, &bv, &batch, [dst.len, a.len, b.len])?;
        if dv.rows == 0 || dv.cols == 0 || batch.count == 0 {
            return Ok(());
        }
        let sum = batch.dst == 0 && batch.count > 1;
        let u = |v: usize| u32_of(v, "gemm index");
        let tiles = (u(dv.cols.div_ceil(64))?, u(dv.rows.div_ceil(64))?);
        let max = self.max_groups as usize;
        if tiles.0 as usize > max || tiles.1 as usize > max {
            return Err(bad(format!(
                "gemm of {}×{} has too many tiles",
                dv.rows, dv.cols
            )));
        }
        // Independent products go along z, at most `max` per dispatch.
        let (per, dispatches) = if sum {
            (1, 1)
        } else {
            (max, batch.count.div_ceil(max))
        };
        for q in 0..dispatches {
            let z0 = q * per;
            let zn = if sum { 1 } else { per.min(batch.count - z0) };
            let params = [
                u(dv.rows)?,
                u(dv.cols)?,
                u(av.cols)?,
                u(batch.count)?,
                u(dv.offset)?,
                u(dv.rs)?,
                u(dv.cs)?,
                u(batch.dst)?,
                u(av.offset)?,
                u(av.rs)?,
                u(av.cs)?,
                u(batch.a)?,
                u(bv.offset)?,
                u(bv.rs)?,
                u(bv.cs)?,
                u(batch.b)?,
                accumulate as u32,
                sum as u32,
                u(z0)?,
                0,
            ];
            self.dispatch(
                &self.gemm,
                &[&dst.buf, &a.buf, &b.buf],
                &params,
                (tiles.0, tiles.1, zn as u32),
            );
        }
        Ok(())
    }

    fn elementwise(
        &self,
        store: Store,
        dst: &mut GpuBuf,
        dst_offset: usize,
        dims: [usize; 3],
        a: (&GpuBuf, Strided),
        b: Option<(&GpuBuf, Strided)>,
    ) -> Result<()> {
        let total: usize = dims.iter().product();
        if total == 0 {
            return Ok(());
        }
        let reads: Vec<(usize, Strided)> = std::iter::once(a)
            .chain(b)
            .map(|(buf, v)| (buf.len, v))
            .collect();
        check_elementwise(dst.len, dst_offset, dims, &reads)?;
        let u = |v: usize| u32_of(v, "elementwise index");
        let (bb, bs) = b.unwrap_or(a);
        let params = [
            u(dims[0])?,
            u(dims[1])?,
            u(dims[2])?,
            u(total)?,
            u(dst_offset)?,
            u(a.1.offset)?,
            u(bs.offset)?,
            match store {
                Store::Set => 0,
                Store::Add => 1,
                Store::Mul => 2,
            },
            u(a.1.strides[0])?,
            u(a.1.strides[1])?,
            u(a.1.strides[2])?,
            b.is_some() as u32,
            u(bs.strides[0])?,
            u(bs.strides[1])?,
            u(bs.strides[2])?,
            0,
        ];
        self.dispatch(
            &self.elementwise,
            &[&dst.buf, &a.0.buf, &bb.buf],
            &params,
            self.grid(total),
        );
        Ok(())
    }

    fn weight(&self, model: &Model, name: &str) -> Result<GpuBuf> {
        Ok(self.resident_weight(model, name)?)
    }

    fn fill(&self, dst: &mut GpuBuf, offset: usize, len: usize, value: f64) -> Result<()> {
        if offset + len > dst.len {
            return Err(bad(format!("fill of {len} at {offset} past buffer")));
        }
        if len == 0 {
            return Ok(());
        }
        if value == 0.0 {
            self.record(|enc| {
                enc.clear_buffer(&dst.buf, (offset * 4) as u64, Some((len * 4) as u64))
            });
            return Ok(());
        }
        let params = [
            u32_of(len, "fill length")?,
            u32_of(offset, "fill offset")?,
            (value as f32).to_bits(),
            0,
        ];
        self.dispatch(&self.fill, &[&dst.buf], &params, self.grid(len));
        Ok(())
    }
}
