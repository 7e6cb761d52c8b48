//! `linear-lens serve`: start the binary on a free port, talk plain HTTP/1.1
//! to it over TcpStreams, check status codes, headers and bodies: the site's
//! layout, Range, HEAD, ETag/304, keep-alive, the bound on connections, the
//! Host check and paths that try to leave the roots.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server even when an assertion fails.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("lens-serve-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A dist with an index and a wasm file, a models folder with a 100 kB model.
struct Roots {
    dist: PathBuf,
    models: PathBuf,
    index: &'static str,
    model: Vec<u8>,
}

impl Roots {
    fn new() -> Roots {
        let dist = temp_dir("dist");
        let models = temp_dir("models");
        let index = "<!doctype html><title>Linear Lens</title>";
        std::fs::write(dist.join("index.html"), index).unwrap();
        std::fs::write(dist.join("web_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let model: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(models.join("tiny.gguf"), &model).unwrap();
        Roots {
            dist,
            models,
            index,
            model,
        }
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linear-lens"))
            .args(["serve", "--port", "0", "--dist"])
            .arg(&self.dist)
            .arg("--models")
            .arg(&self.models)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("serving http://127.0.0.1:")
            .and_then(|r| r.strip_suffix('/'))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        assert_ne!(port, 0);
        Server { child, port }
    }
}

impl Drop for Roots {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dist);
        let _ = std::fs::remove_dir_all(&self.models);
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    BufReader::new(s)
}

/// Sends one request on `conn` (kept alive) and reads its reply: the head,
/// then Content-Length bytes (none for HEAD and 304).
fn exchange(conn: &mut BufReader<TcpStream>, method: &str, path: &str, headers: &[&str]) -> Reply {
    let port = conn.get_ref().peer_addr().unwrap().port();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    read_reply(conn, method == "HEAD")
}

fn read_reply(conn: &mut BufReader<TcpStream>, head_only: bool) -> Reply {
    let mut status_line = String::new();
    conn.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line:?}");
    let status = status_line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("malformed header");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only && status != 304 {
        let n: usize = reply
            .header("Content-Length")
            .expect("a Content-Length")
            .parse()
            .unwrap();
        reply.body = vec![0; n];
        conn.read_exact(&mut reply.body).unwrap();
    }
    reply
}

/// The test model, with `headers`, on a kept-alive connection.
fn get_model(conn: &mut BufReader<TcpStream>, headers: &[&str]) -> Reply {
    exchange(conn, "GET", "/models/tiny.gguf", headers)
}

fn get(port: u16, path: &str, headers: &[&str]) -> Reply {
    exchange(&mut connect(port), "GET", path, headers)
}

#[test]
fn serves_the_site_layout_with_ranges_and_revalidation() {
    let roots = Roots::new();
    let server = roots.serve(&[]);
    let port = server.port;

    // One kept-alive connection carries the page's first requests.
    let mut conn = connect(port);
    let r = exchange(&mut conn, "GET", "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, roots.index.as_bytes());
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    // The same as a static host: the page needs no cross-origin isolation,
    // and an embed inside another origin's iframe must not be refused.
    for h in [
        "Cross-Origin-Opener-Policy",
        "Cross-Origin-Embedder-Policy",
        "Cross-Origin-Resource-Policy",
    ] {
        assert_eq!(r.header(h), None, "{h}");
    }
    let r = exchange(&mut conn, "GET", "/web_bg.wasm", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/wasm"));

    let r = get_model(&mut conn, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert!(r.body == roots.model, "model bytes differ");
    let etag = r.header("ETag").expect("an ETag").to_string();
    assert!(r.header("Last-Modified").is_some());

    let r = exchange(&mut conn, "HEAD", "/models/tiny.gguf", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert_eq!(r.header("ETag"), Some(etag.as_str()));

    // Revalidation: the same ETag costs a 304 and no body.
    let inm = format!("If-None-Match: {etag}");
    let r = get_model(&mut conn, &[&inm]);
    assert_eq!(r.status, 304);
    let r = get_model(&mut conn, &["If-None-Match: \"other\""]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 100_000);

    // Ranges: a stalled download resumes from where it stopped.
    let r = get_model(&mut conn, &["Range: bytes=1000-1999"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 1000-1999/100000"));
    assert!(r.body == roots.model[1000..2000]);
    let r = get_model(&mut conn, &["Range: bytes=99990-"]);
    assert_eq!(r.status, 206);
    assert!(r.body == roots.model[99_990..]);
    let r = get_model(&mut conn, &["Range: bytes=200000-"]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100000"));

    let r = exchange(&mut conn, "GET", "/models/missing.gguf", &[]);
    assert_eq!(r.status, 404);
    let r = exchange(&mut conn, "POST", "/", &["Content-Length: 0"]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
}

#[test]
fn no_path_leaves_the_roots_and_only_loopback_names_are_answered() {
    let roots = Roots::new();
    // A file next to the roots that traversal must not reach.
    let secret = roots
        .dist
        .parent()
        .unwrap()
        .join(format!("lens-serve-secret-{}", std::process::id()));
    std::fs::write(&secret, "secret").unwrap();
    let server = roots.serve(&[]);
    let port = server.port;
    let secret_name = secret.file_name().unwrap().to_str().unwrap();
    for attempt in [
        format!("/../{secret_name}"),
        format!("/models/../../{secret_name}"),
        format!("/%2e%2e/{secret_name}"),
        format!("/models/..%2f..%2f{secret_name}"),
        format!("/models/%2e%2e%5c{secret_name}"),
    ] {
        let r = get(port, &attempt, &[]);
        assert!(
            r.status == 400 || r.status == 404,
            "{attempt}: status {}",
            r.status
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("secret"),
            "{attempt} leaked the file"
        );
    }
    // A page that rebinds its own name to 127.0.0.1 reads nothing.
    let mut conn = connect(port);
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut conn, false);
    assert_eq!(r.status, 403);
    let r = exchange(&mut connect(port), "GET", "/", &[]);
    assert_eq!(r.status, 200);
    let _ = std::fs::remove_file(&secret);
}

#[test]
fn connections_beyond_the_bound_wait_for_a_free_slot() {
    let roots = Roots::new();
    let server = roots.serve(&["--max-connections", "2"]);
    let port = server.port;
    let mut first = connect(port);
    assert_eq!(exchange(&mut first, "GET", "/", &[]).status, 200);
    let mut second = connect(port);
    assert_eq!(exchange(&mut second, "GET", "/", &[]).status, 200);

    // Both slots are held by open (kept-alive) connections: a third waits.
    let mut third = connect(port);
    third
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let port_line = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    third.get_mut().write_all(port_line.as_bytes()).unwrap();
    let mut byte = [0u8; 1];
    let waited = third.get_mut().read(&mut byte);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the third connection was answered while two were open: {waited:?}"
    );

    // One closes; the third is answered.
    drop(first);
    let t = Instant::now();
    third
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let r = read_reply(&mut third, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, roots.index.as_bytes());
    assert!(t.elapsed() < Duration::from_secs(10));
    // The second is still served on its connection.
    assert_eq!(
        exchange(&mut second, "GET", "/web_bg.wasm", &[]).status,
        200
    );
}

#[test]
fn refuses_a_dist_without_a_page() {
    let roots = Roots::new();
    std::fs::remove_file(roots.dist.join("index.html")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_linear-lens"))
        .args(["serve", "--port", "0", "--dist"])
        .arg(&roots.dist)
        .arg("--models")
        .arg(&roots.models)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no index.html"), "{err}");
}
