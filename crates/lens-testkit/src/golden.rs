//! Golden values from an independent implementation (Python transformers
//! + torch), read by the tests of every crate.

/// One prompt of a golden-logits fixture.
#[derive(serde::Deserialize)]
pub struct GoldenEntry {
    pub prompt: String,
    pub token_ids: Vec<u32>,
    pub argmax: usize,
}

#[derive(serde::Deserialize)]
pub struct Golden {
    pub reference: String,
    pub vocab: usize,
    pub entries: Vec<GoldenEntry>,
}

/// The transformers logits of `model_id`'s golden prompts
/// (`crates/lens-engine/tests/fixtures/golden_logits/`, written by
/// `tools/golden_logits.py`), each prompt's full logit vector.
pub fn golden_logits(model_id: &str) -> (Golden, Vec<Vec<f64>>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lens-engine/tests/fixtures/golden_logits");
    let meta: Golden =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{model_id}.json"))).unwrap())
            .unwrap();
    let raw = std::fs::read(dir.join(format!("{model_id}.f32"))).unwrap();
    assert_eq!(raw.len(), meta.entries.len() * meta.vocab * 4);
    let logits = raw
        .chunks_exact(meta.vocab * 4)
        .map(|c| {
            c.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect()
        })
        .collect();
    (meta, logits)
}
