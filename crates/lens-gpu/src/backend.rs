//! [`Gpu`] as the engine's [`Backend`]: f32 buffers, the WGSL kernels.

use crate::device::{Gpu, GpuBuf};
#[cfg(target_arch = "wasm32")]
use crate::error::GpuError;
use crate::gemm::Variant;
use candle_core::{DType, Tensor};
use lens_engine::backend::{bad, Backend, Batch, Epilogue, MatView, Store, Strided};
use lens_engine::model::Model;
use lens_engine::Result;

/// Element offsets and strides go to the kernels as u32.
fn u32_of(v: usize, what: &'static str) -> Result<u32> {
    Ok(crate::error::u32_index(v, what)?)
}

impl Gpu {
    /// One product (checked), in the variant tuned for its shape: the
    /// independent products of a batch go along z, at most the adapter's
    /// limit per dispatch.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        dst: &GpuBuf,
        dv: MatView,
        (a, av): (&GpuBuf, MatView),
        (b, bv): (&GpuBuf, MatView),
        batch: Batch,
        accumulate: bool,
        ep: Epilogue<'_, GpuBuf>,
    ) -> Result<()> {
        self.product_with(
            self.variant_for(dv.rows),
            dst,
            dv,
            (a, av),
            (b, bv),
            batch,
            accumulate,
            ep,
        )
    }

    /// As [`Gpu::product`] in variant `v` (the tuning times each).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn product_with(
        &self,
        v: Variant,
        dst: &GpuBuf,
        dv: MatView,
        (a, av): (&GpuBuf, MatView),
        (b, bv): (&GpuBuf, MatView),
        batch: Batch,
        accumulate: bool,
        ep: Epilogue<'_, GpuBuf>,
    ) -> Result<()> {
        if dv.rows == 0 || dv.cols == 0 || batch.count == 0 {
            return Ok(());
        }
        let sum = batch.dst == 0 && batch.count > 1;
        let u = |v: usize| u32_of(v, "gemm index");
        let (tile_m, tile_n) = v.tile();
        let tiles = (u(dv.cols.div_ceil(tile_n))?, u(dv.rows.div_ceil(tile_m))?);
        let max = self.max_groups as usize;
        if tiles.0 as usize > max || tiles.1 as usize > max {
            return Err(bad(format!(
                "gemm of {}×{} has too many tiles",
                dv.rows, dv.cols
            )));
        }
        let (per, dispatches) = if sum {
            (1, 1)
        } else {
            (max, batch.count.div_ceil(max))
        };
        // Unused epilogue bindings see `a` (read-only, as they are).
        let (s, (s_off, s_bs)) = ep.scale.map_or((a, (0, 0)), |(s, o, st)| (s, (o, st)));
        let (c, cv, c_bs) = ep
            .addend
            .map_or((a, MatView::dense(0, 0, 0), 0), |(c, v, st)| (c, v, st));
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
                ep.scale.is_some() as u32,
                u(s_off)?,
                u(s_bs)?,
                ep.addend.is_some() as u32,
                u(cv.offset)?,
                u(cv.rs)?,
                u(cv.cs)?,
                u(c_bs)?,
                0,
            ];
            self.dispatch(
                self.gemm.get(v),
                &[dst, a, b, s, c],
                &params,
                (tiles.0, tiles.1, zn as u32),
            );
        }
        Ok(())
    }
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

    fn gemm_unchecked(
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
        self.product(dst, dv, (a, av), (b, bv), batch, accumulate, Epilogue::NONE)
    }

    /// The scale and the addend run inside the product: no dispatch and no
    /// buffer of their own (`scratch` is never used).
    fn gemm_fused_unchecked(
        &self,
        dst: &mut GpuBuf,
        dv: MatView,
        a: &GpuBuf,
        av: MatView,
        b: &GpuBuf,
        bv: MatView,
        batch: Batch,
        ep: Epilogue<'_, GpuBuf>,
        _scratch: &mut Option<GpuBuf>,
    ) -> Result<()> {
        self.product(dst, dv, (a, av), (b, bv), batch, false, ep)
    }

    fn elementwise_unchecked(
        &self,
        store: Store,
        dst: &mut GpuBuf,
        dst_offset: usize,
        dims: [usize; 3],
        a: (&GpuBuf, Strided),
        b: Option<(&GpuBuf, Strided)>,
    ) -> Result<()> {
        let total: usize = dims.iter().product();
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
            &[dst, a.0, bb],
            &params,
            self.grid(total),
        );
        Ok(())
    }

    fn weight(&self, model: &Model, name: &str) -> Result<GpuBuf> {
        Ok(self.resident_weight(model, name)?)
    }

    fn fill_unchecked(
        &self,
        dst: &mut GpuBuf,
        offset: usize,
        len: usize,
        value: f64,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // A kernel, not a clear command: the compute pass stays open.
        Ok(self.fill_value(dst, offset, len, value as f32)?)
    }
}
