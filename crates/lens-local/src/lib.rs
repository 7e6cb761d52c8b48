//! The engine on this machine, shared by the CLI and the Python package:
//! a model named as a user names it (`--model`, `linear_lens.Model(...)`):
//! a GGUF file, a Hugging Face directory, or a known id that lives in the
//! model cache (fetched into it when missing); and the GPU's product-kernel
//! tuning, remembered per adapter in the same cache.

use lens_engine::analysis::{AnalyzeOptions, Report};
use lens_engine::run::{Accelerator, Compute, Event, Hooks, Session};
use lens_engine::{EngineError, Model};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

/// The fetch script, embedded so the binary works from any directory.
const FETCH_SCRIPT: &str = include_str!("../../../tools/fetch-models.sh");

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LINEAR_LENS_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("linear-lens")
}

/// The model named by `spec`, loaded and named so in its reports (as the
/// page names a catalog model by its id).
pub fn load(spec: &str) -> Result<lens_engine::Model, String> {
    let path = resolve(spec)?;
    let mut m = lens_engine::Model::load_path(&path).map_err(|e| e.to_string())?;
    m.name = spec.to_string();
    Ok(m)
}

/// The path of the model named by `spec`, fetching a known model if needed.
pub fn resolve(spec: &str) -> Result<PathBuf, String> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    // The known ids are the catalog's one-file GGUF models (web/models.json,
    // the page's own table), fetched into the cache by tools/fetch-models.sh.
    let catalog = lens_protocol::Catalog::builtin()?;
    let Some(file) = catalog.gguf_file(spec) else {
        let ids: Vec<&str> = catalog
            .models
            .iter()
            .filter(|m| catalog.gguf_file(&m.id).is_some())
            .map(|m| m.id.as_str())
            .collect();
        return Err(format!(
            "model `{spec}` is neither a file, a directory, nor a known id ({})",
            ids.join(", ")
        ));
    };
    let target = cache_dir().join(&file.name);
    if !target.exists() {
        eprintln!("fetching {spec} into {} ...", cache_dir().display());
        let status = Command::new("bash")
            .arg("-c")
            .arg(FETCH_SCRIPT)
            .env("LINEAR_LENS_MODELS", cache_dir())
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run the model fetch script: {e}"))?;
        if !status.success() || !target.exists() {
            return Err(format!("fetching `{spec}` failed (see the messages above)"));
        }
    }
    Ok(target)
}

type Tunings = std::collections::BTreeMap<String, lens_gpu::GemmTuning>;

/// The GPU product-kernel tunings kept in the cache directory's
/// `gpu-tuning.json`, one per adapter (delete the file to time them again).
fn tunings() -> Tunings {
    std::fs::read(cache_dir().join("gpu-tuning.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The tuning remembered for the adapter `key`.
fn remembered_tuning(key: &str) -> Option<lens_gpu::GemmTuning> {
    tunings().remove(key)
}

/// `gpu` with its adapter's remembered tuning in use, or the variants
/// timed now on the products of an `n`-token J of `model` (and remembered).
pub fn tuned(
    gpu: &lens_gpu::Gpu,
    model: &Model,
    n: usize,
) -> Result<lens_gpu::GemmTuning, lens_gpu::GpuError> {
    match remembered_tuning(&gpu.adapter().key()) {
        Some(t) if gpu.set_tuning(t.clone()).is_ok() => Ok(t),
        _ => {
            let shapes = lens_engine::jacobian::jacobian_products(model, n);
            let t = lens_gpu::block_on(gpu.tune(&shapes))?;
            remember_tuning(&t);
            Ok(t)
        }
    }
}

/// Keeps a tuning for its adapter. Not kept is not an error: the next
/// run times the kernels again.
fn remember_tuning(t: &lens_gpu::GemmTuning) {
    let path = cache_dir().join("gpu-tuning.json");
    let mut all = tunings();
    all.insert(t.adapter.clone(), t.clone());
    if let Ok(json) = serde_json::to_vec_pretty(&all) {
        let _ = std::fs::create_dir_all(cache_dir());
        let _ = std::fs::write(&path, json);
    }
}

/// The run of `prompt` on `gpu` (else this machine's CPU), its events
/// through `hooks`: the Report, and the Session for on-demand stages. On
/// the GPU, the adapter's remembered kernel tuning is used (or one timed now
/// and remembered), as `bench --backend gpu` keeps it.
pub fn run(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    gpu: Option<&lens_gpu::Gpu>,
    hooks: &Rc<dyn Hooks>,
) -> Result<(Report, Session), EngineError> {
    if let Some(g) = gpu {
        let n = model.encode(prompt)?.len();
        tuned(g, model, n)?;
    }
    let compute = Compute {
        gpu: gpu.map(|g| g as &dyn Accelerator),
        ..Compute::CPU
    };
    lens_gpu::block_on(lens_engine::run::run(model, prompt, opts, compute, hooks))
}

/// What a run's event says to a person watching a terminal or a notebook
/// (a fallback, a long prompt's matrix-free spectrum, a notice), if anything.
pub fn notice(event: &Event) -> Option<String> {
    match event {
        Event::Notice(m) => Some(m.clone()),
        Event::LongPrompt { tokens, reason } => Some(format!(
            "{tokens} tokens: the top of the spectrum matrix-free ({reason})"
        )),
        Event::Backend {
            fallback: Some(why),
            ..
        } => Some(format!("on the CPU: {why}")),
        _ => None,
    }
}
