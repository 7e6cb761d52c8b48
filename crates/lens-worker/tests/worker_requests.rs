//! The worker's other requests, natively: a bad prompt fails with a
//! sentence before anything is said; a long prompt runs matrix-free as the
//! CLI's does; steering in the worker is the CLI's steering.

use lens_engine::analysis::steering::SteerOptions;
use lens_engine::analysis::{AnalyzeOptions, Report};
use lens_engine::run::{analyze, Limits};
use lens_engine::{Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Extent;
use lens_protocol::report::Part;
use lens_protocol::{Reply, Stage, SteerSpec, SvdMode};
use lens_testkit::real_models::{model_path, GEMMA};
use lens_testkit::worker::{collect, replies_of, report_of, stages_of, words};
use lens_testkit::{close, prompt, tiny_hf_dir, Family, Spec};
use lens_worker::run as worker;

fn gemma() -> Model {
    Model::load_path(&model_path(GEMMA)).expect("Gemma 3 270M")
}

#[test]
fn bad_prompts_fail_with_a_sentence_and_stop_early() {
    let model = gemma();
    let mut req = RunRequest {
        job: 1,
        prompt: "   ".into(),
        precision: lens_protocol::Precision::F32,
        top: 5,
        extent: Extent::Contributions,
        svd: SvdMode::Auto,
        backend: Default::default(),
        pool: 1,
        target: None,
    };
    let mut session = None;
    let (replies, result) = collect(&model, &req, &mut session);
    let err = result.expect_err("empty prompt");
    assert_eq!(err.kind, lens_protocol::ErrorKind::BadPrompt);
    assert!(err.message.contains("empty"), "{}", err.message);
    assert!(replies.is_empty());
    // Without `full`, the run ends after the contributions.
    req.prompt = "Hello world".into();
    let (replies, result) = collect(&model, &req, &mut session);
    assert!(result.is_ok());
    assert!(matches!(replies.last(), Some(Reply::Done { job: 1, .. })));
    assert!(!replies.iter().any(|r| matches!(
        r,
        Reply::Part {
            part: Part::Jacobian(_),
            ..
        }
    )));
}

#[test]
fn long_prompts_run_matrix_free_like_the_cli() {
    // A tiny random Gemma 3 (the Lanczos iterations are the same code on
    // any model; Gemma 3 270M's are checked against its exact SVD in
    // lens-engine's matrix_free test): the worker's and the CLI's runs.
    let spec = Spec::new(Family::Gemma3);
    let dir = tiny_hf_dir("worker-krylov", &spec, serde_json::json!({}));
    let model = Model::load_path(&dir).expect("tiny model");
    let text = prompt(8, 5, spec.vocab);
    let prompt = text.as_str();
    let req = RunRequest {
        job: 2,
        prompt: prompt.into(),
        precision: lens_protocol::Precision::F64,
        top: 5,
        extent: Extent::Full,
        svd: SvdMode::Krylov,
        backend: Default::default(),
        pool: 1,
        target: None,
    };
    let mut session = None;
    let (replies, result) = collect(&model, &req, &mut session);
    assert!(result.is_ok(), "{:?}", result.err());
    assert!(!replies.iter().any(|r| matches!(
        r,
        Reply::Part {
            part: Part::Jacobian(_),
            ..
        }
    )));
    assert!(replies.iter().any(|r| matches!(
        r,
        Reply::Progress {
            stage: Stage::Krylov,
            ..
        }
    )));
    let page = report_of(&replies);
    let mut opts = AnalyzeOptions::new(Precision::F64);
    opts.svd_mode = SvdMode::Krylov;
    let cli = analyze(&model, prompt, &opts).expect("analyze");
    // The ordinary error (one forward-mode pass) comes with long prompts too.
    let (a, b) = (
        page.reconstruction.ordinary_rel_error.expect("ordinary"),
        cli.reconstruction.ordinary_rel_error.expect("ordinary"),
    );
    assert!(close(a, b, 1e-9), "ordinary {a} vs {b}");
    let (a, b) = (
        page.matrix_free.as_ref().expect("mf"),
        cli.matrix_free.as_ref().expect("mf"),
    );
    assert_eq!(a.products, b.products);
    for (x, y) in a.singular_values.iter().zip(&b.singular_values) {
        assert!(close(*x, *y, 1e-9), "{x} vs {y}");
    }
    assert!(page.svd.is_none() && page.reconstruction.detached_rel_error.is_none());
    let words_of = |r: &Report| {
        r.decode
            .as_ref()
            .expect("decode")
            .concat
            .iter()
            .map(|p| words(&p.u_tokens).join("|"))
            .collect::<Vec<_>>()
    };
    assert_eq!(words_of(&page), words_of(&cli));

    // In auto mode a long prompt goes matrix-free and says why; a full J
    // that cannot fit is refused when asked for.
    let d = 640; // Gemma 3 270M's width
    let plan = |n, p, m| lens_engine::run::svd_plan(n, d, p, m, &Limits::TAB);
    assert_eq!(plan(8, Precision::F64, SvdMode::Auto).ok(), Some(None));
    let why = plan(
        lens_engine::run::LONG_PROMPT_TOKENS + 1,
        Precision::F32,
        SvdMode::Auto,
    )
    .ok()
    .flatten()
    .expect("long");
    assert!(why.contains("tokens"), "{why}");
    let why = plan(200, Precision::F64, SvdMode::Auto)
        .ok()
        .flatten()
        .expect("big");
    assert!(why.contains("MB"), "{why}");
    assert!(plan(200, Precision::F64, SvdMode::Full).is_err());
    assert!(plan(3, Precision::F64, SvdMode::Krylov)
        .ok()
        .flatten()
        .is_some());
}

#[test]
fn steering_in_the_worker_is_the_cli_steering() {
    let model = gemma();
    let spec = SteerSpec {
        source: "The bridge is the Golden".into(),
        text: "I went to new york to see the".into(),
        layer: Some(12),
        lambda: 1.0,
        tokens: 4,
    };
    let (replies, res) =
        replies_of(|emit, now| worker::steer(&model, 3, Precision::F32, &spec, emit, now));
    assert!(res.is_ok(), "{:?}", res.err());
    let steering = replies
        .iter()
        .find_map(|r| match r {
            Reply::Part {
                part: Part::Steered(s),
                ..
            } => Some(s.steering.clone()),
            _ => None,
        })
        .expect("steered");
    let mut so = SteerOptions::new(&model, &spec.source);
    (so.layer, so.lambda, so.tokens) = (12, 1.0, 4);
    let cli = lens_engine::analysis::steering::steer(
        &model,
        &spec.text,
        &so,
        Precision::F32,
        Default::default(),
    )
    .expect("steer");
    assert_eq!(steering.steered, cli.steered);
    assert_eq!(steering.unsteered, cli.unsteered);
    assert_ne!(steering.steered, steering.unsteered);
    let bad = SteerSpec {
        layer: Some(99),
        ..spec
    };
    let (_, res) =
        replies_of(|emit, now| worker::steer(&model, 4, Precision::F32, &bad, emit, now));
    let err = res.expect_err("layer 99");
    assert_eq!(err.kind, lens_protocol::ErrorKind::BadPrompt);
}

/// Typing's live run (`Extent::Shares`): the prediction and the shares,
/// nothing else, and the worker's kept run stays the last full one (the
/// page pins that one; the on-demand stages reuse it). Tiny Gemma 3.
#[test]
fn a_live_run_says_its_shares_and_keeps_the_last_full_run() {
    let spec = Spec::new(Family::Gemma3);
    let dir = tiny_hf_dir("worker-live", &spec, serde_json::json!({}));
    let model = Model::load_path(&dir).expect("tiny model");
    let request = |job, prompt: String, extent| RunRequest {
        job,
        prompt,
        precision: lens_protocol::Precision::F64,
        top: 5,
        extent,
        svd: SvdMode::Full,
        backend: Default::default(),
        pool: 1,
        target: None,
    };
    let full = prompt(6, 3, spec.vocab);
    let mut session = None;
    let (_, result) = collect(
        &model,
        &request(1, full.clone(), Extent::Full),
        &mut session,
    );
    assert!(result.is_ok(), "{:?}", result.err());
    let pinned = worker::pin(&model, &session).expect("pin").u;
    let typed = prompt(7, 4, spec.vocab);
    let n = model.encode(&typed).expect("tokens").len();
    let (replies, result) = collect(&model, &request(2, typed, Extent::Shares), &mut session);
    assert!(result.is_ok(), "{:?}", result.err());
    assert_eq!(stages_of(&replies), ["prediction", "shares", "done"]);
    let shares = report_of(&replies).attribution;
    assert_eq!(shares.per_token.len(), n);
    assert!(shares.sum_rel_error < 1e-12, "{:e}", shares.sum_rel_error);
    assert_eq!(
        session.as_ref().map(|s| s.prompt.as_str()),
        Some(full.as_str())
    );
    assert_eq!(worker::pin(&model, &session).expect("pin").u, pinned);
}
