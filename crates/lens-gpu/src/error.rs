use thiserror::Error;

#[derive(Debug, Error)]
pub enum GpuError {
    /// No adapter (no WebGPU in this browser, no Vulkan/Metal/DX12 driver).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// A bad `--gpu-features` value.
    #[error("{0}")]
    Options(String),
    #[error("the GPU refused a device: {0}")]
    Device(String),
    /// A buffer larger than the adapter lets one binding see.
    #[error("a buffer of {bytes} bytes exceeds this GPU's binding limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    /// An element index the kernels' 32-bit indices cannot hold.
    #[error("{what} {index} is past the GPU's 32-bit indices")]
    IndexTooLarge { what: &'static str, index: usize },
    /// A validation or out-of-memory error reported by the GPU.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device is gone (a driver reset, the browser's GPU process lost).
    #[error("the GPU device was {0}")]
    Lost(String),
    #[error("GPU readback failed: {0}")]
    Readback(String),
    #[error(transparent)]
    Engine(#[from] lens_engine::EngineError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl From<GpuError> for lens_engine::EngineError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Engine(e) => e,
            other => lens_engine::EngineError::Backend(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// An element offset, stride or count as the kernels take it (u32).
pub(crate) fn u32_index(index: usize, what: &'static str) -> Result<u32> {
    u32::try_from(index).map_err(|_| GpuError::IndexTooLarge { what, index })
}
