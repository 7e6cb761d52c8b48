//! Two runs compared on the real models: on Gemma 3 270M in f64 a one-word
//! substitution, insertion and deletion line up as such, each side's shares
//! sum to its logit (≤ 1e-12 relative) and their change to the logit's change
//! (≤ 1e-10); the same pair in f32 states its error; the principal angles
//! between the two runs' subspaces obey their definition; Gemma against
//! SmolLM2 on one sentence lines up by characters.

use lens_engine::analysis::compare::{principal_angles, Comparison, Side};
use lens_engine::analysis::{AnalyzeOptions, Extent};
use lens_engine::forward::Precision;
use lens_engine::run::{compare_to, quiet, run_side};
use lens_engine::Model;
use lens_report::AlignOp;
use lens_testkit::per_run::once_per_run;
use lens_testkit::real_models::{model_path, GEMMA, SMOLLM};
use std::sync::OnceLock;

const A: &str = "The capital of France is";

fn gemma() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load_path(&model_path(GEMMA)).expect("gemma loads"))
}

/// The contributions, no `J`: what the alignment and the logit need.
fn shares_only(precision: Precision) -> AnalyzeOptions {
    AnalyzeOptions {
        extent: Extent::Contributions,
        ..AnalyzeOptions::new(precision)
    }
}

/// With `J`: the spectra, 8 left singular vectors, 3 decoded.
fn with_j() -> AnalyzeOptions {
    AnalyzeOptions {
        svd: 8,
        decode: 3,
        ordinary: false,
        attention: false,
        columns: 0,
        ..AnalyzeOptions::new(Precision::F64)
    }
}

/// Prompt A's side in f64 with `J`, run once and kept (as the page pins A).
fn pinned() -> &'static Side {
    static A_SIDE: OnceLock<Side> = OnceLock::new();
    // Shared by this run's test processes (JSON round-trips every f64).
    A_SIDE.get_or_init(|| {
        once_per_run(
            "compare-side-a",
            |s: &Side| serde_json::to_vec(s).expect("side to JSON"),
            |bytes| serde_json::from_slice(bytes).expect("side from JSON"),
            || run_side(gemma(), A, &with_j(), &quiet()).expect("run A"),
        )
    })
}

/// B against the pinned A, on Gemma.
fn against_a(b_prompt: &str, opts: &AnalyzeOptions) -> (Side, Comparison) {
    compare_to(pinned(), gemma(), None, b_prompt, opts, &quiet()).expect("compare")
}

fn ops(c: &Comparison) -> Vec<AlignOp> {
    c.alignment.iter().map(|a| a.op).collect()
}

/// Each side's shares sum to its logit; the rows' changes to the logit's.
fn exact(c: &Comparison, bound_side: f64, bound_change: f64) {
    let t = &c.target;
    let sa: f64 = c.shares.iter().filter_map(|r| r.share_a).sum();
    let sb: f64 = c.shares.iter().filter_map(|r| r.share_b).sum();
    let change: f64 = c.shares.iter().map(|r| r.change).sum();
    eprintln!(
        "{:?}: logit {:.6} → {:.6}; Σ shares rel error A {:.1e} B {:.1e}; change {:.1e}",
        t.token, t.logit_a, t.logit_b, c.shares_rel_error_a, c.shares_rel_error_b, c.sum_rel_error
    );
    assert!((sa - t.logit_a).abs() <= bound_side * t.logit_a.abs());
    assert!((sb - t.logit_b).abs() <= bound_side * t.logit_b.abs());
    assert!(c.shares_rel_error_a <= bound_side && c.shares_rel_error_b <= bound_side);
    let want = t.logit_b - t.logit_a;
    assert!(
        (change - want).abs() <= bound_change * want.abs(),
        "{change} vs {want}"
    );
    assert!(c.sum_rel_error <= bound_change, "{}", c.sum_rel_error);
}

#[test]
fn one_word_substituted_inserted_deleted_on_gemma_f64() {
    use AlignOp::*;
    let a = pinned();
    // <bos> The capital of France is → … Italy … (with J: the subspaces).
    let (b, c) = against_a("The capital of Italy is", &with_j());
    assert_eq!(ops(&c), [Keep, Keep, Keep, Keep, Substitute, Keep]);
    assert_eq!(b.report.tokens[4], " Italy");
    // Both attribute A's prediction.
    assert_eq!(c.target.id, a.report.top[0].id);
    assert_eq!(b.report.attribution.target_id, c.target.id);
    exact(&c, 1e-12, 1e-10);
    // Each side's probability of the other's top token is its own softmax.
    let p = c.prediction.prob_b_of_top_a.expect("one vocabulary");
    if let Some(t) = b.report.top.iter().find(|t| t.id == a.report.top[0].id) {
        assert!((p - t.prob).abs() <= 1e-12, "{p} vs {}", t.prob);
    }
    assert!(p > 0.0 && p < 1.0);
    principal_angles_obey_their_definition(a, &b, &c);

    // The others without J: an insertion, a deletion.
    let opts = shares_only(Precision::F64);
    let (b, c) = against_a("The old capital of France is", &opts);
    assert_eq!(ops(&c), [Keep, Keep, Insert, Keep, Keep, Keep, Keep]);
    assert_eq!(b.report.tokens[2], " old");
    assert_eq!(c.shares[2].share_a, None);
    assert_eq!(c.principal_angles, None, "B formed no J");
    exact(&c, 1e-12, 1e-10);

    let (_, c) = against_a("The capital France is", &opts);
    assert_eq!(ops(&c), [Keep, Keep, Keep, Delete, Keep, Keep]);
    assert_eq!(c.shares[3].share_b, None);
    exact(&c, 1e-12, 1e-10);
}

#[test]
fn the_same_pair_in_f32_states_its_error() {
    let (_, c) = against_a("The capital of Italy is", &shares_only(Precision::F32));
    // A in f64, B in f32: f32 rounding, stated, not hidden.
    assert!(c.sum_rel_error.is_finite() && c.sum_rel_error > 0.0);
    exact(&c, 1e-5, 1e-3);
}

fn principal_angles_obey_their_definition(a: &Side, b: &Side, c: &Comparison) {
    let angles = c.principal_angles.as_ref().expect("one model");
    eprintln!(
        "principal angles (deg): {:?}",
        angles.iter().map(|x| x.to_degrees()).collect::<Vec<_>>()
    );
    assert_eq!(angles.len(), 8);
    assert!(angles.windows(2).all(|w| w[0] <= w[1] + 1e-12));
    assert!(angles
        .iter()
        .all(|&x| (0.0..=std::f64::consts::FRAC_PI_2).contains(&x)));
    // The first principal angle is the least angle between any two unit
    // vectors of the spans: no larger than the one between any u_a and u_b.
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    for ua in &a.u {
        for ub in &b.u {
            assert!(angles[0] <= dot(ua, ub).abs().min(1.0).acos() + 1e-12);
        }
    }
    // A run against itself: every angle 0.
    let same = principal_angles(&a.u, &a.u).unwrap().unwrap();
    assert!(same.iter().all(|&x| x.abs() < 1e-12), "{same:?}");
    assert_eq!(
        c.spectra.sigma_a,
        a.report.svd.as_ref().unwrap().concat.singular_values
    );
    assert_eq!(c.words.len(), 3);
    assert!(c
        .shared_words
        .iter()
        .all(|w| c.words.iter().any(|p| p.a.iter().any(|x| x.trim() == w))));
}

#[test]
fn gemma_against_smollm2_lines_up_by_characters() {
    let smol = Model::load_path(&model_path(SMOLLM)).expect("smollm loads");
    let (b, c) = compare_to(
        pinned(),
        gemma(),
        Some(&smol),
        A,
        &shares_only(Precision::F64),
        &quiet(),
    )
    .expect("compare");
    let a = pinned();
    eprintln!(
        "A {:?}\nB {:?}\n{:?}",
        a.report.tokens,
        b.report.tokens,
        ops(&c)
    );
    assert_eq!(c.aligned_by, lens_report::AlignBy::Characters);
    assert!(c.principal_angles.is_none());
    // Every token of each side once, in order; each text token of A that
    // SmolLM2 splits the same way is kept.
    let seen_a: Vec<usize> = c.alignment.iter().filter_map(|x| x.a).collect();
    let seen_b: Vec<usize> = c.alignment.iter().filter_map(|x| x.b).collect();
    assert_eq!(seen_a, (0..a.report.tokens.len()).collect::<Vec<_>>());
    assert_eq!(seen_b, (0..b.report.tokens.len()).collect::<Vec<_>>());
    for al in &c.alignment {
        if let (Some(i), Some(j), AlignOp::Keep) = (al.a, al.b, al.op) {
            assert_eq!(a.report.tokens[i], b.report.tokens[j]);
            assert_eq!(a.report.spans[i], b.report.spans[j]);
        }
    }
    let kept = c.alignment.iter().filter(|x| x.op == AlignOp::Keep).count();
    assert_eq!(
        kept,
        5,
        "The| capital| of| France| is in both: {:?}",
        ops(&c)
    );
    // One target, named by its text in both vocabularies.
    assert_eq!(
        a.report.attribution.target_token,
        b.report.attribution.target_token
    );
    exact(&c, 1e-12, 1e-6);
}
