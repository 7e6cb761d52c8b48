//! A comparison through the worker, natively, as the page drives it: run
//! A, pin it (the page keeps the Report it folded, the vectors and the
//! log-probabilities as bytes), run B against it. The worker's comparison
//! arrives before B's `Done` and is the engine's own (`compare_here`), on a
//! tiny random Qwen 3 in f64; B's layer curves in the run do not end it.

use lens_engine::analysis::AnalyzeOptions;
use lens_engine::run::{compare_here, quiet};
use lens_engine::{Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Extent;
use lens_protocol::report::Side;
use lens_protocol::{Reply, SvdMode};
use lens_testkit::worker::{collect, replies_of, report_of};
use lens_testkit::{prompt, tiny_hf_dir, Family, Spec};
use lens_worker::pool::{block_bytes, block_of_bytes};
use lens_worker::run::{self as worker, Compute};

fn request(job: u32, prompt: &str) -> RunRequest {
    RunRequest {
        job,
        prompt: prompt.into(),
        precision: lens_protocol::Precision::F64,
        top: 5,
        extent: Extent::Full,
        svd: SvdMode::Full,
        backend: Default::default(),
        pool: 1,
        target: None,
    }
}

#[test]
fn the_worker_compares_b_with_a_pinned_page_side_as_the_engine_does() {
    let spec = Spec::new(Family::Qwen3);
    let dir = tiny_hf_dir("worker-compare", &spec, serde_json::json!({}));
    let model = Model::load_path(&dir).expect("tiny model");
    let a_text = prompt(6, 3, spec.vocab);
    let b_text = prompt(5, 4, spec.vocab);
    let layers = vec![1, 2];

    // A, as the page runs it and folds its Report (layers on demand).
    let mut session = None;
    let (replies, result) = collect(&model, &request(1, &a_text), &mut session);
    assert!(result.is_ok(), "{:?}", result.err());
    let mut report = Some(report_of(&replies));
    let (layer_replies, result) = replies_of(|emit, now| {
        worker::layers(
            &model,
            2,
            &a_text,
            Precision::F64,
            &layers,
            emit,
            now,
            &mut session,
        )
    });
    assert!(result.is_ok(), "{:?}", result.err());
    layer_replies.iter().for_each(|r| r.fold_into(&mut report));

    // Pinned: what crosses to the page and back (the bytes as sent).
    let kept = worker::pin(&model, &session).expect("a finished run");
    let bytes = block_bytes(&[kept.log_probs]);
    let log_probs = block_of_bytes(&bytes, bytes.len() / 8).expect("bytes")[0].clone();
    let a = Side {
        prompt: a_text.clone(),
        report: report.expect("A's report"),
        u: kept.u,
        log_probs,
        depth: kept.depth,
    };

    let mut session = None;
    let (replies, result) = replies_of(|emit, now| {
        lens_gpu::block_on(worker::compare(
            &model,
            &request(3, &b_text),
            layers.clone(),
            &a,
            true,
            emit,
            now,
            &mut session,
            Compute::CPU,
        ))
    });
    assert!(result.is_ok(), "{:?}", result.err());
    let at = |f: fn(&Reply) -> bool| replies.iter().position(f).expect("reply");
    let (c_at, done_at) = (
        at(|r| matches!(r, Reply::Comparison { .. })),
        at(|r| matches!(r, Reply::Done { .. })),
    );
    assert_eq!(done_at, replies.len() - 1, "Done is the last reply");
    assert!(c_at < done_at, "the comparison comes before Done");
    let Reply::Comparison { comparison, .. } = &replies[c_at] else {
        unreachable!()
    };
    assert!(
        session.is_some(),
        "B's session is kept for its on-demand stages"
    );
    let b_report = report_of(&replies);
    assert!(!b_report.layers.is_empty(), "B's run computed A's layers");

    // The engine's comparison of the same two prompts.
    let opts = AnalyzeOptions {
        layers: layers.clone(),
        ..AnalyzeOptions::new(Precision::F64)
    };
    let (_, _, want) = compare_here(&model, &a_text, None, &b_text, &opts, &quiet())
        .expect("the engine's comparison");
    assert_eq!(comparison.alignment, want.alignment);
    assert_eq!(comparison.target, want.target);
    for (got, w) in comparison.shares.iter().zip(&want.shares) {
        assert_eq!((got.a, got.b), (w.a, w.b));
        assert!((got.change - w.change).abs() <= 1e-12 * w.change.abs().max(1.0));
    }
    assert!(
        comparison.sum_rel_error <= 1e-10,
        "{}",
        comparison.sum_rel_error
    );
    let (ga, wa) = (
        comparison.principal_angles.as_ref().expect("one model"),
        want.principal_angles.as_ref().expect("one model"),
    );
    assert!(ga.iter().zip(wa).all(|(g, w)| (g - w).abs() <= 1e-9));
    assert_eq!(
        comparison.prediction.prob_a_of_top_b,
        want.prediction.prob_a_of_top_b
    );
    assert_eq!(comparison.layers, want.layers);
}
