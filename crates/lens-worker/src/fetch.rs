//! Downloads with progress, kept in Cache Storage so that the next visit
//! loads offline. A cached copy is used only when its size (and SHA-256,
//! when the catalog gives one) match; otherwise it is dropped and fetched
//! again, from the file's sources in order; a download that breaks off or
//! stalls resumes by Range. The weights' SHA-256 for links.

use js_sys::{ArrayBuffer, Uint8Array};
use lens_protocol::{ErrorKind, FileSpec, ModelFormat};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Cache, DedicatedWorkerGlobalScope, ReadableStreamDefaultReader, ReadableStreamReadResult,
    Response,
};

use lens_protocol::catalog::MODEL_CACHE as CACHE_NAME;

/// A failure with its kind, for the page.
pub type Failure = (ErrorKind, String);

pub fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// A readable message from a JavaScript exception.
pub fn js_error(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    if let Some(e) = v.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", e.name(), e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

fn is_quota(v: &JsValue) -> bool {
    v.dyn_ref::<web_sys::DomException>()
        .is_some_and(|e| e.name() == "QuotaExceededError")
}

pub async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    let c = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?;
    c.dyn_into().ok()
}

/// Lowercase hex SHA-256 of `bytes` (SubtleCrypto: native speed).
pub async fn sha256_hex(bytes: &[u8]) -> Result<String, String> {
    let subtle = scope().crypto().map_err(|e| js_error(&e))?.subtle();
    // SubtleCrypto copies the data when the call is made.
    let view = Uint8Array::from(bytes);
    let promise = subtle
        .digest_with_str_and_buffer_source("SHA-256", &view)
        .map_err(|e| js_error(&e))?;
    let digest: ArrayBuffer = JsFuture::from(promise)
        .await
        .map_err(|e| js_error(&e))?
        .unchecked_into();
    Ok(Uint8Array::new(&digest)
        .to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The cached copy of `file`, if there is one that passes the checks.
pub async fn from_cache(cache: &Cache, file: &FileSpec) -> Option<Vec<u8>> {
    let hit = JsFuture::from(cache.match_with_str(&file.url)).await.ok()?;
    let resp: Response = hit.dyn_into().ok()?;
    let buf = JsFuture::from(resp.array_buffer().ok()?).await.ok()?;
    let bytes = Uint8Array::new(&buf).to_vec();
    if check(file, &bytes).await.is_ok() {
        Some(bytes)
    } else {
        let _ = JsFuture::from(cache.delete_with_str(&file.url)).await;
        None
    }
}

/// Stores `bytes` under `url`; a full quota is reported, not fatal.
pub async fn store(cache: &Cache, url: &str, bytes: &[u8]) -> Result<(), Failure> {
    let body = Uint8Array::from(bytes);
    let resp = Response::new_with_opt_buffer_source(Some(&body))
        .map_err(|e| (ErrorKind::Engine, js_error(&e)))?;
    match JsFuture::from(cache.put_with_str(url, &resp)).await {
        Ok(_) => Ok(()),
        Err(e) if is_quota(&e) => Err((
            ErrorKind::Quota,
            format!(
                "the browser's storage is full, so this model is not kept for offline use \
                 ({} MB); it still works for this visit. Clear stored models to make room.",
                bytes.len() >> 20
            ),
        )),
        Err(e) => Err((
            ErrorKind::Quota,
            format!(
                "the model could not be stored for offline use: {}",
                js_error(&e)
            ),
        )),
    }
}

/// No byte for this long and a connection is taken for stalled: it is
/// dropped and the download resumed where it stopped.
const STALL_MS: f64 = 15_000.0;
/// Resumes of one file at most.
const MAX_RESUMES: u32 = 6;
/// Resumes in a row that bring no new byte before giving up (the network is
/// gone, or the server breaks at the same place each time).
const MAX_FRUITLESS: u32 = 2;

/// Told `(received_in_this_file, content_length)` once a response's length
/// is known (before its body is read) and as chunks arrive; an error from it
/// stops the download (a model too large for the memory, say).
pub type OnBytes<'a> = &'a dyn Fn(u64, Option<u64>) -> Result<(), Failure>;

/// GETs `url`, calling `on_bytes` as chunks arrive. `Ok(None)` for a 404
/// (an optional file that is not there).
/// A response announcing another length than `expect` fails before its
/// body is read (a static host's page in place of a model, say). A
/// connection that breaks off or stalls is resumed from the byte where it
/// stopped (`Range`), with `notice` telling the page; a server that ignores
/// the range sends the whole file again.
pub async fn download(
    url: &str,
    expect: Option<u64>,
    on_bytes: OnBytes<'_>,
    notice: &dyn Fn(String),
) -> Result<Option<Vec<u8>>, Failure> {
    let mut got = Partial::default();
    let (mut resumes, mut fruitless, mut high) = (0u32, 0u32, 0usize);
    loop {
        let why = match attempt(url, expect, &mut got, on_bytes).await {
            Ok(true) => return Ok(Some(got.bytes)),
            Ok(false) => return Ok(None),
            Err(Break::Fatal(f)) => return Err(f),
            Err(Break::Interrupted(why)) => why,
        };
        let fruitful = got.bytes.len() > high;
        fruitless = if fruitful { 0 } else { fruitless + 1 };
        high = high.max(got.bytes.len());
        let Some(total) = got
            .total
            .filter(|_| resumes < MAX_RESUMES && fruitless < MAX_FRUITLESS)
        else {
            return Err((
                ErrorKind::Network,
                format!(
                    "the download of {url} {why} after {} MB",
                    got.bytes.len() >> 20
                ),
            ));
        };
        resumes += 1;
        notice(format!(
            "The download of {} {why} at {} of {} MB; resuming from there.",
            file_name(url),
            got.bytes.len() >> 20,
            total >> 20
        ));
        if !fruitful {
            // Give a flaky network a moment before asking again.
            sleep_ms(1000 * fruitless as i32).await;
        }
    }
}

/// What a download holds so far, across its attempts.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    /// The whole file's length, once a response said it.
    total: Option<u64>,
}

enum Break {
    /// The connection broke off or stalled: worth resuming.
    Interrupted(String),
    /// The server's answer itself is wrong: not worth asking again.
    Fatal(Failure),
}

/// One request for the rest of the file (all of it when nothing is held):
/// `Ok(true)` when the file is complete, `Ok(false)` for a 404.
async fn attempt(
    url: &str,
    expect: Option<u64>,
    got: &mut Partial,
    on_bytes: OnBytes<'_>,
) -> Result<bool, Break> {
    let fatal = |kind, m: String| Break::Fatal((kind, m));
    let engine = |e: JsValue| Break::Fatal((ErrorKind::Engine, js_error(&e)));
    let from = got.bytes.len() as u64;
    let dog = Watchdog::start().map_err(engine)?;
    let init = web_sys::RequestInit::new();
    init.set_signal(Some(&dog.controller.signal()));
    if from > 0 {
        let headers = web_sys::Headers::new().map_err(engine)?;
        headers
            .set("Range", &format!("bytes={from}-"))
            .map_err(engine)?;
        init.set_headers(&headers);
    }
    let resp: Response = JsFuture::from(scope().fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| dog.interrupted(&e, "could not start"))?
        .dyn_into()
        .map_err(|_| fatal(ErrorKind::Network, "fetch did not return a Response".into()))?;
    let length = header_u64(&resp, "content-length");
    match resp.status() {
        404 if from == 0 => return Ok(false),
        200 => {
            // The whole file: the first request, or a server that ignores ranges.
            if let (Some(t), Some(e)) = (length, expect) {
                if t != e {
                    return Err(fatal(
                        ErrorKind::BadModel,
                        format!("{url} answered with {t} bytes, expected {e}"),
                    ));
                }
            }
            got.bytes.clear();
            got.total = length;
            on_bytes(0, length).map_err(Break::Fatal)?;
            if let Some(t) = length {
                got.bytes.try_reserve_exact(t as usize).map_err(|_| {
                    fatal(
                        ErrorKind::OutOfMemory,
                        format!("no memory for {} MB", t >> 20),
                    )
                })?;
            }
        }
        206 if from > 0 => {
            // The rest, from the byte asked for, of the same length of file.
            let total = got.total.unwrap_or(0);
            let range = resp.headers().get("content-range").ok().flatten();
            let same = match range.as_deref().and_then(parse_content_range) {
                Some((start, size)) => start == from && size == total,
                // A cross-origin server that hides Content-Range: its length says.
                None => length == Some(total - from),
            };
            if !same {
                return Err(fatal(
                    ErrorKind::Network,
                    format!(
                        "{url} answered a resume from byte {from} with {}",
                        range.unwrap_or_else(|| "another range".into())
                    ),
                ));
            }
        }
        status => {
            let hint = if status == 401 || status == 403 {
                " (a gated model: accept its terms on huggingface.co, or load the files from disk)"
            } else {
                ""
            };
            return Err(fatal(
                ErrorKind::Network,
                format!(
                    "cannot download {url}: HTTP {status} {}{hint}",
                    resp.status_text()
                ),
            ));
        }
    }
    let total = got.total;
    let body = resp.body().ok_or_else(|| {
        fatal(
            ErrorKind::Network,
            format!("{url}: the response has no body"),
        )
    })?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    on_bytes(got.bytes.len() as u64, total).map_err(Break::Fatal)?;
    let mut reported = got.bytes.len() as u64;
    loop {
        let step: ReadableStreamReadResult = JsFuture::from(reader.read())
            .await
            .map_err(|e| dog.interrupted(&e, "broke off"))?
            .unchecked_into();
        if step.get_done().unwrap_or(false) {
            break;
        }
        dog.fed();
        let chunk: Uint8Array = step.get_value().dyn_into().map_err(|_| {
            fatal(
                ErrorKind::Network,
                "the body stream sent a non-byte chunk".into(),
            )
        })?;
        let start = got.bytes.len();
        let n = chunk.length() as usize;
        if total.is_some_and(|t| (start + n) as u64 > t) {
            return Err(fatal(
                ErrorKind::Network,
                format!("{url} sent more bytes than it announced"),
            ));
        }
        got.bytes.try_reserve(n).map_err(|_| {
            fatal(
                ErrorKind::OutOfMemory,
                "out of memory while downloading".into(),
            )
        })?;
        got.bytes.resize(start + n, 0);
        chunk.copy_to(&mut got.bytes[start..]);
        let received = got.bytes.len() as u64;
        if received - reported >= 1 << 20 {
            on_bytes(received, total).map_err(Break::Fatal)?;
            reported = received;
        }
    }
    if let Some(t) = total {
        if (got.bytes.len() as u64) < t {
            return Err(Break::Interrupted(format!(
                "ended early ({} of {t} bytes)",
                got.bytes.len()
            )));
        }
    }
    on_bytes(got.bytes.len() as u64, total).map_err(Break::Fatal)?;
    Ok(true)
}

fn header_u64(resp: &Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse().ok())
}

/// `bytes START-END/SIZE` → (START, SIZE).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, size.trim().parse().ok()?))
}

/// The last path segment of `url`, for messages.
fn file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

async fn sleep_ms(ms: i32) {
    let wait = js_sys::Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(wait).await;
}

/// Aborts one request when no byte arrived for `STALL_MS`: a connection
/// that hangs without breaking ends, and the download resumes.
struct Watchdog {
    controller: web_sys::AbortController,
    last: Rc<Cell<f64>>,
    stalled: Rc<Cell<bool>>,
    handle: i32,
    _tick: Closure<dyn FnMut()>,
}

impl Watchdog {
    fn start() -> Result<Watchdog, JsValue> {
        let controller = web_sys::AbortController::new()?;
        let last = Rc::new(Cell::new(js_sys::Date::now()));
        let stalled = Rc::new(Cell::new(false));
        let tick = {
            let (controller, last, stalled) = (controller.clone(), last.clone(), stalled.clone());
            Closure::<dyn FnMut()>::new(move || {
                if !stalled.get() && js_sys::Date::now() - last.get() > STALL_MS {
                    stalled.set(true);
                    controller.abort();
                }
            })
        };
        let handle = scope().set_interval_with_callback_and_timeout_and_arguments_0(
            tick.as_ref().unchecked_ref(),
            1000,
        )?;
        Ok(Watchdog {
            controller,
            last,
            stalled,
            handle,
            _tick: tick,
        })
    }

    fn fed(&self) {
        self.last.set(js_sys::Date::now());
    }

    /// The request failed with `e`: stalled (we aborted it) or `what`.
    fn interrupted(&self, e: &JsValue, what: &str) -> Break {
        Break::Interrupted(if self.stalled.get() {
            format!("stalled (no data for {} s)", STALL_MS / 1000.0)
        } else {
            format!("{what} ({})", js_error(e))
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        scope().clear_interval_with_handle(self.handle);
    }
}

/// `file` from its first source that has it with the right bytes: a source
/// that fails or answers with other bytes is dropped with a notice and the
/// next is tried; a 404 passes to the next quietly (a static site has no
/// `./models/`). `Ok(None)`: no source has the file.
pub async fn from_sources(
    file: &FileSpec,
    on_bytes: OnBytes<'_>,
    notice: &dyn Fn(String),
) -> Result<Option<Vec<u8>>, Failure> {
    let urls: Vec<&String> = std::iter::once(&file.url).chain(&file.mirrors).collect();
    let mut last: Option<Failure> = None;
    for (k, url) in urls.iter().enumerate() {
        let got = match download(url, file.size, on_bytes, notice).await {
            Ok(Some(b)) => check(file, &b).await.map(|()| Some(b)),
            other => other,
        };
        let next = urls.get(k + 1);
        match got {
            Ok(Some(b)) => return Ok(Some(b)),
            Ok(None) => continue,
            Err(f) if next.is_none() => return Err(f),
            Err((kind, why)) => {
                notice(format!(
                    "{} was not taken from {url} ({why}); trying {} instead.",
                    file.name,
                    next.map_or("", |u| u.as_str())
                ));
                last = Some((kind, why));
            }
        }
    }
    // Every source failed or had no such file: the last failure says why.
    match last {
        Some(f) => Err(f),
        None => Ok(None),
    }
}

/// `bytes` are `file`'s: its size and SHA-256, where known.
async fn check(file: &FileSpec, bytes: &[u8]) -> Result<(), Failure> {
    if let Some(s) = file.size {
        if s != bytes.len() as u64 {
            return Err((
                ErrorKind::BadModel,
                format!("{} has {} bytes, expected {s}", file.name, bytes.len()),
            ));
        }
    }
    if let Some(want) = &file.sha256 {
        let got = sha256_hex(bytes)
            .await
            .map_err(|e| (ErrorKind::Engine, e))?;
        if &got != want {
            return Err((
                ErrorKind::BadModel,
                format!(
                    "{} is corrupt: its SHA-256 is {got}, expected {want}",
                    file.name
                ),
            ));
        }
    }
    Ok(())
}

/// SHA-256 of the weights file (the GGUF, or `model.safetensors`): the
/// checked hash where the catalog pinned it, else computed (SubtleCrypto);
/// `None` for sharded weights. Links record it.
pub async fn weights_sha256(
    format: ModelFormat,
    got: &[(String, Vec<u8>)],
    specs: &[FileSpec],
) -> Option<String> {
    let (name, bytes) = got.iter().find(|(n, b)| match format {
        ModelFormat::Gguf => n.to_ascii_lowercase().ends_with(".gguf") || b.starts_with(b"GGUF"),
        ModelFormat::Safetensors => n == "model.safetensors",
    })?;
    match specs
        .iter()
        .find(|f| &f.name == name)
        .and_then(|f| f.sha256.clone())
    {
        Some(pinned) => Some(pinned),
        None => sha256_hex(bytes).await.ok(),
    }
}
