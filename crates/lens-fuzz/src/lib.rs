//! The fuzz harnesses. Each takes arbitrary bytes, feeds them to one of the
//! parsers that read what a file, a URL or a person gives the engine, and
//! returns; a parser may refuse the input with an error, never panic, hang
//! or allocate what the input merely claims. libFuzzer (cargo-fuzz's
//! targets in `fuzz/`, coverage-guided on stable Rust) calls them with
//! mutated inputs; `tests/replay.rs` calls them on the seeds and on
//! every input that ever crashed one (`fuzz/regressions/`).

use lens_engine::forward::Precision;
use lens_engine::tokenizer::LensTokenizer;
use lens_engine::{predict, Model};
use lens_protocol::catalog::{resolve_reference, Catalog};
use lens_protocol::snapshot::Snapshot;
use lens_protocol::spec::AnalysisSpec;
use lens_protocol::{Reply, Request};
use std::sync::Arc;

/// A harness: arbitrary bytes in, nothing out; it may not panic.
pub type Harness = fn(&[u8]);

/// The harnesses by name, as the fuzz targets and the corpus folders are named.
pub const HARNESSES: [(&str, Harness); 5] = [
    ("gguf", gguf),
    ("hf_files", hf_files),
    ("tokenizer_json", tokenizer_json),
    ("link_text", link_text),
    ("pool_block", pool_block),
];

/// Largest model a harness runs a prompt through once it loaded: the
/// fuzzer's time goes to parsing, not to big random matmuls.
const RUN_LIMIT: usize = 1 << 22;

/// A GGUF file: header, metadata, tensor table, the config and tokenizer
/// read from its metadata; a model that loads and is small runs a prompt
/// (the tensor data decoded, quantized blocks included).
pub fn gguf(data: &[u8]) {
    if let Ok(model) = Model::from_gguf_bytes("fuzz.gguf", Arc::from(data)) {
        run_small(&model);
    }
}

/// Hugging Face files: `config.json`, `tokenizer.json` and one safetensors
/// shard, packed as two little-endian u32 lengths (config, tokenizer) then
/// the three parts (the shard is the rest). See [`pack_hf`].
pub fn hf_files(data: &[u8]) {
    let Some((config, tokenizer, shard)) = unpack_hf(data) else {
        return;
    };
    if let Ok(model) = Model::from_hf_bytes("fuzz", config, tokenizer, None, &[shard]) {
        run_small(&model);
    }
}

/// Packs Hugging Face files for [`hf_files`] (seeds are made with it).
pub fn pack_hf(config: &[u8], tokenizer: &[u8], shard: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + config.len() + tokenizer.len() + shard.len());
    out.extend((config.len() as u32).to_le_bytes());
    out.extend((tokenizer.len() as u32).to_le_bytes());
    out.extend(config);
    out.extend(tokenizer);
    out.extend(shard);
    out
}

fn unpack_hf(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let len = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let (c, t) = (len(0)?, len(4)?);
    let rest = data.get(8..)?;
    let config = rest.get(..c)?;
    let tokenizer = rest.get(c..c.checked_add(t)?)?;
    Some((config, tokenizer, &rest[c + t..]))
}

/// A `tokenizer.json` (the optional `tokenizer_config.json` is the part
/// after the first NUL byte, if any); a tokenizer that loads encodes and
/// decodes text.
pub fn tokenizer_json(data: &[u8]) {
    let (json, config) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    if let Ok(t) = LensTokenizer::from_json(json, config) {
        if let Ok(ids) = t.encode("The bridge out of Marin is the 42 <b>") {
            for id in ids {
                let _ = t.token_str(id);
            }
        }
    }
}

/// Text from a link or a person: the URL fragment (analysis, steering,
/// snapshot), a snapshot alone, a model reference, a catalog, and the
/// page ⇄ worker messages (their serde derives, read from JSON).
pub fn link_text(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let defaults = AnalysisSpec::new("gemma-3-270m", "The bridge out of Marin is the");
    if let Some(spec) = AnalysisSpec::from_fragment(s, &defaults) {
        // What the page does with a link it read: write it back. The link
        // written is the state read: state → fragment → state.
        let fragment = spec.to_fragment();
        let again = AnalysisSpec::from_fragment(&fragment, &defaults);
        assert_eq!(
            again.as_ref(),
            Some(&spec),
            "{fragment:?} read back differently"
        );
        assert_eq!(again.map(|a| a.to_fragment()), Some(fragment));
    }
    let _ = Snapshot::parse(s);
    let _ = resolve_reference(s, "https://huggingface.co");
    if let Ok(c) = Catalog::parse(s) {
        let _ = c.resolve(s, "https://huggingface.co");
    }
    let _ = Request::from_json(s);
    let _ = Reply::from_json(s);
}

/// A Lanczos block sent between workers: little-endian f64 vectors, the
/// width from the first byte.
pub fn pool_block(data: &[u8]) {
    let Some((&w, bytes)) = data.split_first() else {
        return;
    };
    let _ = lens_worker::pool::block_of_bytes(bytes, w as usize);
}

fn run_small(model: &Model) {
    let c = &model.config;
    if c.hidden.saturating_mul(c.vocab.max(c.ffn)) <= RUN_LIMIT && c.layers <= 4 {
        let _ = predict(model, "a b c", Precision::F32, 2);
    }
}
