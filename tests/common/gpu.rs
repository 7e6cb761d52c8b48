//! The GPU the tests run on: natively, wgpu's first adapter (lavapipe, a
//! CPU Vulkan from Debian's `mesa-vulkan-drivers`, on machines without a
//! GPU). A missing adapter fails the test with how to get one.

use lens_gpu::Gpu;

pub fn gpu() -> Gpu {
    match lens_gpu::block_on(Gpu::new()) {
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
