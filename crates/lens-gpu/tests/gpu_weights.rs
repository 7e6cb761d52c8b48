//! Weights on the GPU: the dequantization kernel for every GGML block
//! format it decodes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) and
//! f16/bf16/f32 against candle's CPU decoding of the same bytes, and the
//! resident weights of the real GGUF models (every matrix the passes read,
//! decoded on the GPU, against the CPU's `matrix`), uploaded once per
//! model. The decoder that reads f16 fields natively (`shader-f16`) and
//! the one that unpacks them give the same bits. The kernel computes in f32 like the CPU decoder; it may fuse a
//! multiply-add, so agreement is to 1e-6 of the matrix's largest entry.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use lens_engine::backend::Backend;
use lens_engine::forward::matrix;
use lens_engine::Model;
use lens_gpu::GpuOptions;
use lens_testkit::gpu::{gpu, gpu_with};
use lens_testkit::max_rel_t as max_rel;
use lens_testkit::real_models::{model_path, GEMMA, SMOLLM};
use lens_testkit::Rng;

const TOL: f64 = 1e-6;

#[test]
fn every_block_format_decodes_like_the_cpu() {
    let plain = gpu_with(GpuOptions::PLAIN);
    assert!(!plain.adapter().shader_f16 && !plain.adapter().subgroups);
    let g = gpu();
    eprintln!("shader-f16 decoder: {}", g.adapter().shader_f16);
    let mut rng = Rng::new(7);
    // 3 rows of 512: two K-quant super-blocks, sixteen small blocks a row.
    let (rows, cols) = (3, 512);
    let vals = rng.vec(rows * cols, 2.0);
    let src = Tensor::from_vec(vals, (rows, cols), &Device::Cpu).unwrap();
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::F32,
    ] {
        let q = QTensor::quantize(&src, dtype).expect("quantize");
        let bytes = q.data().expect("bytes").to_vec();
        let cpu = qtensor_from_ggml(dtype, &bytes, vec![rows, cols], &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .expect("cpu dequantize");
        let on_gpu = g
            .dequantize(dtype, rows, cols, &bytes)
            .expect("gpu dequantize");
        let back = g.download(&on_gpu, 0, &[rows, cols]).expect("download");
        // The decoder without shader-f16 gives the same bits.
        let unpacked = plain
            .dequantize(dtype, rows, cols, &bytes)
            .and_then(|b| plain.download(&b, 0, &[rows, cols]).map_err(Into::into))
            .expect("plain gpu dequantize");
        let same = unpacked.to_vec2::<f32>().unwrap() == back.to_vec2::<f32>().unwrap();
        assert!(same, "{dtype:?}: the two decoders differ");
        let err = max_rel(&back, &cpu);
        // The decoded values are not all equal (the test sees every field).
        let spread = max_rel(&cpu, &cpu.zeros_like().unwrap());
        eprintln!("{dtype:?}: GPU vs CPU {err:.2e}");
        assert!(spread > 0.0, "{dtype:?}: decoded to zeros");
        assert!(err <= TOL, "{dtype:?}: GPU decoding differs by {err:.3e}");
    }
}

#[test]
fn blocks_that_do_not_fit_the_shape_are_an_error() {
    let g = gpu();
    let e = g
        .dequantize(GgmlDType::Q4K, 2, 256, &[0u8; 144])
        .err()
        .expect("one block for two rows is refused");
    assert!(e.to_string().contains("not a 2×256 matrix"), "{e}");
    let e = g
        .dequantize(GgmlDType::Q8_0, 1, 48, &[0u8; 34])
        .err()
        .expect("a row that is not whole blocks is refused");
    assert!(e.to_string().contains("32-wide blocks"), "{e}");
}

/// Every matrix the frozen passes read, for each layer, decoded on the GPU
/// from the resident blocks, against the CPU.
fn resident_matches_cpu(file: &str) -> u64 {
    let g = gpu();
    let model = Model::load_path(&model_path(file)).expect("model loads");
    let mut names = Vec::new();
    for l in 0..model.config.layers {
        for w in [
            "attn_v",
            "attn_output",
            "ffn_up",
            "ffn_down",
            "attn_q",
            "attn_k",
        ] {
            names.push(format!("blk.{l}.{w}.weight"));
        }
    }
    let mut worst = 0.0f64;
    for name in &names {
        let buf = Backend::weight(&g, &model, name).expect("GPU weight");
        let cpu = matrix(&model, name, DType::F32).expect("CPU matrix");
        let back = g.download(&buf, 0, cpu.dims()).expect("download");
        worst = worst.max(max_rel(&back, &cpu));
    }
    let resident = g.resident_bytes();
    eprintln!(
        "{file}: {} matrices, GPU vs CPU {worst:.2e}, resident {:.1} MiB",
        names.len(),
        resident as f64 / (1 << 20) as f64
    );
    assert!(
        worst <= TOL,
        "{file}: resident weights differ by {worst:.3e}"
    );
    // Asked again: decoded from what is there, nothing uploaded.
    Backend::weight(&g, &model, &names[0]).expect("again");
    assert_eq!(g.resident_bytes(), resident, "a second request re-uploads");
    // Another model replaces the first one's weights.
    let other = Model::load_path(&model_path(file)).expect("model loads again");
    Backend::weight(&g, &other, &names[0]).expect("other model");
    assert!(
        g.resident_bytes() < resident,
        "the previous model's weights stay"
    );
    resident
}

/// Bits a weight of what stays on the GPU, over the matrices read above.
fn bits_a_weight(file: &str, resident: u64) -> f64 {
    let model = Model::load_path(&model_path(file)).expect("model loads");
    let c = &model.config;
    let weights =
        c.layers * (c.hidden * (2 * c.kv_heads + 2 * c.heads) * c.head_dim + 2 * c.hidden * c.ffn);
    let bits = resident as f64 * 8.0 / weights as f64;
    eprintln!("{file}: {bits:.2} bits a weight on the GPU");
    bits
}

#[test]
fn gemma_weights_resident_in_their_blocks() {
    // Q4_K/Q5_0/Q6_K/Q8_0 blocks: well under f32's 32 bits a weight.
    let bits = bits_a_weight(GEMMA, resident_matches_cpu(GEMMA));
    assert!(bits < 8.0, "{bits} bits a weight");
}

#[test]
fn smollm_weights_resident_with_reordered_q_k() {
    // Llama GGUF q/k rows are reordered as whole rows of blocks: everything
    // stays Q4_1 (5 bits a weight).
    let bits = bits_a_weight(SMOLLM, resident_matches_cpu(SMOLLM));
    assert!(bits < 6.0, "{bits} bits a weight");
}
