//! The GPU the tests run on: natively, wgpu's first adapter (lavapipe, a
//! CPU Vulkan from Debian's `mesa-vulkan-drivers`, on machines without a
//! GPU). A missing adapter fails the test with how to get one.

use lens_gpu::{Gpu, GpuOptions};

/// With every optional feature the adapter has.
pub fn gpu() -> Gpu {
    gpu_with(GpuOptions::default())
}

/// With the optional features limited to `options` (`GpuOptions::PLAIN`:
/// the kernels that need none).
#[allow(dead_code)]
pub fn gpu_with(options: GpuOptions) -> Gpu {
    match lens_gpu::block_on(Gpu::with_options(options)) {
        Ok(g) => {
            eprintln!("GPU adapter: {:?}", g.adapter());
            g
        }
        Err(e) => panic!(
            "{e}: the GPU tests need a wgpu adapter; on Debian without a GPU, \
             `apt-get install mesa-vulkan-drivers` gives lavapipe"
        ),
    }
}
