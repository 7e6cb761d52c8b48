//! Fetch a model file with a progress callback, streaming the response body
//! into one buffer allocated up front (no second copy of 250 MB).

use crate::browser::js_error;
use js_sys::Uint8Array;
use std::sync::Arc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStreamDefaultReader, ReadableStreamReadResult, Response};

/// Report progress at most every this many bytes (and at the end).
const PROGRESS_STEP: u64 = 1 << 20;

/// Where the received bytes go: a buffer of the announced size, or a growing
/// one when the server sent no Content-Length.
enum Sink {
    Fixed { buf: Arc<[u8]>, filled: usize },
    Growing(Vec<u8>),
}

impl Sink {
    fn len(&self) -> usize {
        match self {
            Sink::Fixed { filled, .. } => *filled,
            Sink::Growing(v) => v.len(),
        }
    }

    fn push(&mut self, chunk: &Uint8Array) -> Result<(), String> {
        let n = chunk.length() as usize;
        match self {
            Sink::Fixed { buf, filled } => {
                let dst = Arc::get_mut(buf).ok_or("download buffer is shared")?;
                let end = *filled + n;
                if end > dst.len() {
                    return Err(format!(
                        "the server sent more than the announced {} bytes",
                        dst.len()
                    ));
                }
                chunk.copy_to(&mut dst[*filled..end]);
                *filled = end;
            }
            Sink::Growing(v) => {
                let start = v.len();
                v.resize(start + n, 0);
                chunk.copy_to(&mut v[start..]);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Arc<[u8]>, String> {
        match self {
            Sink::Fixed { buf, filled } if filled == buf.len() => Ok(buf),
            Sink::Fixed { buf, filled } => Err(format!(
                "the download ended early: {filled} of {} bytes",
                buf.len()
            )),
            Sink::Growing(v) => Ok(Arc::from(v)),
        }
    }
}

/// GET `url`; calls `on_progress(received, total)` as bytes arrive.
pub async fn fetch_bytes(
    url: &str,
    on_progress: impl Fn(u64, Option<u64>),
) -> Result<Arc<[u8]>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp: Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot fetch {url}: {}", js_error(e)))?
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_string())?;
    if !resp.ok() {
        return Err(format!(
            "cannot fetch {url}: HTTP {} {}",
            resp.status(),
            resp.status_text()
        ));
    }
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let body = resp
        .body()
        .ok_or_else(|| format!("{url}: the response has no body"))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut sink = match total {
        Some(n) => Sink::Fixed {
            buf: std::iter::repeat_n(0u8, n as usize).collect(),
            filled: 0,
        },
        None => Sink::Growing(Vec::new()),
    };
    on_progress(0, total);
    let mut reported = 0u64;
    loop {
        let step: ReadableStreamReadResult = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("reading {url} failed: {}", js_error(e)))?
            .unchecked_into();
        if step.get_done().unwrap_or(false) {
            break;
        }
        let chunk: Uint8Array = step
            .get_value()
            .dyn_into()
            .map_err(|_| "the body stream sent a non-byte chunk")?;
        sink.push(&chunk)?;
        let received = sink.len() as u64;
        if received - reported >= PROGRESS_STEP {
            on_progress(received, total);
            reported = received;
        }
    }
    on_progress(sink.len() as u64, total);
    sink.finish()
}
