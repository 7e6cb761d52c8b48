//! Bad model files and bad prompts: each gives a typed `EngineError` with a
//! one-line message, never a panic, and nothing allocates much on the way.
//!
//! The GGUF cases start from a tiny valid llama-architecture file with a
//! GPT-2 style tokenizer in its metadata (built here with candle's GGUF
//! writer) and break one thing each; the Hugging Face cases start from a
//! tiny valid Llama directory's files.

use candle_core::quantized::gguf_file::{self, Value};
use lens_engine::forward::{forward, Precision};
use lens_engine::{predict, EngineError, Model};
use lens_testkit::gguf::{gpt2_tokens, Gguf, CONTEXT, FFN, HIDDEN};
use lens_testkit::{
    assert_one_line, hf_config, random_hf_tensors, safetensors_bytes, temp_dir,
    word_level_tokenizer_json, word_vocab, Family, Rng, Spec,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// No huge allocation: every allocation of this test binary is measured, and
// one over 1 GiB is refused (the process aborts instead of eating memory).

struct MeasuringAlloc;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);
const REFUSE_ABOVE: usize = 1 << 30;
/// What the tests accept: the tiny models here need well under 1 MiB a piece.
const SMALL: usize = 64 << 20;

fn note(size: usize) -> bool {
    LARGEST_ALLOCATION.fetch_max(size, Ordering::Relaxed);
    size <= REFUSE_ABOVE
}

unsafe impl GlobalAlloc for MeasuringAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if note(layout.size()) {
            System.alloc(layout)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if note(layout.size()) {
            System.alloc_zeroed(layout)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if note(new_size) {
            System.realloc(ptr, layout, new_size)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: MeasuringAlloc = MeasuringAlloc;

fn assert_no_huge_allocation() {
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(largest < SMALL, "an allocation of {largest} bytes happened");
}

fn load(bytes: Vec<u8>) -> lens_engine::Result<Model> {
    Model::from_gguf_bytes("tiny.gguf", Arc::from(bytes))
}

/// The error of loading `bytes`, checked to be one readable line.
fn load_err(bytes: Vec<u8>) -> EngineError {
    match load(bytes) {
        Ok(_) => panic!("a broken file loaded"),
        Err(e) => {
            eprintln!("{e}");
            assert_one_line(&e.to_string());
            e
        }
    }
}

/// Where the header field after tensor `name`'s name starts (its `n_dims`).
fn tensor_info(bytes: &[u8], name: &str) -> usize {
    let mut pattern = (name.len() as u64).to_le_bytes().to_vec();
    pattern.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .unwrap_or_else(|| panic!("tensor info of {name} not found"));
    at + pattern.len()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Byte position of tensor `name`'s data offset field in the header.
fn offset_field(bytes: &[u8], name: &str) -> usize {
    let at = tensor_info(bytes, name);
    let n_dims = read_u32(bytes, at) as usize;
    at + 4 + 8 * n_dims + 4
}

fn tensor_data_start(bytes: &[u8]) -> usize {
    let content = gguf_file::Content::read(&mut std::io::Cursor::new(bytes)).expect("valid gguf");
    content.tensor_data_offset as usize
}

// ---------------------------------------------------------------------------
// The base file is valid

#[test]
fn tiny_gguf_is_valid() {
    let model = load(Gguf::tiny_llama().bytes()).expect("the base file loads");
    assert_eq!(model.config.context_length, CONTEXT as usize);
    let ids = model.encode("hello world").expect("encode");
    assert_eq!(ids.len(), 8, "{ids:?}");
    let p = predict(&model, "hello world", Precision::F32, 3).expect("predict");
    assert_eq!(p.top.len(), 3);
    assert!(p.top.iter().all(|t| t.logit.is_finite() && t.prob > 0.0));
    assert_no_huge_allocation();
}

// ---------------------------------------------------------------------------
// Broken GGUF containers

#[test]
fn truncated_inside_header() {
    let bytes = Gguf::tiny_llama().bytes();
    let header_end = tensor_data_start(&bytes);
    for cut in [0, 3, 4, 8, 20, 24, 60, header_end / 2, header_end - 40] {
        let e = load_err(bytes[..cut].to_vec());
        assert!(matches!(e, EngineError::Gguf(_)), "cut at {cut}: {e:?}");
    }
    let e = load_err(bytes[..2].to_vec());
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_no_huge_allocation();
}

#[test]
fn truncated_inside_tensor_data() {
    let bytes = Gguf::tiny_llama().bytes();
    let start = tensor_data_start(&bytes);
    for cut in [start, start + 100, bytes.len() - 1] {
        let e = load_err(bytes[..cut].to_vec());
        match &e {
            EngineError::Gguf(m) => assert!(m.contains("past the end"), "{m}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert_no_huge_allocation();
}

#[test]
fn wrong_magic() {
    let mut bytes = Gguf::tiny_llama().bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let e = load_err(bytes);
    match &e {
        EngineError::Gguf(m) => assert!(m.contains("magic"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Not a GGUF at all (a JSON file given as a model).
    let e = load_err(br#"{"model_type": "llama"}"#.to_vec());
    assert!(matches!(e, EngineError::Gguf(_)), "{e:?}");
}

#[test]
fn tensor_offset_past_end_of_file() {
    let base = Gguf::tiny_llama().bytes();
    for offset in [base.len() as u64, 1 << 40, u64::MAX] {
        let mut bytes = base.clone();
        let at = offset_field(&bytes, "blk.0.attn_v.weight");
        put_u64(&mut bytes, at, offset);
        let e = load_err(bytes);
        match &e {
            EngineError::Gguf(m) => {
                assert!(
                    m.contains("blk.0.attn_v.weight") && m.contains("past the end"),
                    "{m}"
                )
            }
            other => panic!("offset {offset}: {other:?}"),
        }
    }
    assert_no_huge_allocation();
}

#[test]
fn absurd_tensor_count() {
    for count in [1u64 << 40, u64::MAX] {
        let mut bytes = Gguf::tiny_llama().bytes();
        put_u64(&mut bytes, 8, count); // v2/v3 header: magic, version, tensor count
        let e = load_err(bytes);
        assert!(matches!(e, EngineError::Gguf(_)), "{e:?}");
    }
    // The metadata count right after it.
    let mut bytes = Gguf::tiny_llama().bytes();
    put_u64(&mut bytes, 16, 1 << 40);
    let e = load_err(bytes);
    assert!(matches!(e, EngineError::Gguf(_)), "{e:?}");
    assert_no_huge_allocation();
}

#[test]
fn absurd_tensor_dimensions() {
    let base = Gguf::tiny_llama().bytes();
    // 2^40 x 2^40 overflows; 2^20 x 2^20 (2^40 elements) does not but is absurd.
    for dim in [1u64 << 40, 1 << 20, u64::MAX] {
        let mut bytes = base.clone();
        let at = tensor_info(&bytes, "token_embd.weight");
        assert_eq!(read_u32(&bytes, at), 2);
        put_u64(&mut bytes, at + 4, dim);
        put_u64(&mut bytes, at + 12, dim);
        let e = load_err(bytes);
        match &e {
            EngineError::Gguf(m) => assert!(m.contains("token_embd.weight"), "{m}"),
            other => panic!("dim {dim}: {other:?}"),
        }
    }
    assert_no_huge_allocation();
}

#[test]
fn zero_alignment() {
    // `general.alignment = 0` would divide by zero when locating the data.
    let mut g = Gguf::tiny_llama();
    g.set("general.alignment", Value::U32(0));
    let e = load_err(g.bytes());
    assert!(matches!(e, EngineError::Gguf(_)), "{e:?}");
}

// ---------------------------------------------------------------------------
// Valid containers, wrong models

#[test]
fn unknown_architecture() {
    let mut g = Gguf::tiny_llama();
    g.set("general.architecture", Value::String("mamba".into()));
    match load_err(g.bytes()) {
        EngineError::UnknownArchitecture(a) => assert_eq!(a, "mamba"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_tensor() {
    let mut g = Gguf::tiny_llama();
    g.tensors.retain(|t| t.0 != "blk.0.ffn_up.weight");
    match load_err(g.bytes()) {
        EngineError::MissingTensor(n) => assert_eq!(n, "blk.0.ffn_up.weight"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shape_mismatch() {
    let mut g = Gguf::tiny_llama();
    let t = g.tensor("blk.0.ffn_up.weight");
    t.1 = vec![FFN / 2, HIDDEN];
    t.2.truncate(FFN / 2 * HIDDEN);
    match load_err(g.bytes()) {
        EngineError::Config(m) => {
            // The tensor, both shapes, and the fields the expected one came from.
            for part in [
                "`blk.0.ffn_up.weight`",
                &format!("{:?}", [FFN / 2, HIDDEN]),
                &format!("{:?}", [FFN, HIDDEN]),
                "`llama.feed_forward_length`",
                "`llama.embedding_length`",
            ] {
                assert!(m.contains(part), "{part} not in: {m}");
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Inconsistent sizes give one line naming the field, in the file's own
/// spelling: a GGUF key, or a `config.json` key.
#[test]
fn inconsistent_configs_name_the_field() {
    let g = |key: &str, v: u32| {
        let mut g = Gguf::tiny_llama();
        g.set(key, Value::U32(v));
        load_err(g.bytes()).to_string()
    };
    let gguf_cases = [
        (g("llama.embedding_length", 0), "`llama.embedding_length` is 0"),
        (g("llama.attention.head_count", 0), "`llama.attention.head_count` is 0"),
        (g("llama.feed_forward_length", 0), "`llama.feed_forward_length` is 0"),
        // Heads that do not divide.
        (
            g("llama.attention.head_count_kv", 3),
            "`llama.attention.head_count` = 2 is not a multiple of `llama.attention.head_count_kv` = 3",
        ),
        // An odd head dimension.
        (g("llama.attention.key_length", 7), "`llama.attention.key_length` = 7"),
        // A head dimension that does not match the tensors.
        (g("llama.attention.key_length", 8), "`llama.attention.key_length`"),
    ];
    for (m, want) in gguf_cases {
        assert!(m.contains(want), "{want} not in: {m}");
        assert_one_line(&m);
    }

    let f = tiny_hf();
    let base: serde_json::Value = serde_json::from_slice(&f.config).unwrap();
    let hf = |key: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[key] = v;
        hf_err(c.to_string().as_bytes(), &f.tokenizer, &f.shard).to_string()
    };
    let j = |v: i64| serde_json::json!(v);
    let hf_cases = [
        (hf("hidden_size", j(0)), "`hidden_size` is 0"),
        (hf("num_hidden_layers", j(0)), "`num_hidden_layers` is 0"),
        (
            hf("num_key_value_heads", j(0)),
            "`num_key_value_heads` is 0",
        ),
        (hf("vocab_size", j(0)), "`vocab_size` is 0"),
        (
            hf("num_key_value_heads", j(3)),
            "`num_attention_heads` = 4 is not a multiple of `num_key_value_heads` = 3",
        ),
        // No head_dim given: hidden / heads, odd here.
        (
            hf("num_attention_heads", j(64)),
            "`hidden_size` / `num_attention_heads` = 1",
        ),
        // A head dimension that does not match the q projection.
        (hf("head_dim", j(8)), "`head_dim`"),
        // A vocabulary larger than the embedding.
        (hf("vocab_size", j(101)), "`vocab_size`"),
        // A feed-forward width that does not match the MLP tensors.
        (hf("intermediate_size", j(100)), "`intermediate_size`"),
        (hf("rope_theta", j(-1)), "`rope_theta` = -1"),
    ];
    for (m, want) in hf_cases {
        assert!(m.contains(want), "{want} not in: {m}");
    }
    let m = hf("vocab_size", j(101));
    assert!(m.contains("100") && m.contains("101"), "{m}");
}

#[test]
fn unknown_tokenizer_model() {
    let mut g = Gguf::tiny_llama();
    g.set("tokenizer.ggml.model", Value::String("foo".into()));
    match load_err(g.bytes()) {
        EngineError::Tokenizer(m) => assert!(m.contains("`foo`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// NaN weights load (values are not scanned at load time) and surface at the
/// first forward pass that reads them, as `NonFinite` naming the tensor.
#[test]
fn nan_weights() {
    let mut g = Gguf::tiny_llama();
    g.tensor("blk.0.attn_v.weight").2[5] = f32::NAN;
    let model = load(g.bytes()).expect("NaN weights are found at the first forward pass");
    for precision in [Precision::F32, Precision::F64] {
        match predict(&model, "hello", precision, 5) {
            Err(EngineError::NonFinite(n)) => assert_eq!(n, "blk.0.attn_v.weight"),
            other => panic!("{other:?}"),
        }
    }

    // An infinity in a vocabulary row the prompt does not use: found when
    // the logits are computed.
    let mut g = Gguf::tiny_llama();
    let (tokens, _) = gpt2_tokens();
    let unused = tokens.iter().position(|t| t == "z").unwrap();
    g.tensor("token_embd.weight").2[unused * HIDDEN + 3] = f32::INFINITY;
    let model = load(g.bytes()).expect("loads");
    let e = predict(&model, "hello", Precision::F32, 5).expect_err("inf in the unembedding");
    assert_one_line(&e.to_string());
    match e {
        EngineError::NonFinite(n) => assert_eq!(n, "token_embd.weight"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Bad prompts

#[test]
fn empty_prompt() {
    let model = load(Gguf::tiny_llama().bytes()).expect("loads");
    assert!(matches!(model.encode(""), Err(EngineError::EmptyPrompt)));
    let e = predict(&model, "", Precision::F32, 5).expect_err("empty prompt");
    assert_one_line(&e.to_string());
    assert!(matches!(e, EngineError::EmptyPrompt), "{e:?}");
    assert!(matches!(
        forward(&model, &[], Precision::F64),
        Err(EngineError::EmptyPrompt)
    ));
}

#[test]
fn prompt_longer_than_context() {
    let model = load(Gguf::tiny_llama().bytes()).expect("loads");
    let prompt = "hello world hello world";
    let e = predict(&model, prompt, Precision::F32, 5).expect_err("too long");
    assert_one_line(&e.to_string());
    match e {
        EngineError::PromptTooLong { tokens, max } => {
            assert!(tokens > CONTEXT as usize, "{tokens}");
            assert_eq!(max, CONTEXT as usize);
        }
        other => panic!("{other:?}"),
    }
    // Ids given directly are checked too, as are ids outside the vocabulary.
    let ids = vec![0u32; CONTEXT as usize + 1];
    assert!(matches!(
        forward(&model, &ids, Precision::F32),
        Err(EngineError::PromptTooLong { tokens: 9, max: 8 })
    ));
    match forward(&model, &[0, 1000], Precision::F32) {
        Err(EngineError::TokenOutOfRange { id: 1000, .. }) => {}
        other => panic!("{:?}", other.map(|o| o.logits.len())),
    }
}

// ---------------------------------------------------------------------------
// Hugging Face files

struct HfFiles {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    shard: Vec<u8>,
}

fn tiny_hf() -> HfFiles {
    let spec = Spec::new(Family::Llama);
    HfFiles {
        config: hf_config(&spec, serde_json::json!({}))
            .to_string()
            .into_bytes(),
        tokenizer: word_level_tokenizer_json(&word_vocab(spec.vocab)).into_bytes(),
        shard: safetensors_bytes(&random_hf_tensors(&spec)),
    }
}

fn hf_err(config: &[u8], tokenizer: &[u8], shard: &[u8]) -> EngineError {
    match Model::from_hf_bytes("tiny", config, tokenizer, None, &[shard]) {
        Ok(_) => panic!("broken Hugging Face files loaded"),
        Err(e) => {
            eprintln!("{e}");
            assert_one_line(&e.to_string());
            e
        }
    }
}

#[test]
fn hf_base_is_valid() {
    let f = tiny_hf();
    let model = Model::from_hf_bytes("tiny", &f.config, &f.tokenizer, None, &[&f.shard])
        .expect("the base files load");
    predict(&model, "w5 w6 w7", Precision::F32, 3).expect("predict");
}

#[test]
fn hf_invalid_config_json() {
    let f = tiny_hf();
    // Cut short, empty, not UTF-8, not an object, an object without model_type.
    let bads: [&[u8]; 5] = [
        b"{\"model_type\": \"llama\",",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b"{}",
    ];
    for bad in bads {
        let e = hf_err(bad, &f.tokenizer, &f.shard);
        assert!(matches!(e, EngineError::Config(_)), "{e:?}");
    }
    let e = hf_err(b"{not json", &f.tokenizer, &f.shard);
    assert!(matches!(e, EngineError::Config(_)), "{e:?}");
    // Valid JSON, wrong contents.
    let mut c: serde_json::Value = serde_json::from_slice(&f.config).unwrap();
    c.as_object_mut().unwrap().remove("hidden_size");
    let e = hf_err(c.to_string().as_bytes(), &f.tokenizer, &f.shard);
    match &e {
        EngineError::Config(m) => assert!(m.contains("hidden_size"), "{m}"),
        other => panic!("{other:?}"),
    }
    c["hidden_size"] = serde_json::json!("sixty-four");
    assert!(matches!(
        hf_err(c.to_string().as_bytes(), &f.tokenizer, &f.shard),
        EngineError::Config(_)
    ));
    // Absurd sizes are refused before anything is allocated for them.
    c["hidden_size"] = serde_json::json!(1u64 << 40);
    assert!(matches!(
        hf_err(c.to_string().as_bytes(), &f.tokenizer, &f.shard),
        EngineError::Config(_)
    ));
    assert_no_huge_allocation();
}

#[test]
fn hf_unknown_model_type() {
    let f = tiny_hf();
    let mut c: serde_json::Value = serde_json::from_slice(&f.config).unwrap();
    c["model_type"] = serde_json::json!("mamba");
    match hf_err(c.to_string().as_bytes(), &f.tokenizer, &f.shard) {
        EngineError::UnknownArchitecture(a) => assert_eq!(a, "mamba"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hf_garbage_safetensors() {
    let f = tiny_hf();
    let mut garbage = vec![0u8; 4096];
    let mut rng = Rng::new(3);
    garbage.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    // Random bytes, too few bytes, a header length of 2^40, a truncated file.
    let mut huge_header = (1u64 << 40).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    let truncated = f.shard[..f.shard.len() / 2].to_vec();
    for bad in [garbage, vec![1, 2, 3], huge_header, truncated] {
        let e = hf_err(&f.config, &f.tokenizer, &bad);
        assert!(matches!(e, EngineError::Safetensors(_)), "{e:?}");
    }
    assert_no_huge_allocation();
}

#[test]
fn hf_missing_tensor_and_bad_tokenizer() {
    let spec = Spec::new(Family::Llama);
    let f = tiny_hf();
    let mut tensors = random_hf_tensors(&spec);
    tensors.remove("model.layers.1.self_attn.q_proj.weight");
    match hf_err(&f.config, &f.tokenizer, &safetensors_bytes(&tensors)) {
        EngineError::MissingTensor(n) => assert_eq!(n, "blk.1.attn_q.weight"),
        other => panic!("{other:?}"),
    }
    let e = hf_err(&f.config, b"{\"model\": 3}", &f.shard);
    assert!(matches!(e, EngineError::Tokenizer(_)), "{e:?}");
}

#[test]
fn load_path_errors() {
    let dir = temp_dir("bad-input-paths");
    // A directory without weights.
    let f = tiny_hf();
    std::fs::write(dir.join("config.json"), &f.config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), &f.tokenizer).unwrap();
    let e = Model::load_path(&dir).err().expect("no weights");
    assert_one_line(&e.to_string());
    assert!(matches!(e, EngineError::Safetensors(_)), "{e:?}");
    // A file that does not exist.
    let e = Model::load_path(&dir.join("nothing.gguf"))
        .err()
        .expect("no file");
    assert_one_line(&e.to_string());
    assert!(matches!(e, EngineError::Io { .. }), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
