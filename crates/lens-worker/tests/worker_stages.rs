//! The engine worker's run, natively: the stages arrive in order, and their
//! numbers are the engine's (exact reconstruction in f64, attribution that
//! sums to the logit, the spectrum the CLI's `analyze` reports).

use lens_engine::analysis::{AnalyzeOptions, Report};
use lens_engine::run::analyze;
use lens_engine::run::Session;
use lens_engine::{Model, Precision};
use lens_protocol::messages::RunRequest;
use lens_protocol::report::Extent;
use lens_protocol::report::{Layers, Part};
use lens_protocol::{Reply, Stage, SvdMode};
use lens_testkit::close;
use lens_testkit::per_run::once_per_run;
use lens_testkit::real_models::{model_path, GEMMA};
use lens_testkit::worker::{collect, replies_of, report_of, stages_of, words};
use lens_worker::run as worker;

fn gemma() -> Model {
    Model::load_path(&model_path(GEMMA)).expect("Gemma 3 270M")
}

/// The run that the tests below look at: short, since the run, the CLI's
/// analysis (with two layers' curves and the ordinary Jacobian) and the
/// on-demand stages each cost ∝ n².
const PROMPT: &str = "Marin is the";

fn run_request() -> RunRequest {
    RunRequest {
        job: 7,
        prompt: PROMPT.into(),
        precision: lens_protocol::Precision::F64,
        top: 5,
        extent: Extent::Full,
        svd: SvdMode::Auto,
        backend: Default::default(),
        pool: 1,
        target: None,
    }
}

/// The worker's replies to [`run_request`], computed once per test run;
/// `session` is filled where this process is the one that ran it.
fn shared_run(session: &mut Option<Session>) -> Vec<Reply> {
    once_per_run(
        "run",
        |r: &Vec<Reply>| serde_json::to_vec(r).expect("replies to JSON"),
        |b| serde_json::from_slice(b).expect("replies from JSON"),
        || {
            let (replies, result) = collect(&gemma(), &run_request(), session);
            assert!(result.is_ok(), "{:?}", result.err());
            replies
        },
    )
}

/// The CLI's analysis of the same prompt, with its default options (the
/// page's) and two layers' curves, computed once per test run.
fn cli_report() -> Report {
    once_per_run(
        "cli",
        |r: &Report| serde_json::to_vec(r).expect("report to JSON"),
        |b| serde_json::from_slice(b).expect("report from JSON"),
        || {
            let mut opts = AnalyzeOptions::new(Precision::F64);
            opts.layers = vec![1, 2];
            analyze(&gemma(), PROMPT, &opts).expect("analyze")
        },
    )
}

/// The Report as a document without its timings: every other field, as
/// the page exports it and `analyze --json` writes it.
fn without_timings(r: &Report) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| k != "ms" && !k.ends_with("_ms"));
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(r).expect("report to JSON");
    strip(&mut v);
    v
}

/// The page's Report (the worker's replies, folded as the page folds them) and the CLI's `analyze` are one document
/// for the same model, prompt and options, field by field, timings aside:
/// both are the engine's one run driver.
#[test]
fn the_pages_report_is_the_clis_document() {
    // The shared run's replies have crossed a process boundary as JSON
    // text, each one as the worker sent it.
    let page = report_of(&shared_run(&mut None));
    let cli = analyze(&gemma(), PROMPT, &AnalyzeOptions::new(Precision::F64)).expect("analyze");
    let (page, cli) = (without_timings(&page), without_timings(&cli));
    if page != cli {
        let (p, c) = (page.as_object().unwrap(), cli.as_object().unwrap());
        let differ: Vec<&String> = p.keys().filter(|k| p.get(*k) != c.get(*k)).collect();
        panic!("the page's Report differs from the CLI's in {differ:?}");
    }
    // Not an empty document: every stage of a full run is in it.
    for field in ["svd", "decode", "columns", "attention", "attribution"] {
        assert!(!page[field].is_null(), "{field}");
    }
    assert!(page["reconstruction"]["ordinary_rel_error"].is_number());
    assert!(page["reconstruction"]["other_precision_rel_error"].is_number());
}

#[test]
fn stages_arrive_in_order_with_progress() {
    let replies = shared_run(&mut None);
    let kinds = stages_of(&replies);
    assert_eq!(
        kinds,
        [
            "prediction",
            "shares",
            "contributions",
            "ordinary",
            "jacobian",
            "spectra",
            "attention",
            "done"
        ]
    );
    // The Jacobian stage reports progress layer by layer, up to done = total.
    let layers = gemma().config.layers;
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
    assert_eq!(jac_steps.len(), layers + 1, "{jac_steps:?}");
    assert_eq!(jac_steps.last(), Some(&(layers, layers)));
}

/// The shares by one transpose pass (`(w_tᵀ J_i) · x_i`, no `c_i`) are the
/// contributions' (`w_t · c_i`, by forward mode) to f64 rounding: Gemma 3
/// 270M, f64, both sum to the logit within 1e-14.
#[test]
fn shares_by_one_transpose_pass_are_the_contributions_attribution() {
    let replies = shared_run(&mut None);
    let (mut shares, mut by_c) = (None, None);
    for r in &replies {
        match r {
            Reply::Part {
                part: Part::Shares(s),
                ..
            } => shares = Some(s.attribution.clone()),
            Reply::Part {
                part: Part::Contributions(c),
                ..
            } => by_c = Some(c.attribution.clone()),
            _ => {}
        }
    }
    let (s, c) = (shares.expect("shares"), by_c.expect("contributions"));
    assert_eq!(s.target_id, c.target_id);
    assert_eq!(s.logit, c.logit);
    assert_eq!(s.per_token.len(), c.per_token.len());
    let worst = s
        .per_token
        .iter()
        .zip(&c.per_token)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / s.logit.abs();
    println!(
        "shares {:?} vs contributions {:?}: worst {worst:.2e} of the logit {}, sums {:.1e} / {:.1e}",
        s.per_token, c.per_token, s.logit, s.sum_rel_error, c.sum_rel_error
    );
    assert!(worst < 1e-13, "{worst:e}");
    assert!(s.sum_rel_error < 1e-14 && c.sum_rel_error < 1e-14);
}

#[test]
fn the_folded_report_is_the_clis_analysis() {
    let replies = shared_run(&mut None);
    let report = cli_report();
    let page = report_of(&replies);
    assert_eq!(page.tokens, report.tokens);
    assert_eq!(page.attribution.per_token.len(), report.tokens.len());
    for (a, b) in page
        .attribution
        .per_token
        .iter()
        .zip(&report.attribution.per_token)
    {
        assert!(close(*a, *b, 1e-9), "attribution {a} vs {b}");
    }
    let (ps, cs) = (
        page.svd.as_ref().expect("svd"),
        report.svd.as_ref().expect("svd"),
    );
    for (a, b) in ps.per_token.iter().zip(&cs.per_token) {
        assert!(close(a.stable_rank, b.stable_rank, 1e-9));
        for (x, y) in a.singular_values.iter().zip(&b.singular_values) {
            assert!(close(*x, *y, 1e-9), "σ(J_i) {x} vs {y}");
        }
    }
    let (pd, cd) = (
        page.decode.as_ref().expect("decode"),
        report.decode.as_ref().expect("decode"),
    );
    assert_eq!(pd.concat.len(), 5);
    for (a, b) in pd
        .concat
        .iter()
        .chain(&pd.last_token)
        .zip(cd.concat.iter().chain(&cd.last_token))
    {
        assert_eq!(words(&a.u_tokens), words(&b.u_tokens));
        assert_eq!(words(&a.v_tokens), words(&b.v_tokens));
        assert_eq!(a.v_position, b.v_position);
    }
    let (pc, cc) = (
        page.columns.as_ref().expect("columns"),
        report.columns.as_ref().expect("columns"),
    );
    assert_eq!(
        pc.columns.iter().map(|l| l.index).collect::<Vec<_>>(),
        cc.columns.iter().map(|l| l.index).collect::<Vec<_>>()
    );
    let (pa, ca) = (
        page.attention.as_ref().expect("attention"),
        report.attention.as_ref().expect("attention"),
    );
    assert_eq!(pa.len(), gemma().config.layers);
    for (x, y) in pa
        .iter()
        .flatten()
        .flatten()
        .flatten()
        .zip(ca.iter().flatten().flatten().flatten())
    {
        assert!((x - y).abs() <= 1e-12);
    }
}

#[test]
fn each_part_carries_exact_numbers() {
    let replies = shared_run(&mut None);
    let report = cli_report();
    for r in &replies {
        match r {
            Reply::Prediction { job, prediction } => {
                assert_eq!(*job, 7);
                assert_eq!(prediction.top[0].token, report.top[0].token);
                assert_eq!(prediction.tokens, report.tokens);
            }
            Reply::Part { part, .. } => match part {
                Part::Contributions(c) => {
                    let (sum, logit): (f64, f64) =
                        (c.attribution.per_token.iter().sum(), c.attribution.logit);
                    assert!(
                        (sum - logit).abs() <= 1e-10 * logit.abs(),
                        "{sum} vs {logit}"
                    );
                    assert!(c.attribution.sum_rel_error <= 1e-10);
                    assert!(c.rel_error <= 1e-13, "contributions f64 {}", c.rel_error);
                    let other = c.other_precision_rel_error.expect("the other precision");
                    assert!(other <= 1e-5, "contributions f32 {other}");
                    assert!(other > 1e-10, "the other precision is f32");
                }
                Part::Jacobian(j) => {
                    assert!(j.detached_rel_error <= 1e-13, "{}", j.detached_rel_error);
                    assert_eq!(j.fro_norms.len(), report.tokens.len());
                }
                Part::Spectra(sp) => {
                    let got = &sp.svd.as_ref().expect("svd").concat;
                    let want = &report.svd.as_ref().expect("svd").concat;
                    assert_eq!(got.singular_values.len(), 16);
                    for (a, b) in got.singular_values.iter().zip(&want.singular_values) {
                        assert!((a - b).abs() <= 1e-9 * b, "σ {a} vs {b}");
                    }
                    assert!((got.stable_rank - want.stable_rank).abs() <= 1e-9 * want.stable_rank);
                }
                Part::Ordinary(o) => {
                    let want = report.reconstruction.ordinary_rel_error.expect("ordinary");
                    assert!(
                        (o.rel_error - want).abs() <= 1e-9 * want,
                        "{} vs {want}",
                        o.rel_error
                    );
                    assert!(o.rel_error > 0.1);
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Layers and the heatmap asked for after a run reuse what the run kept (its
/// trace, J and the path's axes), and equal the CLI's. (Named to sort first:
/// nextest starts it before the others, so its run is usually the shared one.)
#[test]
fn a_run_is_reused_by_layers_and_the_heatmap() {
    let model = gemma();
    let mut session = None;
    shared_run(&mut session);
    if session.is_none() {
        // Another test ran the shared run: this one needs the run in memory.
        let (_, result) = collect(&model, &run_request(), &mut session);
        assert!(result.is_ok(), "{:?}", result.err());
    }
    let report = cli_report();
    let prompt = PROMPT;
    let cc = report.columns.as_ref().expect("columns");
    // On demand: the layers' curves and the path equal the CLI's.
    let (lr, res) = replies_of(|emit, now| {
        worker::layers(
            &model,
            8,
            prompt,
            Precision::F64,
            &[1, 2],
            emit,
            now,
            &mut session,
        )
    });
    assert!(res.is_ok(), "{:?}", res.err());
    let Some(Layers { layers, path, .. }) = lr.iter().find_map(|r| match r {
        Reply::Part {
            part: Part::Layers(l),
            ..
        } => Some(l),
        _ => None,
    }) else {
        panic!("no layers reply");
    };
    assert_eq!(layers.len(), report.layers.len());
    for (a, b) in layers.iter().zip(&report.layers) {
        assert_eq!((a.layer, a.kind, &a.mode), (b.layer, b.kind, &b.mode));
        assert!(close(a.stable_rank, b.stable_rank, 1e-9), "{a:?} vs {b:?}");
        assert_eq!(words(&a.logit_lens_tokens), words(&b.logit_lens_tokens));
        assert_eq!(
            a.u_tokens.iter().map(|t| words(t)).collect::<Vec<_>>(),
            b.u_tokens.iter().map(|t| words(t)).collect::<Vec<_>>()
        );
    }
    assert_eq!(path.len(), 2);
    for (a, b) in path.iter().zip(&report.path) {
        assert!(
            (a.x - b.x).abs() <= 1e-9 && (a.y - b.y).abs() <= 1e-9,
            "{a:?} vs {b:?}"
        );
    }
    let layer_steps = lr
        .iter()
        .filter(|r| {
            matches!(
                r,
                Reply::Progress {
                    stage: Stage::Layers,
                    ..
                }
            )
        })
        .count();
    assert!(layer_steps >= 12, "{layer_steps} progress replies");

    // The heatmap of the last token's J_i, and its columns as the CLI's.
    let n = report.tokens.len();
    let (ir, res) = replies_of(|emit, now| {
        worker::inspect(
            &model,
            9,
            prompt,
            Precision::F64,
            n - 1,
            emit,
            now,
            &mut session,
        )
    });
    assert!(res.is_ok(), "{:?}", res.err());
    let Some(Reply::Inspect {
        heatmap, columns, ..
    }) = ir.iter().find(|r| matches!(r, Reply::Inspect { .. }))
    else {
        panic!("no inspect reply");
    };
    assert_eq!((heatmap.rows, heatmap.cols), (64, 64));
    assert_eq!(heatmap.values.len(), 64 * 64);
    let top = heatmap.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_eq!(top, heatmap.max_abs);
    assert_eq!(columns, cc);
    assert!(
        ir.iter().all(|r| !matches!(
            r,
            Reply::Progress {
                stage: Stage::Jacobian,
                ..
            }
        )),
        "J is kept from the run"
    );
    let (_, res) = replies_of(|emit, now| {
        worker::inspect(
            &model,
            9,
            prompt,
            Precision::F64,
            n,
            emit,
            now,
            &mut session,
        )
    });
    assert!(res.is_err(), "a position past the prompt");
}
