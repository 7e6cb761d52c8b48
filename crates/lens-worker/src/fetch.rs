//! Downloads with progress, kept in Cache Storage so that the next visit
//! loads offline. A cached copy is used only when its size (and SHA-256,
//! when the catalog gives one) match; otherwise it is dropped and fetched
//! again, from the file's sources in order. The weights' SHA-256 for links.

use js_sys::{ArrayBuffer, Uint8Array};
use lens_protocol::{ErrorKind, FileSpec, ModelFormat};
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

/// GETs `url`, calling `on_bytes(received_in_this_file, content_length)` as
/// chunks arrive. `Ok(None)` for a 404 (an optional file that is not there).
/// A response announcing another length than `expect` fails before its
/// body is read (a static host's page in place of a model, say).
pub async fn download(
    url: &str,
    expect: Option<u64>,
    on_bytes: &dyn Fn(u64, Option<u64>),
) -> Result<Option<Vec<u8>>, Failure> {
    let net = |m: String| (ErrorKind::Network, m);
    let resp: Response = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| net(format!("cannot download {url}: {}", js_error(&e))))?
        .dyn_into()
        .map_err(|_| net("fetch did not return a Response".into()))?;
    if resp.status() == 404 {
        return Ok(None);
    }
    if !resp.ok() {
        let hint = if resp.status() == 401 || resp.status() == 403 {
            " (a gated model: accept its terms on huggingface.co, or load the files from disk)"
        } else {
            ""
        };
        return Err(net(format!(
            "cannot download {url}: HTTP {} {}{hint}",
            resp.status(),
            resp.status_text()
        )));
    }
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let (Some(t), Some(e)) = (total, expect) {
        if t != e {
            return Err((
                ErrorKind::BadModel,
                format!("{url} answered with {t} bytes, expected {e}"),
            ));
        }
    }
    let body = resp
        .body()
        .ok_or_else(|| net(format!("{url}: the response has no body")))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes: Vec<u8> = Vec::new();
    if let Some(t) = total {
        bytes.try_reserve_exact(t as usize).map_err(|_| {
            (
                ErrorKind::OutOfMemory,
                format!("no memory for {} MB", t >> 20),
            )
        })?;
    }
    on_bytes(0, total);
    let mut reported = 0u64;
    loop {
        let step: ReadableStreamReadResult = JsFuture::from(reader.read())
            .await
            .map_err(|e| {
                net(format!(
                    "the download of {url} broke off after {} MB: {}",
                    bytes.len() >> 20,
                    js_error(&e)
                ))
            })?
            .unchecked_into();
        if step.get_done().unwrap_or(false) {
            break;
        }
        let chunk: Uint8Array = step
            .get_value()
            .dyn_into()
            .map_err(|_| net("the body stream sent a non-byte chunk".into()))?;
        let start = bytes.len();
        let n = chunk.length() as usize;
        bytes.try_reserve(n).map_err(|_| {
            (
                ErrorKind::OutOfMemory,
                "out of memory while downloading".into(),
            )
        })?;
        bytes.resize(start + n, 0);
        chunk.copy_to(&mut bytes[start..]);
        let received = bytes.len() as u64;
        if received - reported >= 1 << 20 {
            on_bytes(received, total);
            reported = received;
        }
    }
    if let Some(t) = total {
        if bytes.len() as u64 != t {
            return Err(net(format!(
                "the download of {url} ended early: {} of {t} bytes",
                bytes.len()
            )));
        }
    }
    on_bytes(bytes.len() as u64, total);
    Ok(Some(bytes))
}

/// `file` from its first source that has it with the right bytes: a source
/// that fails or answers with other bytes is dropped with a notice and the
/// next is tried; a 404 passes to the next quietly (a static site has no
/// `./models/`). `Ok(None)`: no source has the file.
pub async fn from_sources(
    file: &FileSpec,
    on_bytes: &dyn Fn(u64, Option<u64>),
    notice: &dyn Fn(String),
) -> Result<Option<Vec<u8>>, Failure> {
    let urls: Vec<&String> = std::iter::once(&file.url).chain(&file.mirrors).collect();
    let mut last: Option<Failure> = None;
    for (k, url) in urls.iter().enumerate() {
        let got = match download(url, file.size, on_bytes).await {
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
