//! What the CLI's test binaries share: running `linear-lens` as a user does,
//! and reading its output.
#![allow(dead_code)] // each test binary uses its own part

use serde_json::Value;
use std::process::{Command, Output};

/// `linear-lens ARGS`, its output captured (stderr is not a terminal).
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linear-lens"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the binary runs")
}

/// The one JSON object a successful run prints on stdout; no progress line
/// on stderr (not a terminal; a GPU driver may still write its own notes).
pub fn json_of(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("\x1b[2K"), "{stderr}");
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

pub fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Exit code non-zero, exactly one stderr line starting `error:` that
/// names `needle`, never a panic or a backtrace.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}
