//! A model loaded into the worker: its files from the browser's cache or
//! the network (each source in order, resumable, with progress), or the
//! files the visitor picked; refused before any byte when the worker's
//! memory cannot hold it; then parsed. The caller keeps the model.

use crate::fetch::{self, js_error, Failure};
use crate::outbox::{fail, now_ms, post};
use js_sys::{Array, Uint8Array};
use lens_engine::memory::MemoryNeed;
use lens_engine::Model;
use lens_protocol::catalog::ModelRequest;
use lens_protocol::{ErrorKind, FileSpec, ModelFormat, Reply, Stage};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Refuses a model whose files (`bytes` of them, all or some) cannot be
/// held in this worker's memory, before they are downloaded.
fn room_for(limit: Option<u64>, name: &str, bytes: u64) -> Result<(), Failure> {
    match limit.and_then(|l| MemoryNeed::to_load(bytes).refuse(l, name)) {
        Some(m) => Err((
            ErrorKind::OutOfMemory,
            format!("{m}. Pick a smaller model, or open the page on a device with more memory."),
        )),
        None => Ok(()),
    }
}

/// Every file of `req`, from the cache or the network, with one progress
/// count across all of them.
pub async fn remote(req: ModelRequest, limit: Option<u64>) -> Result<(Model, Reply), Failure> {
    let t0 = now_ms();
    let cache = fetch::open_cache().await;
    let mut files = req.files.clone();
    let done_bytes = Rc::new(Cell::new(0u64));
    let mut all_cached = true;
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    // Sizes the catalog pins: a model too large is refused before any byte.
    room_for(limit, &req.name, files.iter().filter_map(|f| f.size).sum())?;
    let mut i = 0;
    while i < files.len() {
        let file = files[i].clone();
        i += 1;
        let known_total = |files: &[FileSpec], current: Option<u64>| -> Option<u64> {
            // Known once every remaining file's size is known.
            let mut sum = done_bytes.get();
            for (k, f) in files.iter().enumerate().skip(i - 1) {
                sum += if k == i - 1 {
                    current.or(f.size)?
                } else {
                    f.size?
                };
            }
            Some(sum)
        };
        let cached = match &cache {
            Some(c) => fetch::from_cache(c, &file).await,
            None => None,
        };
        let bytes = match cached {
            Some(b) => {
                done_bytes.set(done_bytes.get() + b.len() as u64);
                post(&Reply::Download {
                    received: done_bytes.get(),
                    total: known_total(&files, Some(0)).map(|t| t.max(done_bytes.get())),
                    bytes_per_s: 0.0,
                    file: file.name.clone(),
                    from_cache: true,
                });
                Some(b)
            }
            None => {
                all_cached = false;
                let started = now_ms();
                let base = done_bytes.get();
                let name = file.name.clone();
                let files_now = files.clone();
                let on_bytes = |received: u64, total: Option<u64>| {
                    // The files' bytes so far and this one's whole length:
                    // refused before its body is read when they cannot fit.
                    room_for(limit, &req.name, base + total.unwrap_or(received))?;
                    let secs = ((now_ms() - started) / 1000.0).max(1e-3);
                    post(&Reply::Download {
                        received: base + received,
                        total: known_total(&files_now, total),
                        bytes_per_s: received as f64 / secs,
                        file: name.clone(),
                        from_cache: false,
                    });
                    Ok(())
                };
                let notice = |message| post(&Reply::Notice { message });
                let b = fetch::from_sources(&file, &on_bytes, &notice).await?;
                if let Some(b) = &b {
                    if let Some(c) = &cache {
                        if let Err(f) = fetch::store(c, &file.url, b).await {
                            fail(None, f); // a warning: the model still loads
                        }
                    }
                    done_bytes.set(base + b.len() as u64);
                }
                b
            }
        };
        match bytes {
            Some(b) => got.push((file.name.clone(), b)),
            None if file.optional => {}
            None if file.name == "model.safetensors" && req.repo_base.is_some() => {
                // A sharded checkpoint: its index names the shards.
                let base = req.repo_base.clone().unwrap_or_default();
                let index_url = format!("{base}/model.safetensors.index.json");
                let index = fetch::download(&index_url, None, &|_, _| Ok(()), &|_| {})
                    .await?
                    .ok_or((
                        ErrorKind::BadModel,
                        format!("{base} has neither model.safetensors nor an index of shards"),
                    ))?;
                for shard in shard_names(&index)? {
                    files.push(FileSpec {
                        url: format!("{base}/{shard}"),
                        mirrors: Vec::new(),
                        name: shard,
                        size: None,
                        sha256: None,
                        optional: false,
                    });
                }
            }
            None => {
                return Err((
                    ErrorKind::Network,
                    format!("{} was not found (HTTP 404)", file.url),
                ))
            }
        }
    }
    let bytes: u64 = got.iter().map(|(_, b)| b.len() as u64).sum();
    post(&Reply::Progress {
        job: None,
        stage: Stage::Parse,
        done: 0,
        total: 1,
    });
    let sha256 = fetch::weights_sha256(req.format, &got, &files).await;
    let model = build(&req.id, req.format, got)?;
    let ready = ready(&req.id, &req.name, sha256, &model, bytes, all_cached, t0);
    Ok((model, ready))
}

fn shard_names(index: &[u8]) -> Result<Vec<String>, Failure> {
    let bad = |m: String| (ErrorKind::BadModel, m);
    let text = std::str::from_utf8(index).map_err(|_| bad("the shard index is not text".into()))?;
    // {"weight_map": {"tensor": "model-00001-of-00002.safetensors", …}}
    let mut names: Vec<String> = Vec::new();
    for part in text.split('"') {
        if part.ends_with(".safetensors")
            && !part.contains('/')
            && !part.contains("..")
            && !names.iter().any(|n| n == part)
        {
            names.push(part.to_string());
        }
    }
    if names.is_empty() {
        return Err(bad("the shard index names no .safetensors files".into()));
    }
    names.sort();
    Ok(names)
}

/// Builds the model from its files' bytes.
fn build(id: &str, format: ModelFormat, files: Vec<(String, Vec<u8>)>) -> Result<Model, Failure> {
    let bad = |m: String| (ErrorKind::BadModel, m);
    let is_gguf = |b: &[u8]| b.starts_with(b"GGUF");
    let gguf = files
        .iter()
        .position(|(n, b)| n.to_ascii_lowercase().ends_with(".gguf") || is_gguf(b));
    if format == ModelFormat::Gguf || gguf.is_some() {
        let Some(k) = gguf else {
            return Err(bad("no .gguf file among the files".into()));
        };
        let (_, bytes) = files
            .into_iter()
            .nth(k)
            .ok_or_else(|| bad("no file".into()))?;
        let bytes: Arc<[u8]> = Arc::from(bytes);
        return Model::from_gguf_bytes(id, bytes)
            .map_err(|e| bad(format!("not a usable GGUF model: {e}")));
    }
    let find = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    };
    let config = find("config.json")
        .ok_or_else(|| bad("config.json is missing (a safetensors model needs config.json, tokenizer.json and the .safetensors files)".into()))?;
    let tokenizer =
        find("tokenizer.json").ok_or_else(|| bad("tokenizer.json is missing".into()))?;
    let mut shards: Vec<&(String, Vec<u8>)> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".safetensors"))
        .collect();
    if shards.is_empty() {
        return Err(bad("no .safetensors file among the files".into()));
    }
    shards.sort_by(|a, b| a.0.cmp(&b.0));
    let shard_bytes: Vec<&[u8]> = shards.iter().map(|(_, b)| b.as_slice()).collect();
    Model::from_hf_bytes(
        id,
        config,
        tokenizer,
        find("tokenizer_config.json"),
        &shard_bytes,
    )
    .map_err(|e| bad(format!("not a usable model: {e}")))
}

/// What the page hears when `model` is loaded.
fn ready(
    id: &str,
    name: &str,
    sha256: Option<String>,
    model: &Model,
    bytes: u64,
    from_cache: bool,
    t0: f64,
) -> Reply {
    let c = &model.config;
    Reply::ModelReady {
        id: id.to_string(),
        name: name.to_string(),
        sha256,
        arch: c.arch.name().to_string(),
        layers: c.layers,
        hidden: c.hidden,
        vocab: c.vocab,
        bytes,
        from_cache,
        load_ms: now_ms() - t0,
    }
}

/// Local files the user picked or dropped.
pub async fn files(
    id: String,
    files: Array,
    limit: Option<u64>,
) -> Result<(Model, Reply), Failure> {
    let t0 = now_ms();
    let sizes: f64 = files
        .iter()
        .filter_map(|f| f.dyn_into::<web_sys::File>().ok())
        .map(|f| f.size())
        .sum();
    room_for(limit, "These files", sizes as u64)?;
    let mut got = Vec::new();
    let mut total = 0u64;
    for f in files.iter() {
        let file: web_sys::File = f
            .dyn_into()
            .map_err(|_| (ErrorKind::BadModel, "not a file".to_string()))?;
        let name = file.name();
        let buf = JsFuture::from(file.array_buffer()).await.map_err(|e| {
            (
                ErrorKind::BadModel,
                format!("cannot read {name}: {}", js_error(&e)),
            )
        })?;
        let bytes = Uint8Array::new(&buf).to_vec();
        total += bytes.len() as u64;
        post(&Reply::Download {
            received: total,
            total: None,
            bytes_per_s: 0.0,
            file: name.clone(),
            from_cache: true,
        });
        got.push((name, bytes));
    }
    if got.is_empty() {
        return Err((ErrorKind::BadModel, "no files were given".into()));
    }
    post(&Reply::Progress {
        job: None,
        stage: Stage::Parse,
        done: 0,
        total: 1,
    });
    let format = if got
        .iter()
        .any(|(n, b)| n.to_ascii_lowercase().ends_with(".gguf") || b.starts_with(b"GGUF"))
    {
        ModelFormat::Gguf
    } else {
        ModelFormat::Safetensors
    };
    let name = got
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let sha256 = fetch::weights_sha256(format, &got, &[]).await;
    let model = build(&id, format, got)?;
    let ready = ready(&id, &name, sha256, &model, total, true, t0);
    Ok((model, ready))
}
