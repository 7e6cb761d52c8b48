//! Replies to the page: JS values (`lens_protocol::wire`), with a large
//! array beside one as a transferred `ArrayBuffer` (`[reply, buffer]`).

use crate::fetch::scope;
use js_sys::{Array, Uint8Array};
use lens_protocol::{ErrorKind, Reply};
use wasm_bindgen::{JsCast, JsValue};

/// `reply` as a JS value. One that cannot be encoded becomes the failure
/// of its job, so the page hears why instead of getting an empty message.
fn encoded(reply: &Reply) -> Option<JsValue> {
    let e = match reply.to_js() {
        Ok(v) => return Some(v),
        Err(e) => e,
    };
    web_sys::console::error_1(&e.to_string().into());
    let failed = Reply::Failed {
        job: reply.job(),
        kind: ErrorKind::Engine,
        message: e.to_string(),
    };
    // A failure is an id and strings: it encodes (or the console has it).
    failed.to_js().ok()
}

/// The worker's clock (ms): what load and run times are told in.
pub fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

/// A failure, of job `job` (or of the model's load).
pub fn fail(job: Option<u32>, (kind, message): crate::fetch::Failure) {
    post(&Reply::Failed { job, kind, message });
}

pub fn post(reply: &Reply) {
    if let Some(v) = encoded(reply) {
        let _ = scope().post_message(&v);
    }
}

/// `[reply, ArrayBuffer]`, the buffer transferred (not copied). A reply
/// that cannot be encoded goes as its failure, without the bytes.
pub fn post_with_bytes(reply: &Reply, values: Vec<u8>) {
    let Ok(v) = reply.to_js() else {
        return post(reply);
    };
    let bytes = Uint8Array::from(values.as_slice());
    drop(values);
    let buffer = bytes.buffer();
    let msg = Array::of2(&v, &buffer);
    let _ = scope().post_message_with_transfer(&msg, &Array::of1(&buffer));
}
