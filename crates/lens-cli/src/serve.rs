//! `linear-lens serve`: a small static file server for the web page.
//!
//! Serves the trunk build at `/` and the model cache at `/models/`, on
//! 127.0.0.1 only, with the cross-origin isolation headers the page needs
//! (COOP/COEP/CORP). std::net and one thread per connection; files are
//! streamed (never read whole), GET and HEAD only, one request per connection.

use crate::models;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The model the page loads on start.
const DEFAULT_MODEL: &str = "gemma-3-270m";
/// Longest request head we read (request line + headers).
const MAX_HEAD: usize = 16 * 1024;

/// Run the server until the process is killed.
pub fn run(port: u16, dist: &Path, models_dir: Option<PathBuf>) -> Result<(), String> {
    if !dist.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html: build the page first (`trunk build --release --offline`)",
            dist.display()
        ));
    }
    let models_dir = match models_dir {
        Some(d) => {
            let file = default_model_file();
            if !d.join(file).is_file() {
                eprintln!(
                    "warning: {} has no {file}: the page's default model will not load",
                    d.display()
                );
            }
            d
        }
        None => {
            // Serving the cache itself: make sure the default model is in it.
            models::resolve(DEFAULT_MODEL)?;
            models::cache_dir()
        }
    };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let roots = Roots {
        dist: dist.to_path_buf(),
        models: models_dir,
    };
    eprintln!(
        "page: {}  models: {}",
        roots.dist.display(),
        roots.models.display()
    );
    let mut out = io::stdout();
    writeln!(out, "serving http://127.0.0.1:{}/", addr.port()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;

    let roots = std::sync::Arc::new(roots);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let roots = roots.clone();
                std::thread::spawn(move || {
                    // A client hanging up mid-transfer is not our error.
                    let _ = handle(stream, &roots);
                });
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

fn default_model_file() -> &'static str {
    models::KNOWN
        .iter()
        .find(|k| k.id == DEFAULT_MODEL)
        .map(|k| k.file)
        .unwrap_or("")
}

struct Roots {
    dist: PathBuf,
    models: PathBuf,
}

/// Reply headers common to every response.
const COMMON_HEADERS: &str = "Cross-Origin-Opener-Policy: same-origin\r\n\
Cross-Origin-Embedder-Policy: require-corp\r\n\
Cross-Origin-Resource-Policy: same-origin\r\n\
X-Content-Type-Options: nosniff\r\n\
Cache-Control: no-cache\r\n\
Connection: close\r\n";

fn handle(stream: TcpStream, roots: &Roots) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let head = match read_head(&mut reader)? {
        Some(h) => h,
        None => return Ok(()),
    };
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m, t),
        _ => return send_status(&mut out, 400, "Bad Request", false),
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return send_status(&mut out, 405, "Method Not Allowed", false),
    };
    let path = match resolve_target(target, roots) {
        Resolved::File(p) => p,
        Resolved::Bad => return send_status(&mut out, 400, "Bad Request", head_only),
        Resolved::Missing => return send_status(&mut out, 404, "Not Found", head_only),
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(_) => return send_status(&mut out, 404, "Not Found", head_only),
    };
    let len = file.metadata()?.len();
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\n{COMMON_HEADERS}\r\n",
        content_type(&path)
    );
    out.write_all(header.as_bytes())?;
    if !head_only {
        // std::io::copy uses sendfile/splice on Linux: no whole-file buffer.
        io::copy(&mut file.take(len), &mut out)?;
    }
    out.flush()
}

/// The request line and headers, up to the blank line; `None` if the client
/// closed the connection before sending anything.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(if head.is_empty() { None } else { Some(head) });
        }
        if line == "\r\n" || line == "\n" {
            return Ok(Some(head));
        }
        head.push_str(&line);
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

fn send_status(out: &mut TcpStream, code: u16, reason: &str, head_only: bool) -> io::Result<()> {
    let body = format!("{code} {reason}\n");
    let header = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{COMMON_HEADERS}\r\n",
        body.len()
    );
    out.write_all(header.as_bytes())?;
    if !head_only {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}

#[derive(Debug, PartialEq)]
enum Resolved {
    File(PathBuf),
    Bad,
    Missing,
}

/// Map a request target to a file under one of the roots. Any `..`, `\`,
/// NUL or empty-but-dotted segment is refused, after percent-decoding.
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
        "txt" => "text/plain; charset=utf-8",
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
        };
        for bad in [
            "/../etc/passwd",
            "/models/../x",
            "/%2e%2e/x",
            "/a/./b",
            "/a\\..\\b",
            "relative",
        ] {
            assert_eq!(resolve_target(bad, &roots), Resolved::Bad, "{bad}");
        }
        assert_eq!(resolve_target("/missing.js?x=1", &roots), Resolved::Missing);
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
