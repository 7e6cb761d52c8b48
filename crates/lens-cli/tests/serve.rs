//! `linear-lens serve`: start the binary on a free port, talk plain HTTP/1.1
//! to it over a TcpStream, check status codes, headers and bodies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the server even when an assertion fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

fn request(port: u16, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("malformed header");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body,
    }
}

fn assert_isolation_headers(r: &Reply) {
    assert_eq!(r.header("Cross-Origin-Opener-Policy"), Some("same-origin"));
    assert_eq!(
        r.header("Cross-Origin-Embedder-Policy"),
        Some("require-corp")
    );
    assert_eq!(
        r.header("Cross-Origin-Resource-Policy"),
        Some("same-origin")
    );
}

#[test]
fn serves_dist_and_models_with_isolation_headers() {
    let dist = temp_dir("dist");
    let models = temp_dir("models");
    let index = "<!doctype html><title>Linear Lens</title>";
    std::fs::write(dist.join("index.html"), index).unwrap();
    std::fs::write(dist.join("web_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let model_bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(models.join("tiny.gguf"), &model_bytes).unwrap();
    // A file next to the roots that traversal must not reach.
    let secret = dist
        .parent()
        .unwrap()
        .join(format!("lens-serve-secret-{}", std::process::id()));
    std::fs::write(&secret, "secret").unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_linear-lens"))
        .args(["serve", "--port", "0", "--dist"])
        .arg(&dist)
        .arg("--models")
        .arg(&models)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.strip_suffix('/'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected url {url:?}"));
    assert_ne!(port, 0);

    let r = request(port, "GET", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, index.as_bytes());
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        r.header("Content-Length"),
        Some(index.len().to_string().as_str())
    );
    assert_isolation_headers(&r);

    let r = request(port, "GET", "/web_bg.wasm");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/wasm"));
    assert_isolation_headers(&r);

    let r = request(port, "GET", "/models/tiny.gguf");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert!(
        r.body == model_bytes,
        "model bytes differ ({} bytes received)",
        r.body.len()
    );
    assert_isolation_headers(&r);

    let r = request(port, "HEAD", "/models/tiny.gguf");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert!(r.body.is_empty());

    let r = request(port, "GET", "/models/missing.gguf");
    assert_eq!(r.status, 404);
    assert_isolation_headers(&r);

    let secret_name = secret.file_name().unwrap().to_str().unwrap();
    for attempt in [
        format!("/../{secret_name}"),
        format!("/models/../../{secret_name}"),
        format!("/%2e%2e/{secret_name}"),
        format!("/models/..%2f..%2f{secret_name}"),
    ] {
        let r = request(port, "GET", &attempt);
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

    let r = request(port, "POST", "/");
    assert_eq!(r.status, 405);

    drop(server);
    let _ = std::fs::remove_dir_all(&dist);
    let _ = std::fs::remove_dir_all(&models);
    let _ = std::fs::remove_file(&secret);
}
