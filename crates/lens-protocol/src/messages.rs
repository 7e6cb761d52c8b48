//! Messages between the page and the engine worker. They cross
//! `postMessage` as JS values (`wire`); local files travel beside a
//! `LoadFiles` request as `File` objects, large arrays as transferred
//! `ArrayBuffer`s. The JSON text form is for tests and the fuzz harness.

use crate::catalog::ModelRequest;
use crate::spec::{BackendChoice, Precision, SteerSpec, SvdMode};
pub use lens_report::Stage;
use lens_report::{
    Columns, Comparison, Device, Extent, Heatmap, KernelPeaks, Part, Prediction, Report, Side,
};
use serde::{Deserialize, Serialize};

/// Page → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Fetch (or read from the cache) and load a model.
    Load {
        model: ModelRequest,
        /// The most memory this worker may use (`pool::worker_limit`).
        #[serde(default)]
        memory_limit: Option<u64>,
    },
    /// Load the `File`s sent with this message (a `.gguf`, or
    /// `config.json` + `tokenizer.json` + `*.safetensors`).
    LoadFiles {
        id: String,
        #[serde(default)]
        memory_limit: Option<u64>,
    },
    /// Analyse a prompt on the loaded model, stage by stage.
    Run(RunRequest),
    /// Layer curves and the path for these 1-based layers of the last run.
    Layers {
        job: u32,
        prompt: String,
        precision: Precision,
        layers: Vec<usize>,
    },
    /// The heatmap and the largest columns of `J_i` at `position`.
    Inspect {
        job: u32,
        prompt: String,
        precision: Precision,
        position: usize,
    },
    /// Steer `steer.text`'s continuation with `steer.source`'s operator.
    Steer {
        job: u32,
        precision: Precision,
        steer: SteerSpec,
    },
    /// Rows `start .. start + count` of the detached Jacobian of `prompt`
    /// (a chunk of a run's `J` that the page's pool forms together): the
    /// values come back in `Reply::Rows`.
    Rows {
        job: u32,
        prompt: String,
        precision: Precision,
        start: usize,
        count: usize,
    },
    /// `A x_j` for vectors `start .. start + count` of a matrix-free run's
    /// block (`A = J_cat J_catᵀ`, or `J_i J_iᵀ` at `position`): the vectors
    /// (`[count, d]`, f64, little-endian) travel beside this message as a
    /// transferred `ArrayBuffer`; the products come back in `Reply::Rows`.
    Products {
        job: u32,
        prompt: String,
        precision: Precision,
        position: Option<usize>,
        start: usize,
        count: usize,
    },
    /// What the page's pool assembled for the run waiting on it: its `J`
    /// (`[n, d, d]`, the run's precision) or a block's products (`[b, d]`,
    /// f64), little-endian bytes beside this message as a transferred
    /// `ArrayBuffer`.
    Assembled { job: u32 },
    /// Keep the last run as a comparison's side A: the worker answers with
    /// what the page keeps of it beside A's Report (`Reply::Pinned`).
    Pin { job: u32 },
    /// Run `run.prompt` as side B against the pinned side A (A is not run
    /// again), B's layers at A's `layers`; the comparison comes in
    /// `Reply::Comparison` before `Done`. A's log-probabilities (f64,
    /// little-endian) travel beside this message as a transferred
    /// `ArrayBuffer` (`a.log_probs` is empty here).
    Compare {
        run: RunRequest,
        layers: Vec<usize>,
        a: Box<Side>,
        /// B runs on A's model (one tokenizer, one vocabulary).
        same_model: bool,
    },
    /// Time this worker's product kernel on data in cache (about
    /// `budget_ms` each, with and without fused multiply-add where this
    /// build has it): the roofline's peak (`tools/bench-page.mjs`). Needs
    /// no model.
    Peaks { job: u32, budget_ms: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub job: u32,
    pub prompt: String,
    pub precision: Precision,
    pub top: usize,
    /// How far the run goes: the shares alone (the page follows typing),
    /// the contributions too, or the full detached Jacobian (for long
    /// prompts the top of its spectrum without it), its SVD and the rest.
    #[serde(default)]
    pub extent: Extent,
    #[serde(default)]
    pub svd: SvdMode,
    /// Where the passes run.
    #[serde(default)]
    pub backend: BackendChoice,
    /// Engine workers the page has for this run's `J` (this one included):
    /// past one, the page hands `J`'s rows out in chunks.
    #[serde(default = "one")]
    pub pool: usize,
    /// The token whose logit is attributed (`" Paris"`, `id:N`); `None`:
    /// the predicted one.
    #[serde(default)]
    pub target: Option<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not a model file we can read, or a corrupt one.
    BadModel,
    /// The download failed.
    Network,
    /// The browser refused to store the model (the model still works).
    Quota,
    /// The engine ran out of memory.
    OutOfMemory,
    /// The prompt cannot be analysed (empty, too long).
    BadPrompt,
    /// Anything else the engine reported.
    Engine,
}

/// Worker → page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The worker has started and listens.
    Started,
    /// Bytes of the whole model (all its files) received so far.
    Download {
        received: u64,
        /// Known once every file's size is known.
        total: Option<u64>,
        bytes_per_s: f64,
        file: String,
        from_cache: bool,
    },
    /// A stage of loading or of a run has made progress.
    Progress {
        job: Option<u32>,
        stage: Stage,
        done: usize,
        total: usize,
    },
    ModelReady {
        id: String,
        name: String,
        /// SHA-256 (hex) of the model's weights file (the GGUF, or
        /// `model.safetensors`); `None` for sharded weights.
        #[serde(default)]
        sha256: Option<String>,
        arch: String,
        layers: usize,
        hidden: usize,
        vocab: usize,
        bytes: u64,
        from_cache: bool,
        load_ms: f64,
    },
    /// Where this run's passes run, sent first in every run.
    Backend {
        job: u32,
        device: Device,
        /// The GPU adapter's name, when on WebGPU.
        adapter: Option<String>,
        /// Why auto fell back to the CPU (no adapter, device lost, …).
        fallback: Option<String>,
    },
    /// The frozen forward's prediction: it starts the job's Report.
    Prediction {
        job: u32,
        prediction: Prediction,
    },
    /// One stage's result, folded into the Report with `Report::apply`.
    Part {
        job: u32,
        part: Part,
    },
    /// The run finds the top of the spectrum matrix-free (a long prompt, or
    /// asked for), and why.
    LongPrompt {
        job: u32,
        tokens: usize,
        reason: String,
    },
    Inspect {
        job: u32,
        heatmap: Heatmap,
        columns: Columns,
        ms: f64,
    },
    /// The run's `J` (`[n, rows, width]` values of `elem` bytes) is to be
    /// formed by the page's pool: the page may hand chunks of rows to its
    /// other workers from now on.
    JacobianWanted {
        job: u32,
        n: usize,
        rows: usize,
        width: usize,
        elem: usize,
    },
    /// A matrix-free run wants `A x_j` for a block of `count` vectors of
    /// `width` (`A = J_cat J_catᵀ`, or `J_i J_iᵀ` at `position`), the
    /// vectors (f64, little-endian) beside this message as a transferred
    /// `ArrayBuffer`: the page shares them out to its pool (this worker
    /// included) and sends the products back in `Request::Assembled`.
    ProductsWanted {
        job: u32,
        position: Option<usize>,
        count: usize,
        width: usize,
    },
    /// The run's own worker is done with the stages before `J` and takes
    /// chunks of rows too.
    Joining {
        job: u32,
    },
    /// Rows `start .. start + count` of a run's `J` (`[n, count, width]`),
    /// or of a block's products (`[count, width]`), their bytes beside this
    /// message as a transferred `ArrayBuffer`.
    Rows {
        job: u32,
        start: usize,
        count: usize,
        ms: f64,
    },
    /// The last run, kept as side A: `J_cat`'s top left singular vectors
    /// and the model's depth; its log-probabilities (f64, little-endian)
    /// beside this message as a transferred `ArrayBuffer`.
    Pinned {
        job: u32,
        u: Vec<Vec<f64>>,
        depth: usize,
    },
    /// A comparison's B run against the pinned A.
    Comparison {
        job: u32,
        comparison: Box<Comparison>,
    },
    Done {
        job: u32,
        ms: f64,
    },
    /// What `Request::Peaks` measured.
    Peaks {
        job: u32,
        peaks: KernelPeaks,
    },
    /// Something the visitor should know that stops nothing (a source of
    /// the model that was dropped for another).
    Notice {
        message: String,
    },
    Failed {
        job: Option<u32>,
        kind: ErrorKind,
        message: String,
    },
}

impl Request {
    /// The job this request belongs to; `None` for a model's load.
    pub fn job(&self) -> Option<u32> {
        match self {
            Request::Load { .. } | Request::LoadFiles { .. } => None,
            Request::Run(r) => Some(r.job),
            Request::Layers { job, .. }
            | Request::Inspect { job, .. }
            | Request::Steer { job, .. }
            | Request::Rows { job, .. }
            | Request::Products { job, .. }
            | Request::Assembled { job }
            | Request::Pin { job }
            | Request::Peaks { job, .. } => Some(*job),
            Request::Compare { run, .. } => Some(run.job),
        }
    }

    /// JSON text (tests, the fuzz harness); the page and the worker send
    /// JS values (`wire`).
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("cannot write the request: {e}"))
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad request: {e}"))
    }
}

impl Reply {
    /// The job this reply belongs to; `None` for the model's own replies
    /// (start, download, load) and for failures outside a job.
    pub fn job(&self) -> Option<u32> {
        match self {
            Reply::Started
            | Reply::Download { .. }
            | Reply::ModelReady { .. }
            | Reply::Notice { .. } => None,
            Reply::Progress { job, .. } | Reply::Failed { job, .. } => *job,
            Reply::Backend { job, .. }
            | Reply::Prediction { job, .. }
            | Reply::Part { job, .. }
            | Reply::LongPrompt { job, .. }
            | Reply::Inspect { job, .. }
            | Reply::JacobianWanted { job, .. }
            | Reply::ProductsWanted { job, .. }
            | Reply::Joining { job }
            | Reply::Rows { job, .. }
            | Reply::Pinned { job, .. }
            | Reply::Comparison { job, .. }
            | Reply::Peaks { job, .. }
            | Reply::Done { job, .. } => Some(*job),
        }
    }

    /// Folds a job's prediction or part into its Report: a prediction
    /// starts it afresh, a part goes in with `Report::apply` (one without a
    /// Report, from a run replaced meanwhile, is dropped). Other replies
    /// leave it as it is. The page and the tests fold replies this way.
    pub fn fold_into(&self, report: &mut Option<Report>) {
        match self {
            Reply::Prediction { prediction, .. } => *report = Some(Report::new(prediction.clone())),
            Reply::Part { part, .. } => {
                if let Some(r) = report.as_mut() {
                    r.apply(part.clone());
                }
            }
            _ => {}
        }
    }

    /// The Report these replies fold into, if they hold a prediction.
    pub fn report_of<'a>(replies: impl IntoIterator<Item = &'a Reply>) -> Option<Report> {
        let mut report = None;
        for r in replies {
            r.fold_into(&mut report);
        }
        report
    }

    /// JSON text (tests, the fuzz harness); the page and the worker send
    /// JS values (`wire`). Non-finite numbers become `null` here.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("cannot write the reply: {e}"))
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad reply: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let r = Request::Run(RunRequest {
            job: 3,
            prompt: "<b>hi</b>".into(),
            precision: Precision::F32,
            top: 5,
            extent: Extent::Full,
            svd: SvdMode::Krylov,
            backend: Default::default(),
            pool: 2,
            target: Some(" Paris".into()),
        });
        assert_eq!(Request::from_json(&r.to_json().unwrap()), Ok(r));
        let p = Reply::Part {
            job: 3,
            part: Part::Ordinary(lens_report::Ordinary {
                rel_error: 0.25,
                ms: 1.0,
            }),
        };
        assert_eq!(Reply::from_json(&p.to_json().unwrap()), Ok(p));
        let b = Reply::Backend {
            job: 3,
            device: Device::Gpu,
            adapter: Some("a".into()),
            fallback: None,
        };
        assert_eq!(Reply::from_json(&b.to_json().unwrap()), Ok(b));
        assert!(Reply::from_json("{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn replies_name_their_job() {
        assert_eq!(Reply::Done { job: 7, ms: 1.0 }.job(), Some(7));
        assert_eq!(Reply::Started.job(), None);
        let failed = |job| Reply::Failed {
            job,
            kind: ErrorKind::Engine,
            message: "x".into(),
        };
        assert_eq!(failed(Some(2)).job(), Some(2));
        assert_eq!(failed(None).job(), None);
        assert_eq!(Request::Assembled { job: 4 }.job(), Some(4));
        let load = Request::LoadFiles {
            id: "file:a.gguf".into(),
            memory_limit: None,
        };
        assert_eq!(load.job(), None);
    }
}
