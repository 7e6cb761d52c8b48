//! An engine worker, seen from the page: typed requests out, typed replies
//! in (a chunk of `J`'s values beside its reply as a transferred
//! `ArrayBuffer`). Cancelling terminates the worker (that stops any stage at
//! once) and starts a fresh one, which reports `Started` again.

use crate::browser::js_error;
use js_sys::{Array, ArrayBuffer};
use lens_protocol::{ErrorKind, Reply, Request};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

/// Which build of the engine worker this page runs, chosen once when the
/// page starts: the relaxed-SIMD build (products by fused multiply-add)
/// where this browser validates relaxed SIMD, else the SIMD128 one.
/// `?engine=simd128` in the page's address forces the SIMD128 build (to
/// compare the two on one browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineBuild {
    Fma,
    Simd128,
}

/// A module of one function returning `f32x4.relaxed_madd` of three
/// constant vectors: it validates only where relaxed SIMD does.
pub fn relaxed_probe() -> Vec<u8> {
    let mut m = vec![
        0, 97, 115, 109, 1, 0, 0, 0, // magic, version
        1, 5, 1, 0x60, 0, 1, 0x7b, // types: one, () -> v128
        3, 2, 1, 0, // functions: one, of type 0
        10, 61, 1, 59, 0, // code: 61 bytes, one body of 59, no locals
    ];
    for _ in 0..3 {
        m.extend([0xfd, 0x0c]); // v128.const
        m.extend([0; 16]);
    }
    m.extend([0xfd, 0x85, 0x02, 0x0b]); // f32x4.relaxed_madd (0x105), end
    m
}

impl EngineBuild {
    pub fn get() -> Self {
        thread_local! {
            static BUILD: EngineBuild = EngineBuild::choose();
        }
        BUILD.with(|b| *b)
    }

    fn choose() -> Self {
        if crate::browser::query_param("engine").as_deref() == Some("simd128") {
            return EngineBuild::Simd128;
        }
        let probe = js_sys::Uint8Array::from(&relaxed_probe()[..]);
        match js_sys::WebAssembly::validate(&probe.into()) {
            Ok(true) => EngineBuild::Fma,
            _ => EngineBuild::Simd128,
        }
    }

    /// trunk's loader for this build's binary (see index.html).
    fn url(self) -> &'static str {
        match self {
            EngineBuild::Fma => "./worker_fma_loader.js",
            EngineBuild::Simd128 => "./worker_loader.js",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineBuild::Fma => "fma",
            EngineBuild::Simd128 => "simd128",
        }
    }

    /// The footer's words for it.
    pub fn label(self) -> &'static str {
        match self {
            EngineBuild::Fma => "WebAssembly SIMD with fused multiply-add (relaxed SIMD)",
            EngineBuild::Simd128 => "WebAssembly SIMD128",
        }
    }
}

type Handler = Closure<dyn FnMut(JsValue)>;

/// A reply, with the buffer that came beside it.
pub type OnReply = Rc<dyn Fn(Reply, Option<ArrayBuffer>)>;

pub struct Engine {
    worker: RefCell<Option<Worker>>,
    on_reply: OnReply,
    /// Called when the worker dies (a trap: out of memory, a panic).
    on_crash: Rc<dyn Fn(String)>,
    // Keep the closures alive as long as their worker.
    handlers: RefCell<Vec<Handler>>,
}

impl Engine {
    pub fn new(on_reply: OnReply, on_crash: Rc<dyn Fn(String)>) -> Rc<Self> {
        let e = Rc::new(Self {
            worker: RefCell::new(None),
            on_reply,
            on_crash,
            handlers: RefCell::new(Vec::new()),
        });
        e.spawn();
        e
    }

    /// Starts a worker (terminating the previous one).
    pub fn spawn(&self) {
        if let Some(w) = self.worker.borrow_mut().take() {
            w.terminate();
        }
        self.handlers.borrow_mut().clear();
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Classic);
        let worker = match Worker::new_with_options(EngineBuild::get().url(), &opts) {
            Ok(w) => w,
            Err(e) => return (self.on_crash)(format!("cannot start the engine: {}", js_error(e))),
        };
        let on_reply = self.on_reply.clone();
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let Some(data) = ev.dyn_ref::<MessageEvent>().map(|m| m.data()) else {
                return;
            };
            // `[reply, ArrayBuffer]` for a chunk of J; the reply alone otherwise.
            let (value, buffer) = match data.dyn_ref::<Array>() {
                Some(a) => (a.get(0), a.get(1).dyn_into::<ArrayBuffer>().ok()),
                None => (data, None),
            };
            match Reply::from_js(value) {
                Ok(r) => on_reply(r, buffer),
                Err(e) => web_sys::console::error_1(&e.to_string().into()),
            }
        });
        let on_crash = self.on_crash.clone();
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let msg = ev
                .dyn_ref::<ErrorEvent>()
                .map(|e| e.message())
                .unwrap_or_else(|| "the engine worker failed".into());
            on_crash(msg);
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        self.handlers.borrow_mut().extend([on_message, on_error]);
        *self.worker.borrow_mut() = Some(worker);
    }

    pub fn post(&self, req: &Request) {
        // Encoded first: a failure calls back into the page, which may
        // restart this worker.
        let Some(v) = self.encoded(req) else {
            return;
        };
        if let Some(w) = self.worker.borrow().as_ref() {
            let _ = w.post_message(&v);
        }
    }

    /// A request with a buffer beside it, transferred (not copied).
    pub fn post_buffer(&self, req: &Request, buffer: &ArrayBuffer) {
        let Some(v) = self.encoded(req) else {
            return;
        };
        if let Some(w) = self.worker.borrow().as_ref() {
            let msg = Array::of2(&v, buffer);
            let _ = w.post_message_with_transfer(&msg, &Array::of1(buffer));
        }
    }

    /// `req` as a JS value. One that cannot be encoded is never sent: its
    /// job fails with why (in the console too), as if the worker had said so.
    fn encoded(&self, req: &Request) -> Option<JsValue> {
        match req.to_js() {
            Ok(v) => Some(v),
            Err(e) => {
                web_sys::console::error_1(&e.to_string().into());
                let failed = Reply::Failed {
                    job: req.job(),
                    kind: ErrorKind::Engine,
                    message: e.to_string(),
                };
                (self.on_reply)(failed, None);
                None
            }
        }
    }

    /// Stops the worker for good.
    pub fn terminate(&self) {
        if let Some(w) = self.worker.borrow_mut().take() {
            w.terminate();
        }
        self.handlers.borrow_mut().clear();
    }

    /// A `LoadFiles` request with the `File`s beside it.
    pub fn post_files(&self, req: &Request, files: &Array) {
        let Some(v) = self.encoded(req) else {
            return;
        };
        if let Some(w) = self.worker.borrow().as_ref() {
            let _ = w.post_message(&Array::of2(&v, files));
        }
    }
}
