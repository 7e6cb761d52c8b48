//! The engine's tokenizers against golden ids from an independent
//! implementation: Python `transformers` building its fast tokenizer from the
//! same GGUF files (`tools/golden_tokens.py` writes the fixture).
//!
//! The model files must be present (`tools/fetch-models.sh`); a missing file
//! fails the test rather than skipping it.

use lens_engine::tokenizer::LensTokenizer;
use lens_engine::weights::GgufFile;
use lens_engine::Model;
use lens_testkit::real_models::model_path;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

const GEMMA: (&str, &str) = ("gemma-3-270m", lens_testkit::real_models::GEMMA);
const SMOLLM: (&str, &str) = ("smollm2-135m", lens_testkit::real_models::SMOLLM);

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden_tokens.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run python3 tools/golden_tokens.py)"));
    serde_json::from_str(&text).expect("golden_tokens.json is valid JSON")
}

/// The golden strings and, for `model_id`, their ids.
fn golden_cases(model_id: &str) -> Vec<(String, Vec<u32>)> {
    let g = golden();
    let strings = g["strings"].as_array().expect("strings");
    let ids = g["models"][model_id]
        .as_array()
        .unwrap_or_else(|| panic!("no golden ids for {model_id}"));
    assert_eq!(strings.len(), ids.len());
    assert!(strings.len() >= 12, "too few golden strings");
    strings
        .iter()
        .zip(ids)
        .map(|(s, ids)| {
            let ids = ids
                .as_array()
                .expect("ids")
                .iter()
                .map(|i| i.as_u64().expect("id") as u32)
                .collect();
            (s.as_str().expect("string").to_string(), ids)
        })
        .collect()
}

fn check_model((model_id, file): (&str, &str)) -> Model {
    let model =
        Model::load_path(&model_path(file)).unwrap_or_else(|e| panic!("cannot load {file}: {e}"));
    let mut failures = Vec::new();
    let cases = golden_cases(model_id);
    for (text, want) in &cases {
        let got = model.tokenizer.encode(text).expect("encode");
        if &got != want {
            let show = |ids: &[u32]| {
                ids.iter()
                    .map(|&i| format!("{i}:{:?}", model.tokenizer.token_str(i)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            failures.push(format!(
                "{text:?}\n   got  {}\n   want {}",
                show(&got),
                show(want)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{model_id}: {} of {} strings differ from transformers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    model
}

#[test]
fn gemma3_matches_transformers() {
    let model = check_model(GEMMA);
    let t = &model.tokenizer;
    assert_eq!(t.bos_id(), Some(2));
    assert_eq!(t.eos_id(), Some(1));
    assert_eq!(t.vocab_size(), 262_144);
    // "The capital of France is": <bos> The ▁capital ▁of ▁France ▁is
    let ids = t.encode("The capital of France is").unwrap();
    let strs: Vec<String> = ids.iter().map(|&i| t.token_str(i)).collect();
    assert_eq!(strs, ["<bos>", "The", " capital", " of", " France", " is"]);
    let paris = t.encode(" Paris").unwrap();
    assert_eq!(paris.len(), 2, "{paris:?}");
    assert_eq!(t.token_str(paris[1]), " Paris");
    assert_eq!(t.token_str(t.encode("\n").unwrap()[1]), "\n");
}

#[test]
fn smollm2_matches_transformers() {
    let model = check_model(SMOLLM);
    let t = &model.tokenizer;
    assert_eq!(t.bos_id(), Some(1));
    assert_eq!(t.eos_id(), Some(2));
    assert_eq!(t.vocab_size(), 49_152);
    let ids = t.encode("The capital of France is").unwrap();
    let strs: Vec<String> = ids.iter().map(|&i| t.token_str(i)).collect();
    assert_eq!(strs, ["The", " capital", " of", " France", " is"]);
    assert_eq!(t.token_str(0), "<|endoftext|>");
    // Like SmolLM2's own tokenizer, every digit is its own token.
    let digits = t.encode("x 2026").unwrap();
    let strs: Vec<String> = digits.iter().map(|&i| t.token_str(i)).collect();
    assert_eq!(strs, ["x", " ", "2", "0", "2", "6"]);
    // Digits are split off before the GPT-2 regex, so a run of spaces before
    // a number stays one token. transformers' GGUF loader (plain GPT-2
    // ByteLevel) gives "a", " ", " ", "3" here; SmolLM2's tokenizer.json and
    // llama.cpp's "smollm" pre-tokenizer give this.
    let spaced = t.encode("a  3").unwrap();
    let strs: Vec<String> = spaced.iter().map(|&i| t.token_str(i)).collect();
    assert_eq!(strs, ["a", "  ", "3"]);
}

/// Building Gemma's tokenizer derives ~515k merges from 262k tokens; it runs
/// on every load (also in the browser), so it must stay fast.
#[test]
fn gemma3_tokenizer_builds_fast() {
    let bytes = std::fs::read(model_path(GEMMA.1)).expect("read");
    let file = GgufFile::parse(Arc::from(bytes)).expect("parse");
    let start = Instant::now();
    let t = LensTokenizer::from_gguf(&file).expect("tokenizer");
    let elapsed = start.elapsed();
    eprintln!("gemma3 tokenizer built in {} ms", elapsed.as_millis());
    assert_eq!(t.vocab_size(), 262_144);
    assert!(elapsed.as_secs_f64() < 10.0, "took {elapsed:?}");
}
