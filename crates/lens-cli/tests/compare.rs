//! `linear-lens compare` end to end on tiny random models: the document's
//! shape, the alignment of a one-word substitution, the shares' exact sum,
//! two models lined up by characters, and the errors a user meets.

use lens_testkit::{tiny_hf_dir, Family, Spec};
use serde_json::json;
mod common;
use common::{assert_clean_error, json_of, num, run};

#[test]
fn one_word_changed_on_one_model() {
    let spec = Spec::new(Family::Llama);
    let dir = tiny_hf_dir("cli-compare-one", &spec, json!({}));
    let model = dir.to_str().unwrap();
    let pair = [
        "compare",
        "--model",
        model,
        "--prompt",
        "w5 w9 w14 w20",
        "--prompt-b",
        "w5 w9 w30 w20",
    ];
    let args = [&pair[..], &["--svd", "4", "--decode", "2", "--layers", "1"]].concat();
    let doc = json_of(&[&args[..], &["--json", "-"]].concat());
    let (a, b, c) = (&doc["a"], &doc["b"], &doc["comparison"]);
    assert_eq!(c["same_model"], true);
    assert_eq!(c["aligned_by"], "ids");
    // BOS, w5, w9 kept; w14 → w30; w20 kept.
    let ops: Vec<&str> = c["alignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["op"].as_str().unwrap())
        .collect();
    let n = a["token_ids"].as_array().unwrap().len();
    assert_eq!(ops.len(), n);
    assert_eq!(ops[n - 2], "substitute", "{ops:?}");
    assert!(
        ops.iter()
            .enumerate()
            .all(|(i, op)| i == n - 2 || *op == "keep"),
        "{ops:?}"
    );
    // Both sides attribute the same token: A's prediction.
    let t = &c["target"];
    assert_eq!(t["id"], a["top"][0]["id"]);
    assert_eq!(b["attribution"]["target_id"], t["id"]);
    let (la, lb) = (num(&t["logit_a"]), num(&t["logit_b"]));
    assert_eq!(la, num(&a["attribution"]["logit"]));
    assert_eq!(lb, num(&b["attribution"]["logit"]));
    // The rows' shares sum to each side's logit, their change to the logit's.
    let rows = c["shares"].as_array().unwrap();
    let sum = |k: &str| {
        rows.iter()
            .map(|r| r[k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    assert!((sum("share_a") - la).abs() <= 1e-12 * la.abs().max(1.0));
    assert!((sum("share_b") - lb).abs() <= 1e-12 * lb.abs().max(1.0));
    assert!((sum("change") - (lb - la)).abs() <= 1e-10 * (lb - la).abs().max(1e-3));
    assert!(num(&c["sum_rel_error"]) <= 1e-10, "{}", c["sum_rel_error"]);
    // One model: principal angles, in [0, π/2], ascending.
    let angles: Vec<f64> = c["principal_angles"]
        .as_array()
        .unwrap()
        .iter()
        .map(num)
        .collect();
    assert_eq!(angles.len(), 4);
    assert!(angles.windows(2).all(|w| w[0] <= w[1] + 1e-12));
    assert!(angles
        .iter()
        .all(|x| (0.0..=std::f64::consts::FRAC_PI_2 + 1e-12).contains(x)));
    assert_eq!(
        c["spectra"]["sigma_a"],
        a["svd"]["concat"]["singular_values"]
    );
    assert_eq!(
        c["layers"]["a"].as_array().unwrap().len(),
        a["layers"].as_array().unwrap().len()
    );
    // The summary on the terminal names the change.
    let out = run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("substitute") && text.contains("principal angles"),
        "{text}"
    );
}

#[test]
fn two_models_line_up_by_characters() {
    let (sa, sb) = (Spec::new(Family::Llama), Spec::new(Family::Qwen3));
    let (da, db) = (
        tiny_hf_dir("cli-compare-a", &sa, json!({})),
        tiny_hf_dir("cli-compare-b", &sb, json!({})),
    );
    let doc = json_of(&[
        "compare",
        "--model",
        da.to_str().unwrap(),
        "--model-b",
        db.to_str().unwrap(),
        "--prompt",
        "w5 w9 w14",
        "--svd",
        "2",
        "--decode",
        "1",
        "--json",
        "-",
    ]);
    let c = &doc["comparison"];
    assert_eq!(c["same_model"], false);
    assert_eq!(c["aligned_by"], "characters");
    assert!(
        c["principal_angles"].is_null(),
        "two models: no shared output space"
    );
    // Every token of each side once, in order.
    for side in ["a", "b"] {
        let n = doc[side]["token_ids"].as_array().unwrap().len();
        let seen: Vec<u64> = c["alignment"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x[side].as_u64())
            .collect();
        assert_eq!(seen, (0..n as u64).collect::<Vec<_>>(), "{side}");
    }
    assert!(num(&c["sum_rel_error"]).is_finite());
}

#[test]
fn a_comparison_needs_a_second_prompt_or_model() {
    let spec = Spec::new(Family::Llama);
    let dir = tiny_hf_dir("cli-compare-bad", &spec, json!({}));
    let model = dir.to_str().unwrap();
    let base = ["compare", "--model", model, "--prompt", "w5 w9"];
    assert_clean_error(&run(&base), "--prompt-b");
    let bad_target = [&base[..], &["--prompt-b", "w5", "--target", "two words"]].concat();
    assert_clean_error(&run(&bad_target), "single token");
}
