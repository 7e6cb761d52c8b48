//! How work reaches the GPU without allocating per dispatch: buffers from a
//! pool, uniforms from one ring buffer at dynamic offsets, bind groups made
//! once per set of buffers, and one compute pass for a run of dispatches.
//! Everything is counted ([`GpuWork`]), so that `bench` and the page can
//! show that the steady state of a pass creates nothing.

use lens_report::GpuWork;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::rc::{Rc, Weak};

/// A binding of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    /// Storage, read and written.
    Rw,
    /// Storage, read only.
    Ro,
    /// The kernel's parameters: a slot of the uniform ring.
    Uniform,
}

/// A compute pipeline with its explicit layout (the uniform's binding has a
/// dynamic offset, which an inferred layout never has).
pub(crate) struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    binds: &'static [Bind],
    /// Distinct per kernel: part of a bind group's key.
    id: u32,
}

impl Kernel {
    pub(crate) fn new(
        device: &wgpu::Device,
        id: u32,
        label: &str,
        src: &str,
        binds: &'static [Bind],
    ) -> Self {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = binds
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Bind::Rw => wgpu::BufferBindingType::Storage { read_only: false },
                        Bind::Ro => wgpu::BufferBindingType::Storage { read_only: true },
                        Bind::Uniform => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: *b == Bind::Uniform,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Self {
            pipeline,
            layout,
            binds,
            id,
        }
    }
}

/// What a pooled buffer is for: storage for the kernels, or staging for a
/// readback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Use {
    Storage,
    Staging,
}

impl Use {
    fn usages(self) -> wgpu::BufferUsages {
        match self {
            Use::Storage => wgpu::BufferUsages::STORAGE
                .union(wgpu::BufferUsages::COPY_SRC)
                .union(wgpu::BufferUsages::COPY_DST),
            Use::Staging => wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST),
        }
    }
}

/// Buffers given back, kept for the next request of the same size and use,
/// up to `cap` bytes, the last given first taken: buffers dropped in the
/// reverse of the order they were made (a block's matrices) come back in
/// their own roles, so their bind groups are found again, and older ones
/// of the same size stay below them. Also where the ids of buffers gone for good are
/// noted, so that no cached bind group keeps one alive.
pub(crate) struct Pool {
    free: HashMap<(u64, Use), Vec<(u64, wgpu::Buffer)>>,
    held: u64,
    cap: u64,
    /// Ids of buffers dropped for good since the bind groups were last pruned.
    gone: Vec<u64>,
}

impl Pool {
    fn new(cap: u64) -> Self {
        Self {
            free: HashMap::new(),
            held: 0,
            cap,
            gone: Vec::new(),
        }
    }

    fn take(&mut self, bytes: u64, usage: Use) -> Option<(u64, wgpu::Buffer)> {
        let got = self.free.get_mut(&(bytes, usage))?.pop()?;
        self.held -= bytes;
        Some(got)
    }

    pub(crate) fn give(&mut self, id: u64, buf: wgpu::Buffer, usage: Option<Use>) {
        let bytes = buf.size();
        match usage {
            Some(u) if self.held + bytes <= self.cap => {
                self.held += bytes;
                self.free.entry((bytes, u)).or_default().push((id, buf));
            }
            _ => self.gone.push(id),
        }
    }

    /// Drops every kept buffer.
    fn clear(&mut self) {
        for (_, bufs) in self.free.drain() {
            self.gone.extend(bufs.into_iter().map(|(id, _)| id));
        }
        self.held = 0;
    }
}

/// A buffer of f32 on the GPU. Dropped, it goes back to its device's pool
/// (or, for a buffer not worth keeping, its bind groups are let go).
pub struct GpuBuf {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) len: usize,
    pub(crate) id: u64,
    usage: Option<Use>,
    home: Weak<RefCell<Pool>>,
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.home.upgrade() {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                pool.give(self.id, self.buf.clone(), self.usage);
            }
        }
    }
}

/// Commands are submitted in batches of at most this many (or at a
/// readback), and each batch's uniforms fill at most this many ring slots.
pub(crate) const BATCH: usize = 256;

/// The encoder being recorded into, and the compute pass open in it.
#[derive(Default)]
struct Open {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    /// The pipeline the pass last set.
    pipeline: Option<u32>,
    commands: usize,
    /// This batch's uniforms, slot after slot.
    uniforms: Vec<u8>,
}

/// Records commands for one device.
pub(crate) struct Recorder {
    device: wgpu::Device,
    queue: wgpu::Queue,
    ring: wgpu::Buffer,
    slot: u64,
    open: RefCell<Open>,
    pool: Rc<RefCell<Pool>>,
    groups: RefCell<HashMap<(u32, [u64; 6]), wgpu::BindGroup>>,
    next_id: Cell<u64>,
    work: Cell<GpuWork>,
}

impl Recorder {
    pub(crate) fn new(device: wgpu::Device, queue: wgpu::Queue, pool_cap: u64) -> Self {
        let align = device.limits().min_uniform_buffer_offset_alignment as u64;
        // Every kernel's parameters fit 256 bytes.
        let slot = 256u64.div_ceil(align) * align;
        let ring = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform ring"),
            size: slot * BATCH as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let work = GpuWork {
            buffers_created: 1,
            ..GpuWork::default()
        };
        Self {
            device,
            queue,
            ring,
            slot,
            open: RefCell::default(),
            pool: Rc::new(RefCell::new(Pool::new(pool_cap))),
            groups: RefCell::default(),
            next_id: Cell::new(1),
            work: Cell::new(work),
        }
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The running totals.
    pub(crate) fn work(&self) -> GpuWork {
        self.work.get()
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut GpuWork)) {
        let mut w = self.work.get();
        f(&mut w);
        self.work.set(w);
    }

    fn fresh_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// A buffer of `bytes`, from the pool when one of that size is free
    /// (`true` then: it may hold old values, and the queue may still use
    /// it), else created (zero-filled).
    pub(crate) fn buffer(&self, bytes: u64, usage: Use) -> (u64, wgpu::Buffer, bool) {
        if let Some((id, buf)) = self.pool.borrow_mut().take(bytes, usage) {
            return (id, buf, true);
        }
        self.count(|w| w.buffers_created += 1);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: usage.usages(),
            mapped_at_creation: false,
        });
        (self.fresh_id(), buf, false)
    }

    /// A staging buffer back to the pool.
    pub(crate) fn give_staging(&self, id: u64, buf: wgpu::Buffer) {
        self.pool.borrow_mut().give(id, buf, Some(Use::Staging));
    }

    /// Wraps a buffer for the kernels; `usage` is `None` for one never
    /// pooled (a model's resident weights).
    pub(crate) fn wrap(
        &self,
        id: u64,
        buf: wgpu::Buffer,
        len: usize,
        usage: Option<Use>,
    ) -> GpuBuf {
        GpuBuf {
            buf,
            len,
            id,
            usage,
            home: Rc::downgrade(&self.pool),
        }
    }

    /// A buffer created outside the pool, with a fresh id.
    pub(crate) fn created(&self, buf: wgpu::Buffer, len: usize) -> GpuBuf {
        self.count(|w| w.buffers_created += 1);
        let id = self.fresh_id();
        self.wrap(id, buf, len, None)
    }

    /// Gives back every pooled buffer and the bind groups made for them.
    pub(crate) fn trim(&self) {
        self.pool.borrow_mut().clear();
        self.groups.borrow_mut().clear();
        self.pool.borrow_mut().gone.clear();
    }

    /// Whether commands are recorded and not yet submitted.
    pub(crate) fn pending(&self) -> bool {
        self.open.borrow().commands > 0
    }

    /// One dispatch of `kernel` with `storage` at its storage bindings in
    /// order and `params` in a ring slot. Creates nothing once the buffers'
    /// bind group exists.
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        storage: &[&GpuBuf],
        params: &[u32],
        groups: (u32, u32, u32),
    ) {
        let group = self.group(kernel, storage);
        let offset = {
            let mut open = self.open.borrow_mut();
            let offset = open.uniforms.len() as u64;
            open.uniforms
                .extend_from_slice(bytemuck::cast_slice(params));
            open.uniforms.resize((offset + self.slot) as usize, 0);
            offset
        };
        self.with_pass(|pass, last| {
            if *last != Some(kernel.id) {
                pass.set_pipeline(&kernel.pipeline);
                *last = Some(kernel.id);
            }
            pass.set_bind_group(0, &group, &[offset as u32]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        });
        self.count(|w| w.dispatches += 1);
        self.commands_added();
    }

    /// The bind group of `kernel` over these buffers, made on first use.
    fn group(&self, kernel: &Kernel, storage: &[&GpuBuf]) -> wgpu::BindGroup {
        self.prune();
        let mut key = [0u64; 6];
        for (k, b) in key.iter_mut().zip(storage) {
            *k = b.id;
        }
        if let Some(g) = self.groups.borrow().get(&(kernel.id, key)) {
            return g.clone();
        }
        let mut bufs = storage.iter();
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .binds
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let resource = match b {
                    Bind::Uniform => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.ring,
                        offset: 0,
                        size: NonZeroU64::new(self.slot),
                    }),
                    _ => bufs.next()?.buf.as_entire_binding(),
                };
                Some(wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource,
                })
            })
            .collect();
        let g = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        self.count(|w| w.bind_groups_created += 1);
        self.groups.borrow_mut().insert((kernel.id, key), g.clone());
        g
    }

    /// Forgets the bind groups of buffers gone for good.
    fn prune(&self) {
        let gone = std::mem::take(&mut self.pool.borrow_mut().gone);
        if !gone.is_empty() {
            self.groups
                .borrow_mut()
                .retain(|(_, ids), _| !ids.iter().any(|id| gone.contains(id)));
        }
    }

    /// Runs `f` on the open compute pass, opening one if needed.
    fn with_pass(&self, f: impl FnOnce(&mut wgpu::ComputePass<'static>, &mut Option<u32>)) {
        let mut open = self.open.borrow_mut();
        let open = &mut *open;
        if open.pass.is_none() {
            let enc = open.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            let pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime();
            open.pass = Some(pass);
            open.pipeline = None;
            self.count(|w| w.compute_passes += 1);
        }
        if let Some(pass) = open.pass.as_mut() {
            f(pass, &mut open.pipeline);
        }
    }

    /// Records a command outside a compute pass (a copy, a clear): the
    /// open pass ends first.
    pub(crate) fn encode(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        {
            let mut open = self.open.borrow_mut();
            open.pass = None;
            let enc = open.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            f(enc);
        }
        self.commands_added();
    }

    fn commands_added(&self) {
        let full = {
            let mut open = self.open.borrow_mut();
            open.commands += 1;
            open.commands >= BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Submits what was recorded, its uniforms written into the ring first
    /// (the queue writes them before the commands that read them).
    pub(crate) fn flush(&self) {
        let mut open = self.open.borrow_mut();
        open.pass = None;
        if let Some(enc) = open.encoder.take() {
            if !open.uniforms.is_empty() {
                self.queue.write_buffer(&self.ring, 0, &open.uniforms);
                let n = open.uniforms.len() as u64;
                self.count(|w| w.bytes_uploaded += n);
            }
            self.queue.submit([enc.finish()]);
            self.count(|w| w.submits += 1);
        }
        open.uniforms.clear();
        open.commands = 0;
        open.pipeline = None;
    }
}
