//! Message handling: load a model (network + cache, or local files), run.

use crate::fetch::{self, js_error, scope, Failure};
use crate::link::{post_rows, to_inbox, PageLink};
use crate::outbox::{post, post_with_bytes};
use js_sys::{Array, Uint8Array};
use lens_engine::memory::MemoryNeed;
use lens_engine::Model;
use lens_gpu::Gpu;
use lens_protocol::catalog::ModelRequest;
use lens_protocol::messages::RunRequest;
use lens_protocol::pool::Chunk;
use lens_protocol::{BackendChoice, ErrorKind, FileSpec, ModelFormat, Reply, Request, Stage};
use lens_worker::{pool, run, tuning};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::MessageEvent;

thread_local! {
    static MODEL: RefCell<Option<Rc<Model>>> = const { RefCell::new(None) };
    /// The last run's frozen forward and `J`, for the on-demand stages.
    static SESSION: RefCell<Option<lens_engine::run::Session>> = const { RefCell::new(None) };
    /// The WebGPU device, asked for once (or why there is none).
    static GPU: RefCell<Option<Result<Rc<Gpu>, String>>> = const { RefCell::new(None) };
    /// The most memory this worker may use, as the page said with the load.
    static LIMIT: Cell<Option<u64>> = const { Cell::new(None) };
    /// A run is in flight (runs await the GPU; requests wait their turn).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// The browser's WebGPU device, created on first use.
async fn webgpu() -> Result<Rc<Gpu>, String> {
    if let Some(g) = GPU.with(|g| g.borrow().clone()) {
        return g;
    }
    let made = Gpu::new().await.map(Rc::new).map_err(|e| e.to_string());
    GPU.with(|g| *g.borrow_mut() = Some(made.clone()));
    made
}

/// Where a run goes: `Ok((gpu, why not))`, or an error when WebGPU was
/// asked for and there is none.
async fn choose(choice: BackendChoice) -> Result<(Option<Rc<Gpu>>, Option<String>), Failure> {
    match choice {
        BackendChoice::Cpu => Ok((None, None)),
        BackendChoice::Webgpu => match webgpu().await {
            Ok(g) => Ok((Some(g), None)),
            Err(e) => Err((
                ErrorKind::Engine,
                format!("WebGPU is not available in this browser ({e}); choose the CPU backend"),
            )),
        },
        BackendChoice::Auto => match webgpu().await {
            // A software adapter (SwiftShader) is slower than the CPU path.
            Ok(g) if g.adapter().device_type.is_software() => Ok((
                None,
                Some(format!(
                    "the only WebGPU adapter ({}) is a software emulator, slower than the CPU path",
                    g.adapter().name
                )),
            )),
            Ok(g) => Ok((Some(g), None)),
            Err(e) => Ok((None, Some(e))),
        },
    }
}

/// A comparison's side B: A's layers, A's side (its log-probabilities
/// back in place), whether B runs on A's model.
struct Against {
    layers: Vec<usize>,
    a: Box<lens_engine::analysis::compare::Side>,
    same_model: bool,
}

/// A run on the loaded model, on the backend it asks for (against a
/// pinned side A for a comparison).
async fn run_request(req: RunRequest, against: Option<Against>) {
    let job = req.job;
    let Some(model) = MODEL.with(|m| m.borrow().clone()) else {
        return fail(
            Some(job),
            (ErrorKind::Engine, "no model is loaded yet".into()),
        );
    };
    if BUSY.with(|b| b.replace(true)) {
        return fail(
            Some(job),
            (ErrorKind::Engine, "another run is still in progress".into()),
        );
    }
    let result = async {
        let (gpu, fallback) = choose(req.backend)
            .await
            .map_err(|(kind, message)| run::Failure { kind, message })?;
        let emit: run::Emit = Rc::new(|r| post(&r));
        let tuned = gpu.as_deref().map(tuning::Tuned);
        // The session is taken out for the run (it awaits the GPU) and put back.
        let mut session = SESSION.with(|s| s.borrow_mut().take());
        let link = PageLink::open(job, req.pool);
        let compute = run::Compute {
            gpu: tuned
                .as_ref()
                .map(|g| g as &dyn lens_engine::run::Accelerator),
            fallback,
            pool: Some(&link),
            memory_limit: LIMIT.with(|l| l.get()),
        };
        let out = match against {
            None => run::run(&model, &req, emit, clock(), &mut session, compute).await,
            Some(c) => {
                run::compare(
                    &model,
                    &req,
                    c.layers,
                    &c.a,
                    c.same_model,
                    emit,
                    clock(),
                    &mut session,
                    compute,
                )
                .await
            }
        };
        drop(link);
        if gpu.as_ref().is_some_and(|g| g.lost().is_some()) {
            // The next run asks for a new device.
            GPU.with(|g| g.borrow_mut().take());
        }
        SESSION.with(|s| *s.borrow_mut() = session);
        out
    }
    .await;
    BUSY.with(|b| b.set(false));
    if let Err(f) = result {
        fail(Some(job), (f.kind, f.message));
    }
}

/// Runs an engine request on the loaded model; its failure becomes a reply.
fn with_model(
    job: u32,
    body: impl FnOnce(
        &Model,
        run::Emit,
        &mut Option<lens_engine::run::Session>,
    ) -> Result<(), run::Failure>,
) {
    let Some(model) = MODEL.with(|m| m.borrow().clone()) else {
        return fail(
            Some(job),
            (ErrorKind::Engine, "no model is loaded yet".into()),
        );
    };
    let emit: run::Emit = Rc::new(|r| post(&r));
    let result = SESSION.with(|s| body(&model, emit, &mut s.borrow_mut()));
    if let Err(f) = result {
        fail(Some(job), (f.kind, f.message));
    }
}

fn clock() -> run::Clock {
    Rc::new(now_ms)
}

fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

fn fail(job: Option<u32>, (kind, message): Failure) {
    post(&Reply::Failed { job, kind, message });
}

pub fn start() {
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        let data = ev.data();
        // `[request, files]` for local files, `[request, ArrayBuffer]` for
        // pooled values; the request alone otherwise.
        let (value, files) = match data.dyn_ref::<Array>() {
            Some(a) => (a.get(0), Some(a.get(1))),
            None => (data, None),
        };
        let request = match Request::from_js(value) {
            Ok(r) => r,
            Err(e) => return fail(None, (ErrorKind::Engine, e.to_string())),
        };
        match request {
            Request::Load {
                model,
                memory_limit,
            } => spawn_local(async move {
                LIMIT.with(|l| l.set(memory_limit));
                if let Err(f) = load_remote(model).await {
                    fail(None, f);
                }
            }),
            Request::LoadFiles { id, memory_limit } => spawn_local(async move {
                LIMIT.with(|l| l.set(memory_limit));
                let files = files.map(|f| Array::from(&f)).unwrap_or_default();
                if let Err(f) = load_files(id, files).await {
                    fail(None, f);
                }
            }),
            Request::Run(req) => spawn_local(run_request(req, None)),
            Request::Compare {
                run,
                layers,
                mut a,
                same_model,
            } => {
                // One vector over A's vocabulary (none: no probabilities of
                // the other's top token, the rest of the comparison stands).
                let bytes = buffer_bytes(files).unwrap_or_default();
                a.log_probs = pool::block_of_bytes(&bytes, bytes.len() / 8)
                    .ok()
                    .and_then(|mut b| b.pop())
                    .unwrap_or_default();
                let against = Against {
                    layers,
                    a,
                    same_model,
                };
                spawn_local(run_request(run, Some(against)))
            }
            Request::Pin { job } => with_model(job, |m, _, s| {
                let kept = run::pin(m, s)?;
                let bytes = pool::block_bytes(&[kept.log_probs]);
                let (u, depth) = (kept.u, kept.depth);
                post_with_bytes(&Reply::Pinned { job, u, depth }, bytes);
                Ok(())
            }),
            Request::Layers {
                job,
                prompt,
                precision,
                layers,
            } => with_model(job, |m, emit, s| {
                run::layers(m, job, &prompt, precision, &layers, emit, clock(), s)
            }),
            Request::Inspect {
                job,
                prompt,
                precision,
                position,
            } => with_model(job, |m, emit, s| {
                run::inspect(m, job, &prompt, precision, position, emit, clock(), s)
            }),
            Request::Steer {
                job,
                precision,
                steer,
            } => with_model(job, |m, emit, _| {
                run::steer(m, job, precision, &steer, emit, clock())
            }),
            Request::Rows {
                job,
                prompt,
                precision,
                start,
                count,
            } => {
                let chunk = Chunk { start, count };
                if to_inbox(job, pool::PoolWord::Rows(chunk)).is_err() {
                    // A helper of the pool: this worker's own frozen forward.
                    with_model(job, |m, emit, s| {
                        let t = now_ms();
                        let values = pool::rows(m, job, &prompt, precision, chunk, emit, s)?;
                        post_rows(job, chunk, values, now_ms() - t);
                        Ok(())
                    })
                }
            }
            Request::Products {
                job,
                prompt,
                precision,
                position,
                start,
                count,
            } => {
                let chunk = Chunk { start, count };
                if to_inbox(job, pool::PoolWord::Rows(chunk)).is_err() {
                    // A helper: the block's vectors came beside the request.
                    let vectors = buffer_bytes(files).unwrap_or_default();
                    with_model(job, |m, emit, s| {
                        let t = now_ms();
                        let values = pool::products(
                            m, job, &prompt, precision, position, &vectors, emit, s,
                        )?;
                        post_rows(job, chunk, values, now_ms() - t);
                        Ok(())
                    })
                }
            }
            Request::Assembled { job } => {
                let sent = match buffer_bytes(files) {
                    Some(b) => to_inbox(job, pool::PoolWord::Assembled(b)).is_ok(),
                    None => false,
                };
                if !sent {
                    fail(
                        Some(job),
                        (
                            ErrorKind::Engine,
                            "the pool's values for no waiting run".into(),
                        ),
                    );
                }
            }
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(&Reply::Started);
}

/// The bytes of an `ArrayBuffer` that came beside a request.
fn buffer_bytes(beside: Option<JsValue>) -> Option<Vec<u8>> {
    beside
        .filter(|b| b.is_instance_of::<js_sys::ArrayBuffer>())
        .map(|b| Uint8Array::new(&b).to_vec())
}

/// Refuses a model whose files (`bytes` of them, all or some) cannot be
/// held in this worker's memory, before they are downloaded.
fn room_for(name: &str, bytes: u64) -> Result<(), Failure> {
    let limit = LIMIT.with(|l| l.get());
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
async fn load_remote(req: ModelRequest) -> Result<(), Failure> {
    let t0 = now_ms();
    MODEL.with(|m| m.borrow_mut().take());
    SESSION.with(|s| s.borrow_mut().take());
    let cache = fetch::open_cache().await;
    let mut files = req.files.clone();
    let done_bytes = Rc::new(Cell::new(0u64));
    let mut all_cached = true;
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    // Sizes the catalog pins: a model too large is refused before any byte.
    room_for(&req.name, files.iter().filter_map(|f| f.size).sum())?;
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
                    room_for(&req.name, base + total.unwrap_or(received))?;
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
    finish(&req.id, &req.name, sha256, model, bytes, all_cached, t0);
    Ok(())
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

fn finish(
    id: &str,
    name: &str,
    sha256: Option<String>,
    model: Model,
    bytes: u64,
    from_cache: bool,
    t0: f64,
) {
    let c = &model.config;
    let ready = Reply::ModelReady {
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
    };
    MODEL.with(|m| *m.borrow_mut() = Some(Rc::new(model)));
    post(&ready);
}

/// Local files the user picked or dropped.
async fn load_files(id: String, files: Array) -> Result<(), Failure> {
    let t0 = now_ms();
    MODEL.with(|m| m.borrow_mut().take());
    SESSION.with(|s| s.borrow_mut().take());
    let sizes: f64 = files
        .iter()
        .filter_map(|f| f.dyn_into::<web_sys::File>().ok())
        .map(|f| f.size())
        .sum();
    room_for("These files", sizes as u64)?;
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
    finish(&id, &name, sha256, model, total, true, t0);
    Ok(())
}
