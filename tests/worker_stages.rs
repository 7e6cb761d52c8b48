//! The engine worker's run, natively: the stages arrive in order, and their
//! numbers are the engine's (exact reconstruction in f64, attribution that
//! sums to the logit, the spectrum the CLI's `analyze` reports).

use lens_engine::analysis::{analyze, AnalyzeOptions};
use lens_engine::{Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::{Reply, Stage};
use lens_worker::stages;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

fn gemma() -> Model {
    let dir = std::env::var_os("LINEAR_LENS_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/linear-lens")
        });
    Model::load_path(&dir.join("gemma-3-270m-q4_k_m.gguf"))
        .expect("Gemma 3 270M (tools/fetch-models.sh)")
}

fn collect(model: &Model, req: &RunRequest) -> (Vec<Reply>, Result<(), stages::Failure>) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let t0 = std::time::Instant::now();
    let result = stages::run(
        model,
        req,
        Rc::new(move |r| s.borrow_mut().push(r)),
        &|| t0.elapsed().as_secs_f64() * 1e3,
    );
    let replies = seen.borrow().clone();
    (replies, result)
}

#[test]
fn stages_arrive_in_order_with_exact_numbers() {
    let model = gemma();
    let prompt = "The bridge out of Marin is the";
    let req = RunRequest {
        job: 7,
        prompt: prompt.into(),
        precision: lens_protocol::Precision::F64,
        top: 5,
        full: true,
    };
    let (replies, result) = collect(&model, &req);
    assert!(result.is_ok(), "{:?}", result.err());
    let kinds: Vec<&str> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Prediction { .. } => Some("prediction"),
            Reply::Contributions { .. } => Some("contributions"),
            Reply::Jacobian { .. } => Some("jacobian"),
            Reply::Spectrum { .. } => Some("spectrum"),
            Reply::Ordinary { .. } => Some("ordinary"),
            Reply::Done { .. } => Some("done"),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "prediction",
            "contributions",
            "jacobian",
            "spectrum",
            "ordinary",
            "done"
        ]
    );
    // The Jacobian stage reports progress layer by layer, up to done = total.
    let jac_steps: Vec<(usize, usize)> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Progress {
                stage: Stage::Jacobian,
                done,
                total,
                ..
            } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(jac_steps.len(), model.config.layers + 1, "{jac_steps:?}");
    assert_eq!(
        jac_steps.last(),
        Some(&(model.config.layers, model.config.layers))
    );

    // The CLI's analysis of the same prompt.
    let mut opts = AnalyzeOptions::new(Precision::F64);
    opts.svd = stages::SPECTRUM_KEEP;
    (opts.decode, opts.columns, opts.attention) = (0, 0, false);
    let report = analyze(&model, prompt, &opts, &|| 0.0).expect("analyze");
    for r in &replies {
        match r {
            Reply::Prediction {
                job, top, tokens, ..
            } => {
                assert_eq!(*job, 7);
                assert_eq!(top[0].token, report.top[0].token);
                assert_eq!(tokens, &report.tokens);
            }
            Reply::Contributions {
                per_token,
                logit,
                attribution_sum_rel_error,
                rel_error,
                other_precision_rel_error,
                ..
            } => {
                let sum: f64 = per_token.iter().map(|t| t.attribution).sum();
                assert!(
                    (sum - logit).abs() <= 1e-10 * logit.abs(),
                    "{sum} vs {logit}"
                );
                assert!(*attribution_sum_rel_error <= 1e-10);
                assert!(*rel_error <= 1e-13, "contributions f64 {rel_error}");
                assert!(
                    *other_precision_rel_error <= 1e-5,
                    "contributions f32 {other_precision_rel_error}"
                );
                assert!(
                    *other_precision_rel_error > 1e-10,
                    "the other precision is f32"
                );
            }
            Reply::Jacobian {
                detached_rel_error,
                fro_norms,
                ..
            } => {
                assert!(*detached_rel_error <= 1e-13, "{detached_rel_error}");
                assert_eq!(fro_norms.len(), report.tokens.len());
            }
            Reply::Spectrum {
                singular_values,
                stable_rank,
                ..
            } => {
                let want = &report.svd.as_ref().expect("svd").concat;
                assert_eq!(singular_values.len(), stages::SPECTRUM_KEEP);
                for (a, b) in singular_values.iter().zip(&want.singular_values) {
                    assert!((a - b).abs() <= 1e-9 * b, "σ {a} vs {b}");
                }
                assert!((stable_rank - want.stable_rank).abs() <= 1e-9 * want.stable_rank);
            }
            Reply::Ordinary {
                ordinary_rel_error, ..
            } => {
                let want = report.reconstruction.ordinary_rel_error.expect("ordinary");
                assert!(
                    (ordinary_rel_error - want).abs() <= 1e-9 * want,
                    "{ordinary_rel_error} vs {want}"
                );
                assert!(*ordinary_rel_error > 0.1);
            }
            _ => {}
        }
    }
}

#[test]
fn bad_prompts_fail_with_a_sentence_and_stop_early() {
    let model = gemma();
    let mut req = RunRequest {
        job: 1,
        prompt: "   ".into(),
        precision: lens_protocol::Precision::F32,
        top: 5,
        full: false,
    };
    let (replies, result) = collect(&model, &req);
    let err = result.expect_err("empty prompt");
    assert_eq!(err.kind, lens_protocol::ErrorKind::BadPrompt);
    assert!(err.message.contains("empty"), "{}", err.message);
    assert!(replies.is_empty());
    // Without `full`, the run ends after the contributions.
    req.prompt = "Hello world".into();
    let (replies, result) = collect(&model, &req);
    assert!(result.is_ok());
    assert!(matches!(replies.last(), Some(Reply::Done { job: 1, .. })));
    assert!(!replies.iter().any(|r| matches!(r, Reply::Jacobian { .. })));
}
