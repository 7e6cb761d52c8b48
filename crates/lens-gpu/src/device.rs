//! The GPU device, its kernels and its buffers.

use crate::error::{GpuError, Result};
use crate::gemm::{self, GemmTuning, ShapeClass, Variant};
use crate::record::{Bind, Kernel, Recorder, Use};
use lens_report::GpuWork;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// What kind of adapter the device is: decided once, from wgpu's type,
/// so no caller compares names as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    DiscreteGpu,
    IntegratedGpu,
    VirtualGpu,
    /// A software emulator (lavapipe, SwiftShader): slower than the CPU path.
    Software,
    Other,
}

impl AdapterKind {
    fn of(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::DiscreteGpu,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::IntegratedGpu,
            wgpu::DeviceType::VirtualGpu => AdapterKind::VirtualGpu,
            wgpu::DeviceType::Cpu => AdapterKind::Software,
            wgpu::DeviceType::Other => AdapterKind::Other,
        }
    }

    pub fn is_software(self) -> bool {
        self == AdapterKind::Software
    }
}

impl std::fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdapterKind::DiscreteGpu => "discrete GPU",
            AdapterKind::IntegratedGpu => "integrated GPU",
            AdapterKind::VirtualGpu => "virtual GPU",
            AdapterKind::Software => "software emulator",
            AdapterKind::Other => "other adapter",
        })
    }
}

/// What the page and the bench say about the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    pub name: String,
    /// "Vulkan", "BrowserWebGpu", "Metal", …
    pub backend: String,
    /// A discrete or integrated GPU, or a software emulator.
    pub device_type: AdapterKind,
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

    /// What a tuning is remembered by: the adapter, its backend and driver.
    pub fn key(&self) -> String {
        format!("{} | {} | {}", self.name, self.backend, self.driver)
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

pub use crate::record::GpuBuf;

/// Pooled buffers kept beyond this many bytes are let go (a pass's
/// working set is sized under 256 MiB; its output comes on top).
const POOL_CAP: u64 = 1 << 30;

/// The product kernel's variants, in [`Variant::ALL`]'s order.
pub(crate) struct GemmKernels([Kernel; 3]);

impl GemmKernels {
    pub(crate) fn get(&self, v: Variant) -> &Kernel {
        &self.0[Variant::ALL.iter().position(|&w| w == v).unwrap_or(0)]
    }
}

/// A GPU device with the kernels of the frozen-linear passes.
pub struct Gpu {
    pub(crate) rec: Recorder,
    summary: AdapterSummary,
    pub(crate) max_binding: u64,
    pub(crate) max_groups: u32,
    pub(crate) gemm: GemmKernels,
    pub(crate) elementwise: Kernel,
    pub(crate) fill: Kernel,
    pub(crate) dequant: Kernel,
    pub(crate) rms: Kernel,
    pub(crate) rope: Kernel,
    pub(crate) softmax: Kernel,
    pub(crate) gate: Kernel,
    pub(crate) resident: RefCell<crate::resident::ResidentSet>,
    tuning: RefCell<GemmTuning>,
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
            device_type: AdapterKind::of(info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            max_binding,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
        };
        use crate::record::Bind::{Ro, Rw, Uniform};
        let kernel = |id: u32, label: &str, src: &str, binds: &'static [Bind]| {
            Kernel::new(&device, id, label, src, binds)
        };
        let gemm = GemmKernels(Variant::ALL.map(|v| {
            kernel(
                100 + v as u32,
                v.name(),
                &gemm::source(v),
                &[Rw, Ro, Ro, Uniform, Ro, Ro],
            )
        }));
        let elementwise = kernel(
            1,
            "elementwise",
            include_str!("shaders/elementwise.wgsl"),
            &[Rw, Ro, Ro, Uniform],
        );
        let fill = kernel(2, "fill", include_str!("shaders/fill.wgsl"), &[Rw, Uniform]);
        let dequant_src = crate::resident::dequant_source(summary.shader_f16);
        let dequant = if summary.shader_f16 {
            // The blocks as u32 words and as f16, after the uniform.
            kernel(3, "dequant", &dequant_src, &[Rw, Ro, Uniform, Ro])
        } else {
            kernel(3, "dequant", &dequant_src, &[Rw, Ro, Uniform])
        };
        let rms_binds: &'static [Bind] = &[Rw, Rw, Ro, Ro, Uniform];
        let rms = if summary.subgroups {
            kernel(
                4,
                "rms",
                &subgroup_source(include_str!("shaders/rms_subgroups.wgsl")),
                rms_binds,
            )
        } else {
            kernel(4, "rms", include_str!("shaders/rms.wgsl"), rms_binds)
        };
        let rope = kernel(
            5,
            "rope",
            include_str!("shaders/rope.wgsl"),
            &[Rw, Ro, Ro, Uniform],
        );
        let softmax = kernel(
            6,
            "softmax",
            include_str!("shaders/softmax.wgsl"),
            &[Rw, Uniform],
        );
        let gate = kernel(
            7,
            "gate",
            include_str!("shaders/gate.wgsl"),
            &[Rw, Ro, Uniform],
        );
        let tuning = RefCell::new(GemmTuning::untuned(&summary.key()));
        let gpu = Self {
            rec: Recorder::new(device, queue, POOL_CAP),
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
            tuning,
            errors,
            lost,
        };
        gpu.check()?;
        Ok(gpu)
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// What the GPU was asked to do since it was made (running totals:
    /// [`GpuWork::since`] gives one piece of work's share).
    pub fn work(&self) -> GpuWork {
        self.rec.work()
    }

    /// The product variants in use.
    pub fn tuning(&self) -> GemmTuning {
        self.tuning.borrow().clone()
    }

    /// Uses `t` (remembered for this adapter, or just timed); one timed on
    /// another adapter is refused.
    pub fn set_tuning(&self, t: GemmTuning) -> Result<()> {
        if t.adapter != self.summary.key() {
            return Err(GpuError::Options(format!(
                "a tuning for '{}' does not apply to '{}'",
                t.adapter,
                self.summary.key()
            )));
        }
        *self.tuning.borrow_mut() = t;
        Ok(())
    }

    /// The variant a product with `rows` output rows uses.
    pub(crate) fn variant_for(&self, rows: usize) -> Variant {
        self.tuning.borrow().variant(ShapeClass::of(rows))
    }

    /// Gives the device up, as a driver reset or a lost GPU process would
    /// take it: every later call fails with [`GpuError::Lost`].
    pub fn destroy(&self) {
        self.rec.device().destroy();
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

    /// `len` values, unspecified: for a buffer the next kernel writes whole.
    pub(crate) fn uninit(&self, len: usize) -> Result<GpuBuf> {
        let bytes = self.fits(len)?;
        let (id, buf, _) = self.rec.buffer(bytes, Use::Storage);
        Ok(self.rec.wrap(id, buf, len, Some(Use::Storage)))
    }

    /// `len` zeros: a new buffer is zero-filled; a pooled one is cleared by
    /// a kernel, inside the open compute pass.
    pub fn zeros(&self, len: usize) -> Result<GpuBuf> {
        let bytes = self.fits(len)?;
        let (id, buf, reused) = self.rec.buffer(bytes, Use::Storage);
        let out = self.rec.wrap(id, buf, len, Some(Use::Storage));
        if reused {
            self.fill_value(&out, 0, (bytes / 4) as usize, 0.0)?;
        }
        Ok(out)
    }

    /// `dst[offset..offset + len] = value` by a kernel.
    pub(crate) fn fill_value(
        &self,
        dst: &GpuBuf,
        offset: usize,
        len: usize,
        value: f32,
    ) -> Result<()> {
        let u = |v: usize| {
            u32::try_from(v).map_err(|_| GpuError::TooLarge {
                bytes: v as u64 * 4,
                limit: u32::MAX as u64,
            })
        };
        let params = [u(len)?, u(offset)?, value.to_bits(), 0];
        self.dispatch(&self.fill, &[dst], &params, self.grid(len));
        Ok(())
    }

    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuBuf> {
        let bytes = self.fits(data.len())?;
        let contents: &[u8] = if data.is_empty() {
            &[0; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        let (id, buf, reused) = self.rec.buffer(bytes, Use::Storage);
        // The queue writes before the commands of the next submit: a pooled
        // buffer that recorded commands still read must see them run first.
        if reused && self.rec.pending() {
            self.rec.flush();
        }
        self.write(&buf, contents);
        Ok(self.rec.wrap(id, buf, data.len(), Some(Use::Storage)))
    }

    fn write(&self, buf: &wgpu::Buffer, contents: &[u8]) {
        self.rec.queue().write_buffer(buf, 0, contents);
        let n = contents.len() as u64;
        self.rec.count(|w| w.bytes_uploaded += n);
    }

    /// Raw bytes (a multiple of 4) in a storage buffer of its own (a model's
    /// weights: never pooled).
    pub(crate) fn upload_bytes(&self, bytes: &[u8]) -> Result<GpuBuf> {
        if bytes.len() as u64 > self.max_binding {
            return Err(GpuError::TooLarge {
                bytes: bytes.len() as u64,
                limit: self.max_binding,
            });
        }
        self.check()?;
        // Written through the queue: a buffer mapped at creation panics
        // natively once the device is lost, where a queued write only
        // reports an error.
        let buf = self.rec.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("weights"),
            size: bytes.len().max(4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.write(&buf, bytes);
        Ok(self.rec.created(buf, bytes.len() / 4))
    }

    /// Records a command outside the compute pass (a copy, a clear).
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        self.rec.encode(f)
    }

    /// Submits what was recorded.
    pub fn flush(&self) {
        self.rec.flush()
    }

    /// Gives back the buffers pooled for reuse (after a run: the next
    /// prompt sizes its own).
    pub fn trim(&self) {
        self.rec.trim()
    }

    /// One dispatch of `kernel` with `storage` at its storage bindings in
    /// order and the uniform `params`.
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        storage: &[&GpuBuf],
        params: &[u32],
        groups: (u32, u32, u32),
    ) {
        self.rec.dispatch(kernel, storage, params, groups)
    }

    /// A 2-d grid of 256-wide workgroups covering `total` invocations.
    pub(crate) fn grid(&self, total: usize) -> (u32, u32, u32) {
        let groups = total.div_ceil(256).max(1);
        let x = groups.min(self.max_groups as usize);
        (x as u32, groups.div_ceil(x) as u32, 1)
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
