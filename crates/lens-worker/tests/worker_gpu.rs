//! The worker's run with its passes on the GPU (wgpu; lavapipe here): it
//! says so first, computes in f32 whatever precision was asked, and its
//! certificate (random probes against the f64 CPU) and reconstruction are
//! within bounds, on a tiny Qwen 3. (Gemma 3 270M's passes on the GPU are
//! lens-gpu's `gpu_passes`; Gemma through the page's worker on WebGPU is the
//! browser suite `tests/e2e/webgpu.mjs`.)

use lens_engine::{Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Extent;
use lens_protocol::report::Part;
use lens_protocol::{Device, Reply, SvdMode};
use lens_testkit::gpu::gpu;
use lens_testkit::worker::run_collecting;
use lens_testkit::{prompt, tiny_hf_dir, Family, Spec};
use lens_worker::run as worker;
use serde_json::json;

fn run_on_gpu(model: &Model, prompt: &str, extent: Extent) -> Vec<Reply> {
    let g = gpu();
    let req = RunRequest {
        job: 1,
        prompt: prompt.into(),
        precision: Precision::F64,
        top: 5,
        extent,
        svd: SvdMode::Full,
        backend: lens_protocol::BackendChoice::Webgpu,
        pool: 1,
        target: None,
    };
    let compute = worker::Compute {
        gpu: Some(&g as &dyn lens_engine::run::Accelerator),
        fallback: None,
        pool: None,
        memory_limit: None,
    };
    let (replies, result, _) = run_collecting(model, &req, compute);
    assert!(result.is_ok(), "{:?}", result.err());
    match replies.first() {
        Some(Reply::Backend {
            device, adapter, ..
        }) => {
            assert_eq!(*device, Device::Gpu);
            assert_eq!(adapter.as_deref(), Some(g.adapter().label().as_str()));
        }
        other => panic!("first reply {other:?}"),
    }
    replies
}

/// A tiny random Qwen 3 written to a fresh `dir` and loaded.
fn tiny_qwen3(dir: &str) -> (Spec, Model) {
    let spec = Spec::new(Family::Qwen3);
    let dir = tiny_hf_dir(dir, &spec, json!({}));
    (spec, Model::load_path(&dir).expect("tiny model"))
}

#[test]
fn tiny_qwen3_full_run_on_the_gpu() {
    let (spec, m) = tiny_qwen3("worker-gpu");
    let replies = run_on_gpu(&m, &prompt(9, 6, spec.vocab), Extent::Full);
    let (detached, cert) = replies
        .iter()
        .find_map(|r| match r {
            Reply::Part {
                part: Part::Jacobian(j),
                ..
            } => Some((j.detached_rel_error, j.certificate.clone())),
            _ => None,
        })
        .expect("a Jacobian reply");
    let cert = cert.expect("a certificate");
    eprintln!(
        "detached {detached:.2e}, certificate {:.2e}",
        cert.max_rel_error
    );
    assert!(detached <= 1e-5, "f32 reconstruction {detached:.3e}");
    assert!(cert.max_rel_error <= 1e-4 && cert.probes == 3);
    let report = Reply::report_of(&replies).expect("a Report");
    assert_eq!(report.precision, Precision::F32, "the GPU computes in f32");
    assert_eq!(report.reconstruction.certificate, Some(cert));
    assert!(report.svd.is_some(), "the SVD of the GPU's J");
}

/// A device lost before the run's passes (given up with `destroy`, as a
/// driver reset takes it): the run is done again on the CPU, the page is told
/// why, and the numbers are the f64 CPU's.
#[test]
fn a_lost_device_falls_back_to_the_cpu() {
    let (spec, m) = tiny_qwen3("worker-gpu-lost");
    let g = gpu();
    g.destroy();
    let req = RunRequest {
        job: 1,
        prompt: prompt(9, 6, spec.vocab),
        precision: Precision::F64,
        top: 5,
        extent: Extent::Full,
        svd: SvdMode::Full,
        backend: lens_protocol::BackendChoice::Webgpu,
        pool: 1,
        target: None,
    };
    let compute = worker::Compute {
        gpu: Some(&g as &dyn lens_engine::run::Accelerator),
        fallback: None,
        pool: None,
        memory_limit: None,
    };
    let (replies, result, _) = run_collecting(&m, &req, compute);
    assert!(result.is_ok(), "{:?}", result.err());
    let notice = replies.iter().find_map(|r| match r {
        Reply::Notice { message } => Some(message.clone()),
        _ => None,
    });
    assert!(
        notice
            .as_deref()
            .is_some_and(|m| m.contains("stopped in the middle of the run")
                && m.contains("destroyed")
                && m.contains("CPU")),
        "{notice:?}"
    );
    let backend = replies.iter().rev().find_map(|r| match r {
        Reply::Backend {
            device, fallback, ..
        } => Some((*device, fallback.clone())),
        _ => None,
    });
    match backend {
        Some((Device::CpuF64, Some(why))) => assert!(why.contains("destroyed"), "{why}"),
        other => panic!("the re-run's backend: {other:?}"),
    }
    let rel = replies
        .iter()
        .rev()
        .find_map(|r| match r {
            Reply::Part {
                part: Part::Jacobian(j),
                ..
            } => Some(j.detached_rel_error),
            _ => None,
        })
        .expect("a Jacobian reply");
    assert!(rel < 1e-12, "the CPU's f64 J reconstructs: {rel:e}");
}
