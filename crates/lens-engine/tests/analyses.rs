//! The analyses of the equivalent linear map on Gemma 3 270M (f64): SVDs that
//! rebuild each `J_i`, stable ranks from two formulas, singular values of
//! `J_cat` against an independent computation (torch's SVD of torch's own
//! Jacobian, tests/fixtures/svd/, made by `tools/torch_reference.py
//! --svd-fixture`), exact logit attribution, decoded singular vectors, and
//! tokens named by the user.

use candle_core::{DType, Device, Tensor};
use lens_engine::analysis::svd::{decompose_concat, decompose_token, jacobian_values, stable_rank};
use lens_engine::analysis::{AnalyzeOptions, Report};
use lens_engine::forward::Precision;
use lens_engine::jacobian::{detached_jacobian, PassOptions};
use lens_engine::run::analyze;
use lens_engine::trace::trace;
use lens_engine::Model;
use lens_testkit::per_run::{decode_f64s, encode_f64s, once_per_run};
use lens_testkit::real_models::{model_path, GEMMA};
use std::sync::OnceLock;

const PROMPT: &str = "The bridge out of Marin is the";

fn gemma() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load_path(&model_path(GEMMA)).expect("gemma loads"))
}

/// `J` of the prompt, `[n, d, d]` as f64 values.
fn jacobian() -> &'static (Vec<f64>, [usize; 3]) {
    static J: OnceLock<(Vec<f64>, [usize; 3])> = OnceLock::new();
    J.get_or_init(|| {
        once_per_run(
            "jacobian",
            |(values, dims): &(Vec<f64>, [usize; 3])| encode_f64s(dims, values),
            |bytes| {
                let (dims, values) = decode_f64s(bytes);
                let dims: [usize; 3] = dims.try_into().expect("[n, d, d]");
                (values, dims)
            },
            || {
                let m = gemma();
                let ids = m.encode(PROMPT).expect("encode");
                let tr = trace(m, &ids, Precision::F64).expect("trace");
                let (j, _) = detached_jacobian(m, &tr, PassOptions::default()).expect("J");
                jacobian_values(&j).expect("values")
            },
        )
    })
}

fn report() -> &'static Report {
    static R: OnceLock<Report> = OnceLock::new();
    R.get_or_init(|| {
        once_per_run(
            "report",
            |r: &Report| serde_json::to_vec(r).expect("report to JSON"),
            |bytes| serde_json::from_slice(bytes).expect("report from JSON"),
            || {
                let opts = AnalyzeOptions {
                    ordinary: false,
                    target: Some(" bridge".into()),
                    ..AnalyzeOptions::new(Precision::F64)
                };
                analyze(gemma(), PROMPT, &opts).expect("analyze")
            },
        )
    })
}

fn fro(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn svd_rebuilds_every_token_jacobian_and_stable_ranks_agree() {
    let (values, dims) = jacobian();
    let [n, d, _] = *dims;
    for i in 0..n {
        let dec = decompose_token(values, *dims, i, d, None).expect("svd");
        let u: Vec<f64> = (0..d)
            .flat_map(|r| dec.u.iter().map(move |uk| uk[r]))
            .collect();
        let vt: Vec<f64> = dec.v.iter().flatten().copied().collect();
        let u = Tensor::from_vec(u, (d, d), &Device::Cpu).unwrap();
        let s = Tensor::from_slice(&dec.singular_values, (1, d), &Device::Cpu).unwrap();
        let vt = Tensor::from_vec(vt, (d, d), &Device::Cpu).unwrap();
        let rebuilt = u.broadcast_mul(&s).unwrap().matmul(&vt).unwrap();
        let ji = &values[i * d * d..(i + 1) * d * d];
        let ji_t = Tensor::from_slice(ji, (d, d), &Device::Cpu).unwrap();
        let diff: Vec<f64> = (rebuilt - ji_t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = fro(&diff) / fro(ji);
        eprintln!("J_{i} rebuilt from its SVD: {err:.2e}");
        assert!(err <= 1e-12, "J_{i} rebuilt from its SVD: {err:e}");
        // ‖J‖_F² / σ₁² from the values themselves and from the spectrum.
        let s1 = dec.singular_values[0];
        let direct = fro(ji).powi(2) / (s1 * s1);
        let from_s = stable_rank(&dec.singular_values);
        let rel = (direct - from_s).abs() / direct;
        assert!(rel <= 1e-12, "stable rank of J_{i}: {direct} vs {from_s}");
        assert!(from_s >= 1.0 && from_s <= d as f64);
    }
}

#[derive(serde::Deserialize)]
struct SvdFixture {
    token_ids: Vec<u32>,
    concat_singular_values: Vec<f64>,
    per_token_singular_values: Vec<Vec<f64>>,
}

#[test]
fn singular_values_match_torch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/svd/gemma-3-270m.json"
    );
    let fx: SvdFixture = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
        .expect("fixture parses");
    let ids = gemma().encode(PROMPT).unwrap();
    assert_eq!(ids, fx.token_ids, "same tokens as the fixture");
    let (values, dims) = jacobian();
    let check = |ours: &[f64], theirs: &[f64], what: &str| {
        assert_eq!(ours.len(), theirs.len(), "{what}");
        let s1 = theirs[0];
        for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
            // Per value where it is well above rounding, against σ₁ below.
            let rel = (a - b).abs() / if k < 64 { *b } else { s1 };
            assert!(
                rel <= 1e-6,
                "{what} σ_{}: ours {a} torch {b} ({rel:e})",
                k + 1
            );
        }
    };
    let cat = decompose_concat(values, *dims, 0, None).expect("svd of J_cat");
    check(&cat.singular_values, &fx.concat_singular_values, "J_cat");
    for (i, theirs) in fx.per_token_singular_values.iter().enumerate() {
        let dec = decompose_token(values, *dims, i, 0, None).expect("svd");
        check(&dec.singular_values, theirs, &format!("J_{i}"));
    }
    // The report carries the same spectra.
    let r = report();
    let svd = r.svd.as_ref().expect("svd in report");
    let top = &svd.concat.singular_values;
    check(top, &fx.concat_singular_values[..top.len()], "report J_cat");
    let sr = stable_rank(&fx.concat_singular_values);
    assert!((svd.concat.stable_rank - sr).abs() / sr <= 1e-6);
}

#[test]
fn attribution_sums_to_the_logit_exactly() {
    let r = report();
    let m = gemma();
    let ids = m.encode(PROMPT).unwrap();
    let logits = trace(m, &ids, Precision::F64).unwrap().logits(m).unwrap();
    // The named token and the predicted one.
    let named = &r.attribution;
    assert_eq!(named.target_token, " bridge");
    let predicted = r
        .attribution_predicted
        .as_ref()
        .expect("prediction attributed too");
    assert_eq!(predicted.target_id, r.top[0].id);
    // The prediction and its logit against transformers' (an independent
    // forward of the same GGUF, f32: within its 1e-4 of the logits' scale).
    let (golden, theirs) = lens_testkit::golden::golden_logits(GEMMA);
    let k = golden
        .entries
        .iter()
        .position(|e| e.prompt == PROMPT)
        .expect("the prompt is a golden one");
    assert_eq!(predicted.target_id as usize, golden.entries[k].argmax);
    let scale = theirs[k].iter().fold(0f64, |m, v| m.max(v.abs()));
    for a in [named, predicted] {
        let reference = theirs[k][a.target_id as usize];
        assert!(
            (a.logit - reference).abs() <= 1e-4 * scale,
            "{:?}: logit {} vs transformers {reference}",
            a.target_token,
            a.logit
        );
    }
    for a in [named, predicted] {
        let sum: f64 = a.per_token.iter().sum();
        let logit = logits[a.target_id as usize];
        assert!(
            (sum - logit).abs() / logit.abs() <= 1e-10,
            "{:?}: Σ w·c_i = {sum}, logit {logit}",
            a.target_token
        );
        assert!((a.logit - logit).abs() / logit.abs() <= 1e-12);
        assert!(a.sum_rel_error <= 1e-10);
        assert_eq!(a.per_token.len(), ids.len());
    }
    // Projections on y sum to ‖y‖.
    let y = trace(m, &ids, Precision::F64).unwrap().y_vec().unwrap();
    let total: f64 = r.per_token.iter().map(|t| t.projection_on_y).sum();
    assert!((total - fro(&y)).abs() / fro(&y) <= 1e-10);
}

#[test]
fn top_singular_vector_decodes_to_the_prediction() {
    let r = report();
    let d = r.decode.as_ref().expect("decode in report");
    assert_eq!(d.concat.len(), 5);
    assert_eq!(d.last_token.len(), 5);
    // The paper's observation: u₁ of J_cat, signed towards y, reads as the
    // predicted token.
    assert_eq!(d.concat[0].u_tokens[0].id, r.top[0].id, "{:?}", d.concat[0]);
    for p in d.concat.iter().chain(&d.last_token) {
        assert_eq!(p.u_tokens.len(), 5);
        assert!(p.u_tokens.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(p.v_tokens.iter().all(|t| t.score <= 1.0 + 1e-6));
    }
    assert!(d
        .last_token
        .iter()
        .all(|p| p.v_position == r.tokens.len() - 1));
    let svd = r.svd.as_ref().unwrap();
    assert!((d.concat[0].sigma - svd.concat.singular_values[0]).abs() <= 1e-12);
    let cols = r.columns.as_ref().expect("columns");
    assert_eq!(cols.columns.len(), 5);
    assert!(cols.columns.windows(2).all(|w| w[0].norm >= w[1].norm));
    let att = r.attention.as_ref().expect("attention");
    assert_eq!(att.len(), gemma().config.layers);
    for layer in att {
        for head in layer {
            for (q, row) in head.iter().enumerate() {
                let s: f64 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "softmax rows sum to 1");
                assert!(row[q + 1..].iter().all(|&p| p == 0.0), "causal");
            }
        }
    }
}

#[test]
fn named_tokens_resolve_or_fail_clearly() {
    let t = &gemma().tokenizer;
    let bridge = t.token_id(" bridge").expect("one token");
    assert_eq!(t.token_str(bridge), " bridge");
    assert_eq!(t.token_id("id:5").unwrap(), 5);
    let e = t.token_id("id:999999999").unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = t.token_id("id:x").unwrap_err().to_string();
    assert!(e.contains("not a token id"), "{e}");
    let e = t
        .token_id(" the bridge out of Marin")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokens") && e.contains("single token"), "{e}");
    let e = t.token_id("").unwrap_err().to_string();
    assert!(e.contains("no token"), "{e}");
}
