//! The app's version as links record it: the crate's version and, in a git
//! checkout, the commit it is built from (`0.1.0+1a2b3c4d5e6f`).

fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    let full = if rev.is_empty() {
        version.to_string()
    } else {
        format!("{version}+{rev}")
    };
    println!("cargo:rustc-env=LINEAR_LENS_VERSION={full}");
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={p}");
    }
}
