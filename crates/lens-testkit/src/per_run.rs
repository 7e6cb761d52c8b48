//! A value computed once per test run and shared by every test that asks for
//! it, across processes. nextest runs each test in a process of its own, so a
//! `OnceLock` shares nothing there: the first test to ask computes the value
//! and writes it under a directory named for the run (`NEXTEST_RUN_ID`); the
//! others wait for the file and read it. Outside nextest (`cargo test`, one
//! process per binary) the value is computed in place; callers keep it in
//! their own `OnceLock`.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The longest a test waits for another's shared value: the costliest
/// (a Gemma J and its SVD in f64) takes under two minutes on two cores.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// `compute()`'s value, shared under `name` by the tests of this run.
/// `encode`/`decode` must round-trip it exactly (raw bytes, not text, for
/// floating-point arrays).
pub fn once_per_run<T>(
    name: &str,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> T,
    compute: impl FnOnce() -> T,
) -> T {
    let Some(dir) = run_dir() else {
        return compute();
    };
    fs::create_dir_all(&dir).expect("per-run directory");
    let done = dir.join(format!("{name}.bin"));
    let lock = dir.join(format!("{name}.lock"));
    let waited = std::time::Instant::now();
    loop {
        if let Ok(bytes) = fs::read(&done) {
            return decode(&bytes);
        }
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut f) => {
                // Ours to compute; the pid lets a waiter tell a crashed
                // owner from a slow one.
                write!(f, "{}", std::process::id()).expect("lock file");
                let bytes = encode(&compute());
                let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
                fs::write(&tmp, &bytes).expect("write the shared value");
                fs::rename(&tmp, &done).expect("publish the shared value");
                // Decoded here too, so that every test sees the same values
                // whichever process computed them.
                return decode(&bytes);
            }
            Err(_) if owner_gone(&lock) => {
                // The owner died before publishing (its test failed): take over.
                let _ = fs::remove_file(&lock);
            }
            // An owner alive but hung (a deadlock, a stopped process) is not
            // waited for forever: the test fails and says which value.
            Err(_) if waited.elapsed() > MAX_WAIT => panic!(
                "waited {} s for another test's `{name}` ({}): its owner is alive but \
                 has not published it",
                MAX_WAIT.as_secs(),
                lock.display()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// f64 values as little-endian bytes, with their shape in front.
pub fn encode_f64s(dims: &[usize], values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * (1 + dims.len() + values.len()));
    out.extend((dims.len() as u64).to_le_bytes());
    for &d in dims {
        out.extend((d as u64).to_le_bytes());
    }
    for v in values {
        out.extend(v.to_le_bytes());
    }
    out
}

/// The inverse of [`encode_f64s`].
pub fn decode_f64s(bytes: &[u8]) -> (Vec<usize>, Vec<f64>) {
    let words: Vec<[u8; 8]> = bytes
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    let rank = u64::from_le_bytes(words[0]) as usize;
    let dims = words[1..=rank]
        .iter()
        .map(|w| u64::from_le_bytes(*w) as usize)
        .collect();
    let values = words[rank + 1..]
        .iter()
        .map(|w| f64::from_le_bytes(*w))
        .collect();
    (dims, values)
}

/// This run's directory for this test binary, or `None` outside nextest or
/// without `/proc` (where a crashed owner could not be told apart).
fn run_dir() -> Option<PathBuf> {
    let run = std::env::var("NEXTEST_RUN_ID").ok()?;
    if !PathBuf::from("/proc/self").exists() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let binary = exe.file_name()?.to_string_lossy().into_owned();
    let tmp = std::env::temp_dir();
    prune_old_runs(&tmp);
    Some(tmp.join(format!("linear-lens-run-{run}")).join(binary))
}

/// Earlier runs' values (tens of MB each) go once they are a day old; no
/// run lasts that long.
fn prune_old_runs(tmp: &std::path::Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if old
            && e.file_name()
                .to_string_lossy()
                .starts_with("linear-lens-run-")
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn owner_gone(lock: &PathBuf) -> bool {
    let Ok(pid) = fs::read_to_string(lock) else {
        return false;
    };
    // An empty file: the owner is between creating and writing it.
    !pid.is_empty() && !PathBuf::from(format!("/proc/{pid}")).exists()
}
