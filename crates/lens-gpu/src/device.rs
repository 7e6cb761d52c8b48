//! The GPU device, its kernels and its buffers.

use crate::error::{GpuError, Result};
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

/// What the page and the bench say about the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    pub name: String,
    /// "Vulkan", "BrowserWebGpu", "Metal", …
    pub backend: String,
    /// "DiscreteGpu", "Cpu" (an emulator such as lavapipe or SwiftShader), …
    pub device_type: String,
    pub driver: String,
    /// The largest buffer one binding may see, in bytes.
    pub max_binding: u64,
    /// The kernels use `shader-f16`: the GGUF decoder reads the blocks'
    /// f16 scales as f16 (asked for, and the adapter has it).
    pub shader_f16: bool,
    /// The kernels use subgroups: RMSNorm's reduction (asked for, and the
    /// adapter has them).
    pub subgroups: bool,
}

impl AdapterSummary {
    /// The optional features the kernels use, by their WebGPU names.
    pub fn features_in_use(&self) -> Vec<&'static str> {
        [
            (self.shader_f16, "shader-f16"),
            (self.subgroups, "subgroups"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// The adapter's name and the optional features the kernels use, for
    /// the page's engine label: "NVIDIA … · shader-f16, subgroups".
    pub fn label(&self) -> String {
        let used = self.features_in_use();
        if used.is_empty() {
            self.name.clone()
        } else {
            format!("{} · {}", self.name, used.join(", "))
        }
    }
}

/// Which optional WebGPU features the kernels may use where the adapter has
/// them; each has a kernel that needs neither. f16 is never used for
/// arithmetic: its unit round-off (4.9e-4) is above the 1e-4 the GPU path
/// must agree with f64 to. It reads the GGUF blocks' f16 scales, which is
/// exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    pub shader_f16: bool,
    pub subgroups: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            shader_f16: true,
            subgroups: true,
        }
    }
}

impl GpuOptions {
    /// The kernels that need no optional feature.
    pub const PLAIN: Self = Self {
        shader_f16: false,
        subgroups: false,
    };

    /// `auto`, `none` or a comma list of `f16` and `subgroups`.
    pub fn parse(v: &str) -> std::result::Result<Self, GpuError> {
        let v = v.trim();
        if v.is_empty() || v == "auto" {
            return Ok(Self::default());
        }
        let mut o = Self::PLAIN;
        if v == "none" {
            return Ok(o);
        }
        for w in v.split(',').map(str::trim) {
            match w {
                "f16" | "shader-f16" => o.shader_f16 = true,
                "subgroups" => o.subgroups = true,
                _ => {
                    return Err(GpuError::Options(format!(
                        "unknown GPU feature '{w}' (auto, none, f16, subgroups)"
                    )))
                }
            }
        }
        Ok(o)
    }
}

/// A shader that uses subgroup operations. Browsers (Tint) want the
/// `enable` directive; naga (natively) rejects it and needs only the
/// device feature. (wgpu 30's web backend does not pass `subgroups` on, so
/// in a browser this is used once it does; tests/e2e/webgpu.mjs checks
/// that Tint compiles the shader with the directive.)
fn subgroup_source(src: &str) -> String {
    if cfg!(target_arch = "wasm32") {
        format!("enable subgroups;\n{src}")
    } else {
        src.to_string()
    }
}

/// A buffer of f32 on the GPU.
pub struct GpuBuf {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) len: usize,
}

/// Commands are recorded into one encoder and submitted in batches of this
/// many dispatches (or at a readback), not one submit per operation.
const BATCH: usize = 64;

/// A GPU device with the kernels of the frozen-linear passes.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    summary: AdapterSummary,
    pub(crate) max_binding: u64,
    pub(crate) max_groups: u32,
    pub(crate) gemm: wgpu::ComputePipeline,
    pub(crate) elementwise: wgpu::ComputePipeline,
    pub(crate) fill: wgpu::ComputePipeline,
    pub(crate) dequant: wgpu::ComputePipeline,
    pub(crate) rms: wgpu::ComputePipeline,
    pub(crate) rope: wgpu::ComputePipeline,
    pub(crate) softmax: wgpu::ComputePipeline,
    pub(crate) gate: wgpu::ComputePipeline,
    pub(crate) resident: RefCell<crate::weights::ResidentSet>,
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    queued: Cell<usize>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Why the device was lost, once it is (a driver reset, the browser's
    /// GPU process gone, `destroy`): every later call fails with it.
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// The first high-performance adapter, with its own limits (the
    /// defaults are lower: 128 MiB bindings natively) and every optional
    /// feature the kernels can use.
    pub async fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default()).await
    }

    /// As [`Gpu::new`], with the optional features limited to `options`.
    pub async fn with_options(options: GpuOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let offered = adapter.features();
        let mut features = wgpu::Features::empty();
        if options.shader_f16 && offered.contains(wgpu::Features::SHADER_F16) {
            features |= wgpu::Features::SHADER_F16;
        }
        if options.subgroups && offered.contains(wgpu::Features::SUBGROUP) {
            features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("linear-lens"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = lost_sink.lock() {
                // The browser's own words only where the reason is unknown.
                let message = message.trim().trim_end_matches('.');
                *l = Some(match reason {
                    wgpu::DeviceLostReason::Destroyed => "destroyed".into(),
                    wgpu::DeviceLostReason::Unknown if message.is_empty() => "lost".into(),
                    wgpu::DeviceLostReason::Unknown => format!("lost ({message})"),
                });
            }
        });
        let max_binding =
            (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size);
        let summary = AdapterSummary {
            // Browsers leave the description empty unless asked for it.
            name: match (info.name.is_empty(), info.device_type) {
                (false, _) => info.name.clone(),
                (true, wgpu::DeviceType::Cpu) => "WebGPU software adapter".into(),
                (true, _) => "WebGPU adapter".into(),
            },
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            max_binding,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
        };
        let pipeline = |label: &str, src: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let gemm = pipeline("gemm", include_str!("shaders/gemm.wgsl"));
        let elementwise = pipeline("elementwise", include_str!("shaders/elementwise.wgsl"));
        let fill = pipeline("fill", include_str!("shaders/fill.wgsl"));
        let dequant = pipeline(
            "dequant",
            &crate::weights::dequant_source(summary.shader_f16),
        );
        let rms = if summary.subgroups {
            pipeline(
                "rms",
                &subgroup_source(include_str!("shaders/rms_subgroups.wgsl")),
            )
        } else {
            pipeline("rms", include_str!("shaders/rms.wgsl"))
        };
        let rope = pipeline("rope", include_str!("shaders/rope.wgsl"));
        let softmax = pipeline("softmax", include_str!("shaders/softmax.wgsl"));
        let gate = pipeline("gate", include_str!("shaders/gate.wgsl"));
        let gpu = Self {
            device,
            queue,
            summary,
            max_binding,
            max_groups: limits.max_compute_workgroups_per_dimension.max(1),
            gemm,
            elementwise,
            fill,
            dequant,
            rms,
            rope,
            softmax,
            gate,
            resident: RefCell::default(),
            encoder: RefCell::new(None),
            queued: Cell::new(0),
            errors,
            lost,
        };
        gpu.check()?;
        Ok(gpu)
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Gives the device up, as a driver reset or a lost GPU process would
    /// take it: every later call fails with [`GpuError::Lost`].
    pub fn destroy(&self) {
        self.device.destroy();
        if let Ok(mut l) = self.lost.lock() {
            l.get_or_insert_with(|| "destroyed".into());
        }
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// Errors the GPU reported since the last check (a lost device first).
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(why) = self.lost() {
            return Err(GpuError::Lost(why));
        }
        let first = self
            .errors
            .lock()
            .ok()
            .and_then(|mut v| (!v.is_empty()).then(|| v.drain(..).next()).flatten());
        match first {
            Some(e) => Err(GpuError::Gpu(e)),
            None => Ok(()),
        }
    }

    fn fits(&self, len: usize) -> Result<u64> {
        if let Some(why) = self.lost() {
            return Err(GpuError::Lost(why));
        }
        let bytes = (len.max(1) * 4) as u64;
        if bytes > self.max_binding {
            return Err(GpuError::TooLarge {
                bytes,
                limit: self.max_binding,
            });
        }
        Ok(bytes)
    }

    const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// `len` zeros (wgpu zero-fills new buffers).
    pub fn zeros(&self, len: usize) -> Result<GpuBuf> {
        let size = self.fits(len)?;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: Self::USAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBuf { buf, len })
    }

    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuBuf> {
        self.fits(data.len())?;
        let contents: &[u8] = if data.is_empty() {
            &[0; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        let buf = self.buffer_with(None, contents, Self::USAGE);
        Ok(GpuBuf {
            buf,
            len: data.len(),
        })
    }

    /// Raw bytes (a multiple of 4) in a storage buffer.
    pub(crate) fn upload_bytes(&self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        if bytes.len() as u64 > self.max_binding {
            return Err(GpuError::TooLarge {
                bytes: bytes.len() as u64,
                limit: self.max_binding,
            });
        }
        self.check()?;
        Ok(self.buffer_with(Some("weights"), bytes, wgpu::BufferUsages::STORAGE))
    }

    /// A buffer holding `contents` (a multiple of 4 bytes), written through
    /// the queue: a buffer mapped at creation panics natively once the
    /// device is lost, where a queued write only reports an error.
    fn buffer_with(
        &self,
        label: Option<&str>,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label,
            size: contents.len().max(4) as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, contents);
        buf
    }

    /// Records work into the current encoder, submitting every [`BATCH`].
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        {
            let mut slot = self.encoder.borrow_mut();
            let enc = slot.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            f(enc);
        }
        self.queued.set(self.queued.get() + 1);
        if self.queued.get() >= BATCH {
            self.flush();
        }
    }

    /// Submits what was recorded.
    pub fn flush(&self) {
        if let Some(enc) = self.encoder.borrow_mut().take() {
            self.queue.submit([enc.finish()]);
        }
        self.queued.set(0);
    }

    /// One dispatch of `pipeline` with `storage` at bindings 0.. and the
    /// uniform `params` after them.
    pub(crate) fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        storage: &[&wgpu::Buffer],
        params: &[u32],
        groups: (u32, u32, u32),
    ) {
        self.dispatch_with_uniform_at(pipeline, storage, storage.len(), params, groups)
    }

    /// As [`Gpu::dispatch`], with the uniform at binding `at` and the
    /// storage buffers at the other bindings in order.
    pub(crate) fn dispatch_with_uniform_at(
        &self,
        pipeline: &wgpu::ComputePipeline,
        storage: &[&wgpu::Buffer],
        at: usize,
        params: &[u32],
        groups: (u32, u32, u32),
    ) {
        let uniform = self.buffer_with(
            None,
            bytemuck::cast_slice(params),
            wgpu::BufferUsages::UNIFORM,
        );
        let mut entries: Vec<wgpu::BindGroupEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: (i + usize::from(i >= at)) as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: at as u32,
            resource: uniform.as_entire_binding(),
        });
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.record(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        });
    }

    /// A 2-d grid of 256-wide workgroups covering `total` invocations.
    pub(crate) fn grid(&self, total: usize) -> (u32, u32, u32) {
        let groups = total.div_ceil(256).max(1);
        let x = groups.min(self.max_groups as usize);
        (x as u32, groups.div_ceil(x) as u32, 1)
    }

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
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (total * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
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
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let mapped = rx
            .await
            .map_err(|_| GpuError::Readback("the device went away".into()))?;
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
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| GpuError::Readback("the device went away".into()))?;
        self.check()
    }

    /// Waits until the GPU has finished everything submitted (natively).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::GpuOptions;

    #[test]
    fn feature_lists_parse_or_fail_clearly() {
        assert_eq!(GpuOptions::parse("auto").ok(), Some(GpuOptions::default()));
        assert_eq!(GpuOptions::parse("").ok(), Some(GpuOptions::default()));
        assert_eq!(GpuOptions::parse("none").ok(), Some(GpuOptions::PLAIN));
        let f16 = GpuOptions::parse("f16").expect("f16");
        assert!(f16.shader_f16 && !f16.subgroups);
        assert_eq!(
            GpuOptions::parse("shader-f16, subgroups").ok(),
            Some(GpuOptions::default())
        );
        let err = GpuOptions::parse("f16,turbo")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("'turbo'"), "{err}");
    }
}
