//! Message handling: a model loaded (`load`) and kept, runs, the pool's
//! messages.

use crate::fetch::{scope, Failure};
use crate::link::{post_rows, to_inbox, PageLink};
use crate::load;
use crate::outbox::{fail, now_ms, post, post_with_bytes};
use crate::{pool, run, tuning};
use js_sys::{Array, Uint8Array};
use lens_engine::Model;
use lens_gpu::Gpu;
use lens_protocol::messages::RunRequest;
use lens_protocol::pool::Chunk;
use lens_protocol::{BackendChoice, ErrorKind, Reply, Request};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
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

/// A model loaded (it becomes the worker's, and the page hears it is
/// ready), or why not.
fn installed(loaded: Result<(Model, Reply), Failure>) {
    match loaded {
        Ok((model, ready)) => {
            MODEL.with(|m| *m.borrow_mut() = Some(Rc::new(model)));
            post(&ready);
        }
        Err(f) => fail(None, f),
    }
}

/// The model and its last run let go before another loads (their memory
/// is needed for it).
fn let_go() {
    MODEL.with(|m| m.borrow_mut().take());
    SESSION.with(|s| s.borrow_mut().take());
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
                let_go();
                installed(load::remote(model, memory_limit).await);
            }),
            Request::LoadFiles { id, memory_limit } => spawn_local(async move {
                LIMIT.with(|l| l.set(memory_limit));
                let_go();
                let files = files.map(|f| Array::from(&f)).unwrap_or_default();
                installed(load::files(id, files, memory_limit).await);
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
            Request::Peaks { job, budget_ms } => {
                let peaks = lens_engine::backend::tiled::kernel_peaks(&now_ms, budget_ms);
                post(&Reply::Peaks { job, peaks });
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
