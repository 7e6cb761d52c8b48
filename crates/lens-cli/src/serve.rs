//! `linear-lens serve`: the web page (trunk's dist) at `/` and the model
//! cache at `/models/`, the same layout as the static site plus the
//! catalog's first source (`./models/`).
//!
//! hyper speaks HTTP/1.1 (keep-alive, a deadline on request heads);
//! tower-http's file service answers each file: Range (206/416), HEAD,
//! ETag and Last-Modified with their conditional requests (304). What is
//! ours: 127.0.0.1 only, a Host header naming it (a DNS-rebinding page
//! cannot read through the browser), at most `max_connections` open at once
//! (the rest wait in the accept queue), and a request path that cannot leave
//! the two roots (`..`, `\`, NUL refused after percent-decoding; `/models/`
//! serves only model files that sit directly in the folder). Symlinks the
//! owner put inside a root are followed: a Hugging Face cache is made of them.

use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// A client must send a whole request head within this time, the first one
/// and each one after on a kept-alive connection: idle connections close and
/// give their slot back.
const HEAD_DEADLINE: Duration = Duration::from_secs(30);
/// Largest request head read (hyper's read buffer).
const MAX_HEAD: usize = 16 * 1024;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Run the server until the process is killed.
pub fn run(
    port: u16,
    dist: &Path,
    models_dir: Option<PathBuf>,
    max_connections: usize,
) -> Result<(), String> {
    if !dist.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html: build the page first (`trunk build --release --offline`)",
            dist.display()
        ));
    }
    if max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    // The model the page loads on start: the catalog's default.
    let catalog = lens_protocol::Catalog::builtin()?;
    let default = catalog.default.clone();
    let models_dir = match models_dir {
        Some(d) => {
            let file = catalog.gguf_file(&default).map_or("", |f| f.name.as_str());
            if !d.join(file).is_file() {
                eprintln!(
                    "warning: {} has no {file}: the page's default model comes from its \
                     Hugging Face source instead",
                    d.display()
                );
            }
            d
        }
        None => {
            // Serving the cache itself: make sure the default model is in it.
            lens_local::resolve(&default)?;
            lens_local::cache_dir()
        }
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let roots = Arc::new(Roots {
        dist: dist.to_path_buf(),
        models: models_dir,
        port,
    });
    eprintln!(
        "page: {}  models: {}  (at most {max_connections} connections)",
        roots.dist.display(),
        roots.models.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout();
        writeln!(out, "serving http://127.0.0.1:{port}/").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        accept_loop(listener, roots, max_connections).await;
        Ok(())
    })
}

struct Roots {
    dist: PathBuf,
    models: PathBuf,
    port: u16,
}

/// Accepts connections while a slot is free; each connection holds its slot
/// until it closes.
async fn accept_loop(listener: tokio::net::TcpListener, roots: Arc<Roots>, max: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let roots = roots.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(req, roots.clone()));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_DEADLINE)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            // A client hanging up mid-transfer is not our error.
            let _ = connection.await;
            drop(slot);
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    roots: Arc<Roots>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let mut resp = answer(req, &roots).await;
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Revalidate every time: a rebuilt page is seen at once, an unchanged
    // file costs a 304.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn answer(req: Request<Incoming>, roots: &Roots) -> Response<Body> {
    if !loopback_host(req.headers().get(header::HOST), roots.port) {
        return status(
            StatusCode::FORBIDDEN,
            "this server answers only to 127.0.0.1 and localhost",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = match resolve_target(req.uri().path(), roots) {
        Resolved::File(p) => p,
        Resolved::Bad => return status(StatusCode::BAD_REQUEST, "bad path"),
        Resolved::Missing => return status(StatusCode::NOT_FOUND, "not found"),
    };
    let mime: mime::Mime = content_type(&path)
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    match ServeFile::new_with_mime(&path, &mime).oneshot(req).await {
        Ok(resp) => resp.map(|b| b.map_err(std::io::Error::other).boxed_unsync()),
        Err(e) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot read {}: {e}", path.display()),
        ),
    }
}

fn status(code: StatusCode, text: &str) -> Response<Body> {
    let body = format!("{} {text}\n", code.as_u16());
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The Host header names this server on loopback (HTTP/1.1 requires one).
fn loopback_host(host: Option<&HeaderValue>, port: u16) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, p)) if !name.is_empty() && !p.contains(']') => {
            if p.parse::<u16>() != Ok(port) {
                return false;
            }
            name
        }
        _ => host,
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "localhost" | "[::1]"
    )
}

#[derive(Debug, PartialEq)]
enum Resolved {
    File(PathBuf),
    Bad,
    Missing,
}

/// Map a request path to a file under one of the roots. Any `..`, `\`,
/// NUL or `.` segment is refused, after percent-decoding.
fn resolve_target(target: &str, roots: &Roots) -> Resolved {
    let raw = target.split(['?', '#']).next().unwrap_or("");
    if !raw.starts_with('/') {
        return Resolved::Bad;
    }
    let Some(decoded) = percent_decode(raw) else {
        return Resolved::Bad;
    };
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .iter()
        .any(|s| *s == "." || *s == ".." || s.contains(['\\', '\0']))
    {
        return Resolved::Bad;
    }
    let (root, rest) = match segments.split_first() {
        // The model cache also holds a build folder: serve only model files
        // that sit directly in it.
        Some((&"models", rest)) if !model_file(rest) => return Resolved::Missing,
        Some((&"models", rest)) => (&roots.models, rest),
        _ => (&roots.dist, &segments[..]),
    };
    let mut path = root.clone();
    for s in rest {
        path.push(s);
    }
    if path.is_dir() {
        path.push("index.html");
    }
    if path.is_file() {
        Resolved::File(path)
    } else {
        Resolved::Missing
    }
}

fn model_file(rest: &[&str]) -> bool {
    let [name] = rest else { return false };
    let lower = name.to_ascii_lowercase();
    [".gguf", ".safetensors", ".json"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// `%XX` decoding; `None` for malformed escapes or non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream", // .gguf, .safetensors, ...
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_traversal() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%2e%2E/x").as_deref(), Some("/../x"));
        assert_eq!(percent_decode("/%2"), None);
        let roots = Roots {
            dist: PathBuf::from("/nonexistent-dist"),
            models: PathBuf::from("/nonexistent-models"),
            port: 1,
        };
        for bad in [
            "/../etc/passwd",
            "/models/../x",
            "/%2e%2e/x",
            "/a/./b",
            "/a\\..\\b",
            "/a%00b",
            "relative",
        ] {
            assert_eq!(resolve_target(bad, &roots), Resolved::Bad, "{bad}");
        }
        assert_eq!(resolve_target("/missing.js?x=1", &roots), Resolved::Missing);
    }

    #[test]
    fn hosts() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "[::1]",
            "localhost",
        ] {
            assert!(loopback_host(h(ok).as_ref(), 8080), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:9090",
            "evil.example",
            "",
            ":8080",
        ] {
            assert!(!loopback_host(h(bad).as_ref(), 8080), "{bad}");
        }
        assert!(!loopback_host(None, 8080));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a/web_bg.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("m.gguf")),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(Path::new("index.HTML")),
            "text/html; charset=utf-8"
        );
    }
}
