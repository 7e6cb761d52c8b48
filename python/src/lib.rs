//! `linear_lens._native`: the engine's one run driver, reached from Python.
//!
//! A thin layer. Arguments are read as the CLI reads them (the same parsers,
//! the same words in a `ValueError`); each call runs on a thread of its own
//! while the calling thread waits with the GIL released, passing progress to
//! the Python side and checking for Ctrl-C (which returns at once: the run
//! stops at its next stage); the Report crosses as the JSON `analyze --json`
//! writes (the Python side turns its number lists into arrays), and `J` and
//! the contributions as NumPy arrays that take over the engine's buffers.

use lens_engine::analysis::steering::SteerOptions;
use lens_engine::analysis::{AnalyzeOptions, Extent, SvdMode};
use lens_engine::jacobian::{self, PassOptions};
use lens_engine::run::{Event, Hooks};
use lens_engine::{EngineError, Model as Engine, Precision};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

create_exception!(
    _native,
    LensError,
    pyo3::exceptions::PyRuntimeError,
    "The engine could not finish a run: its one-line message says why."
);

/// An engine error as Python sees it: what the caller asked that cannot be
/// (an empty or over-long prompt, an unknown target token, a bad request)
/// is a `ValueError`; the rest a `LensError`. The engine's message either way.
fn py_error(e: EngineError) -> PyErr {
    let message = e.to_string();
    match e {
        EngineError::EmptyPrompt
        | EngineError::PromptTooLong { .. }
        | EngineError::TokenOutOfRange { .. }
        | EngineError::Tokenizer(_)
        | EngineError::BadRequest(_) => PyValueError::new_err(message),
        _ => LensError::new_err(message),
    }
}

/// What the run's thread tells the waiting one.
enum Msg<T> {
    Progress(&'static str, usize, usize),
    Notice(String),
    Done(Result<T, EngineError>),
}

/// The run's hooks: progress and notices to the waiting thread, the
/// clock, and Ctrl-C's flag.
struct Relay<T> {
    tx: mpsc::Sender<Msg<T>>,
    start: Instant,
    cancel: Arc<AtomicBool>,
}

impl<T> Hooks for Relay<T> {
    fn emit(&self, event: Event) {
        let msg = match (lens_local::notice(&event), event) {
            (Some(m), _) => Msg::Notice(m),
            (None, Event::Progress { stage, done, total }) => {
                Msg::Progress(stage.label(), done, total)
            }
            _ => return,
        };
        // The waiting side may be gone (Ctrl-C): the run ends at its next stage.
        let _ = self.tx.send(msg);
    }

    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A run's work: on the GPU's thread it is given the GPU.
type Work<T> =
    Box<dyn FnOnce(&Rc<dyn Hooks>, Option<&lens_gpu::Gpu>) -> Result<T, EngineError> + Send>;

/// A job for the GPU's thread.
type GpuJob = Box<dyn FnOnce(&lens_gpu::Gpu) + Send>;

/// The thread that owns a model's GPU (the device's state stays on one
/// thread) and runs its jobs one at a time, in order.
struct GpuThread {
    jobs: mpsc::Sender<GpuJob>,
    /// The adapter, described once.
    adapter: String,
}

impl GpuThread {
    /// wgpu's first adapter, opened on a thread of its own.
    fn start() -> Result<Self, String> {
        let (jobs, queue) = mpsc::channel::<GpuJob>();
        let (ready, opened) = mpsc::channel();
        std::thread::Builder::new()
            .name("linear-lens gpu".into())
            .spawn(move || {
                let gpu = match lens_gpu::block_on(lens_gpu::Gpu::new()) {
                    Ok(g) => g,
                    Err(e) => return drop(ready.send(Err(e.to_string()))),
                };
                let a = gpu.adapter();
                let _ = ready.send(Ok(format!("{} ({}, {})", a.name, a.backend, a.device_type)));
                // Until the model is dropped (its sender with it).
                while let Ok(job) = queue.recv() {
                    job(&gpu);
                }
            })
            .map_err(|e| format!("cannot start the GPU's thread: {e}"))?;
        let adapter = opened
            .recv()
            .map_err(|_| "the GPU's thread ended while opening the adapter".to_string())??;
        Ok(GpuThread { jobs, adapter })
    }
}

/// `work` on a thread of its own (or the GPU's), this one waiting without
/// the GIL: progress and notices go to `watcher` (an object with
/// `progress(stage, done, total)` and `notice(text)`, or None), Ctrl-C
/// returns at once (KeyboardInterrupt) and tells the run to stop.
fn drive<T: Send + 'static>(
    py: Python<'_>,
    watcher: Option<&Bound<'_, PyAny>>,
    gpu: Option<&GpuThread>,
    work: Work<T>,
) -> PyResult<T> {
    let (tx, mut rx) = mpsc::channel::<Msg<T>>();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let job = move |gpu: Option<&lens_gpu::Gpu>| {
        let hooks: Rc<dyn Hooks> = Rc::new(Relay {
            tx: tx.clone(),
            start: Instant::now(),
            cancel: flag,
        });
        let out = work(&hooks, gpu);
        let _ = tx.send(Msg::Done(out));
    };
    let started = match gpu {
        Some(g) => g
            .jobs
            .send(Box::new(move |gpu: &lens_gpu::Gpu| job(Some(gpu))))
            .map_err(|_| "the GPU's thread has ended".to_string()),
        None => std::thread::Builder::new()
            .name("linear-lens run".into())
            .spawn(move || job(None))
            .map(drop)
            .map_err(|e| format!("cannot start the run's thread: {e}")),
    };
    started.map_err(LensError::new_err)?;
    loop {
        let (msg, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(100)), rx));
        rx = back;
        // Ctrl-C, whatever arrived: a run that reports progress often never
        // leaves the channel quiet for long.
        if let Err(e) = py.check_signals() {
            cancel.store(true, Ordering::Relaxed);
            return Err(e);
        }
        match msg {
            Ok(Msg::Done(out)) => return out.map_err(py_error),
            Ok(Msg::Progress(stage, done, total)) => {
                if let Some(w) = watcher {
                    w.call_method1("progress", (stage, done, total))?;
                }
            }
            Ok(Msg::Notice(text)) => match watcher {
                Some(w) => {
                    w.call_method1("notice", (text,))?;
                }
                None => eprintln!("{text}"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(LensError::new_err(
                    "the run's thread ended without an answer (the engine panicked: see stderr)",
                ))
            }
        }
    }
}

/// A loaded model, and where and in what precision its runs compute.
#[pyclass(frozen, module = "linear_lens._native")]
struct Model {
    engine: Arc<Engine>,
    precision: Precision,
    gpu: Option<GpuThread>,
}

/// `s` read as the CLI reads `--precision`.
fn parse_precision(s: &str) -> PyResult<Precision> {
    s.parse::<Precision>().map_err(PyValueError::new_err)
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (model, precision = "f64", backend = "cpu"))]
    fn new(py: Python<'_>, model: &str, precision: &str, backend: &str) -> PyResult<Self> {
        let mut precision = parse_precision(precision)?;
        let gpu = match backend {
            "cpu" => None,
            // The GPU computes in f32, as `analyze --backend gpu` does.
            "gpu" => {
                precision = Precision::F32;
                Some(py.detach(GpuThread::start).map_err(LensError::new_err)?)
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown backend `{other}` (use cpu or gpu)"
                )))
            }
        };
        let spec = model.to_string();
        let engine = py
            .detach(move || lens_local::load(&spec))
            .map_err(PyValueError::new_err)?;
        Ok(Model {
            engine: Arc::new(engine),
            precision,
            gpu,
        })
    }

    /// The model's name in its reports (as given).
    #[getter]
    fn name(&self) -> String {
        self.engine.name.clone()
    }

    /// "f64" or "f32".
    #[getter]
    fn precision(&self) -> &'static str {
        self.precision.name()
    }

    /// "cpu" or "gpu".
    #[getter]
    fn backend(&self) -> &'static str {
        if self.gpu.is_some() {
            "gpu"
        } else {
            "cpu"
        }
    }

    /// The GPU adapter's description, with `backend="gpu"`.
    #[getter]
    fn adapter(&self) -> Option<String> {
        self.gpu.as_ref().map(|g| g.adapter.clone())
    }

    /// The architecture and sizes, as a JSON object.
    fn config_json(&self) -> String {
        let c = &self.engine.config;
        serde_json::json!({
            "arch": c.arch.name(),
            "layers": c.layers,
            "hidden": c.hidden,
            "ffn": c.ffn,
            "heads": c.heads,
            "kv_heads": c.kv_heads,
            "head_dim": c.head_dim,
            "vocab": c.vocab,
            "context_length": c.context_length,
        })
        .to_string()
    }

    /// The prompt's tokens, as the model reads them.
    fn tokens(&self, prompt: &str) -> PyResult<Vec<String>> {
        let ids = self.engine.encode(prompt).map_err(py_error)?;
        Ok(ids
            .iter()
            .map(|&i| self.engine.tokenizer.token_str(i))
            .collect())
    }

    /// The prompt's token ids.
    fn token_ids(&self, prompt: &str) -> PyResult<Vec<u32>> {
        self.engine.encode(prompt).map_err(py_error)
    }

    /// `predict --json`'s object, as JSON.
    fn predict_json(&self, py: Python<'_>, prompt: &str, top: usize) -> PyResult<String> {
        let (engine, precision, prompt) = (self.engine.clone(), self.precision, prompt.to_string());
        let p = drive(
            py,
            None,
            None,
            Box::new(move |_, _| lens_engine::predict(&engine, &prompt, precision, top)),
        )?;
        Ok(serde_json::json!({
            "model": self.engine.name,
            "precision": self.precision.name(),
            "token_ids": p.token_ids,
            "tokens": p.tokens,
            "top": p.top,
        })
        .to_string())
    }

    /// The Report of `analyze --json` for these options, as JSON, and with
    /// `keep_jacobian` the run's own `J` (`[n, d, d]`, f64) when it formed one.
    #[pyo3(signature = (prompt, *, top, svd, layers, target, decode, ordinary, matrix_free,
                        columns, attention, extent, steer, steer_lambda, steer_layer,
                        steer_tokens, keep_jacobian, watcher))]
    #[allow(clippy::too_many_arguments)]
    fn analyze_json<'py>(
        &self,
        py: Python<'py>,
        prompt: &str,
        top: usize,
        svd: usize,
        layers: Vec<usize>,
        target: Option<String>,
        decode: usize,
        ordinary: bool,
        matrix_free: Option<bool>,
        columns: usize,
        attention: bool,
        extent: &str,
        steer: Option<String>,
        steer_lambda: Option<f64>,
        steer_layer: Option<usize>,
        steer_tokens: Option<usize>,
        keep_jacobian: bool,
        watcher: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(String, Option<Bound<'py, PyAny>>)> {
        let extent = Extent::parse(extent).ok_or_else(|| {
            PyValueError::new_err(format!(
                "`{extent}` is not one of shares, contributions, full"
            ))
        })?;
        let steer = steer.map(|source| {
            let mut so = SteerOptions::new(&self.engine, &source);
            so.lambda = steer_lambda.unwrap_or(so.lambda);
            so.layer = steer_layer.unwrap_or(so.layer);
            so.tokens = steer_tokens.unwrap_or(so.tokens);
            so
        });
        let opts = AnalyzeOptions {
            top,
            layers,
            ordinary,
            svd,
            decode,
            target,
            columns,
            attention,
            extent,
            steer,
            svd_mode: match matrix_free {
                None => SvdMode::Auto,
                Some(true) => SvdMode::Krylov,
                Some(false) => SvdMode::Full,
            },
            ..AnalyzeOptions::new(self.precision)
        };
        let (engine, prompt) = (self.engine.clone(), prompt.to_string());
        let (report, jv) = drive(
            py,
            watcher.as_ref(),
            self.gpu.as_ref(),
            Box::new(move |hooks, gpu| {
                let (report, session) = lens_local::run(&engine, &prompt, &opts, gpu, hooks)?;
                Ok((report, session.jv.filter(|_| keep_jacobian)))
            }),
        )?;
        let json = serde_json::to_string(&report).map_err(|e| LensError::new_err(e.to_string()))?;
        let j = match jv {
            Some(jv) => Some(Values::F64(jv.values).into_array(py, &jv.dims)?),
            None => None,
        };
        Ok((json, j))
    }

    /// The full detached Jacobian `[n, d, d]` (`J[i][o][c] = ∂y_o/∂x_ic`)
    /// in the run's precision, as `bench --save-jacobian` forms it.
    fn jacobian<'py>(&self, py: Python<'py>, prompt: &str) -> PyResult<Bound<'py, PyAny>> {
        let (engine, precision, prompt) = (self.engine.clone(), self.precision, prompt.to_string());
        let work: Work<_> = Box::new(move |_, gpu| {
            let ids = engine.encode(&prompt)?;
            let j = match gpu {
                Some(g) => {
                    let tr = lens_gpu::block_on(lens_gpu::trace::trace(g, &engine, &ids))?;
                    let pass =
                        jacobian::detached_jacobian_on(g, &engine, &tr, PassOptions::default());
                    lens_gpu::block_on(pass)?.0
                }
                None => {
                    let tr = lens_engine::trace::trace(&engine, &ids, precision)?;
                    jacobian::detached_jacobian(&engine, &tr, PassOptions::default())?.0
                }
            };
            Ok((Values::of(&j.flatten_all()?)?, ids.len()))
        });
        let (values, n) = drive(py, None, self.gpu.as_ref(), work)?;
        let d = self.engine.config.hidden;
        values.into_array(py, &[n, d, d])
    }

    /// The contributions `c_i` (`[n, d]`, `y = Σ c_i`) in the run's precision.
    fn contributions<'py>(&self, py: Python<'py>, prompt: &str) -> PyResult<Bound<'py, PyAny>> {
        let (engine, precision, prompt) = (self.engine.clone(), self.precision, prompt.to_string());
        let work: Work<_> = Box::new(move |_, _| {
            let ids = engine.encode(&prompt)?;
            let tr = lens_engine::trace::trace(&engine, &ids, precision)?;
            let c = jacobian::contributions(&engine, &tr, PassOptions::default())?;
            Ok((Values::of(&c.flatten_all()?)?, ids.len()))
        });
        let (values, n) = drive(py, None, None, work)?;
        values.into_array(py, &[n, self.engine.config.hidden])
    }

    fn __repr__(&self) -> String {
        format!(
            "linear_lens.Model({:?}, precision={:?}, backend={:?})",
            self.engine.name,
            self.precision.name(),
            self.backend()
        )
    }
}

/// A tensor's values in its own precision, on their way into NumPy.
enum Values {
    F64(Vec<f64>),
    F32(Vec<f32>),
}

impl Values {
    fn of(t: &candle_core::Tensor) -> Result<Self, EngineError> {
        Ok(match t.dtype() {
            candle_core::DType::F32 => Values::F32(t.to_vec1()?),
            _ => Values::F64(t.to_dtype(candle_core::DType::F64)?.to_vec1()?),
        })
    }

    /// An array that owns these values (no copy), in `shape`.
    fn into_array<'py>(self, py: Python<'py>, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Values::F64(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
            Values::F32(v) => PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        })
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add("LensError", m.py().get_type::<LensError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
