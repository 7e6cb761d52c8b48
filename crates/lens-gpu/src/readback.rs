//! Results back from the GPU, and waiting for it: readback through pooled
//! staging buffers (one mapping for several ranges), settling after a
//! block, the time spent waiting counted.

use crate::clock;
use crate::device::{Gpu, GpuBuf};
use crate::error::{GpuError, Result};
use crate::record::Use;

impl Gpu {
    /// `len` values from `offset`, read back asynchronously.
    pub async fn read(&self, buf: &GpuBuf, offset: usize, len: usize) -> Result<Vec<f32>> {
        let mut parts = self.read_many(&[(buf, offset, len)]).await?;
        Ok(parts.pop().unwrap_or_default())
    }

    /// Several `(buffer, offset, len)` ranges read back through one staging
    /// buffer and one mapping (one round trip, not one per range).
    pub async fn read_many(&self, parts: &[(&GpuBuf, usize, usize)]) -> Result<Vec<Vec<f32>>> {
        for &(buf, offset, len) in parts {
            if offset + len > buf.len {
                return Err(GpuError::Readback(format!(
                    "{len} values at {offset} past a buffer of {}",
                    buf.len
                )));
            }
        }
        let total: usize = parts.iter().map(|p| p.2).sum();
        if total == 0 {
            return Ok(parts.iter().map(|_| Vec::new()).collect());
        }
        let (staging_id, staging, _) = self.rec.buffer((total * 4) as u64, Use::Staging);
        let mut at = 0;
        for &(buf, offset, len) in parts {
            if len > 0 {
                self.record(|enc| {
                    enc.copy_buffer_to_buffer(
                        &buf.buf,
                        (offset * 4) as u64,
                        &staging,
                        (at * 4) as u64,
                        (len * 4) as u64,
                    )
                });
            }
            at += len;
        }
        self.flush();
        let started = clock::now_ms();
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.rec
            .device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let mapped = rx
            .await
            .map_err(|_| GpuError::Readback("the device went away".into()))?;
        let waited = clock::now_ms() - started;
        self.rec.count(|w| {
            w.wait_ms += waited;
            w.bytes_read_back += (total * 4) as u64;
        });
        self.check()?;
        mapped.map_err(|e| GpuError::Readback(e.to_string()))?;
        let data = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        self.rec.give_staging(staging_id, staging);
        let mut out = Vec::with_capacity(parts.len());
        let mut at = 0;
        for &(_, _, len) in parts {
            out.push(data[at..at + len].to_vec());
            at += len;
        }
        Ok(out)
    }

    /// Submits what was recorded and waits (asynchronously) until the GPU
    /// has done it. The passes settle after each block, so that the queue
    /// never holds more than a block's work: progress follows the GPU, and
    /// a cancelled run leaves little behind in a shared GPU process.
    pub async fn settle(&self) -> Result<()> {
        self.flush();
        let started = clock::now_ms();
        let (tx, rx) = futures_channel::oneshot::channel();
        self.rec.queue().on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.rec
            .device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| GpuError::Readback("the device went away".into()))?;
        let waited = clock::now_ms() - started;
        self.rec.count(|w| w.wait_ms += waited);
        self.check()
    }

    /// Waits until the GPU has finished everything submitted (natively).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.flush();
        self.rec
            .device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        self.check()
    }
}
