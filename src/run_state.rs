//! The page's state types and what the progress bar and status line say
//! about them (plain data; the page's signals hold these).

use crate::views::format::mb;
use crate::views::prediction::PredictionData;
use crate::views::progress::ProgressInfo;
use lens_protocol::report::{Certificate, Columns, Heatmap, Report};
use lens_protocol::{AnalysisSpec, BackendChoice, Precision, Stage, TokenRow};

#[derive(Clone, Debug, PartialEq)]
pub enum ModelState {
    Starting,
    Downloading {
        received: u64,
        total: Option<u64>,
        rate: f64,
        file: String,
        from_cache: bool,
    },
    Parsing,
    Ready {
        name: String,
        detail: String,
    },
    Failed,
    Idle,
}

/// What a job computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The staged run (prediction … ordinary Jacobian).
    Run,
    Layers,
    Inspect,
    Steer,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub job: u32,
    pub task: Task,
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
    pub started: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    pub precision: Precision,
    pub tokens: Vec<String>,
    pub prediction: Option<PredictionData>,
    pub rows: Option<Vec<TokenRow>>,
    pub target_token: String,
    pub logit: f64,
    pub contributions: Option<(f64, f64)>,
    pub detached: Option<f64>,
    pub fro_norms: Option<Vec<f64>>,
    pub ordinary: Option<f64>,
    pub done_ms: Option<f64>,
    /// The whole Report as the worker has sent it, with the on-demand parts
    /// (ordinary error, layers, steering) merged in.
    pub report: Option<Report>,
    /// The selected token's `J_i`, drawn small, and its largest columns.
    pub inspect: Option<(Heatmap, Columns)>,
    /// Why the run went matrix-free (a long prompt).
    pub long_prompt: Option<String>,
    pub svd_ms: Option<f64>,
    pub steering: Option<lens_protocol::report::Steering>,
    /// The GPU's `J` against f64 probes on the CPU (a run on WebGPU).
    pub certificate: Option<Certificate>,
}

/// Where the worker says the latest run's passes run (its `Backend` reply).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    /// "WebGPU" or "CPU".
    pub name: String,
    /// The GPU adapter's name.
    pub adapter: Option<String>,
    /// Why auto fell back to the CPU.
    pub fallback: Option<String>,
}

impl Default for BackendInfo {
    /// Before any run: the CPU.
    fn default() -> Self {
        BackendInfo {
            name: "CPU".into(),
            adapter: None,
            fallback: None,
        }
    }
}

/// The precision the requests carry: WebGPU computes in f32; auto and the
/// CPU use the chosen one (on auto the worker decides, and says where).
pub fn run_precision(spec: &AnalysisSpec) -> Precision {
    match spec.backend {
        BackendChoice::Webgpu => Precision::F32,
        BackendChoice::Auto | BackendChoice::Cpu => spec.precision,
    }
}

impl ModelState {
    /// The status line under the model picker.
    pub fn status(&self) -> String {
        match self.clone() {
            ModelState::Starting => "starting the engine…".to_string(),
            ModelState::Downloading {
                from_cache: true, ..
            } => "loading from this device's cache…".into(),
            ModelState::Downloading { .. } => "downloading…".into(),
            ModelState::Parsing => "reading the model…".into(),
            ModelState::Ready { name, detail } => format!("ready: {name} ({detail})"),
            ModelState::Failed => "not loaded (see the message below)".into(),
            ModelState::Idle => "no model loaded".into(),
        }
    }

    /// The progress bar while a model loads.
    pub fn progress(&self) -> Option<ProgressInfo> {
        match self.clone() {
            ModelState::Downloading {
                received,
                total,
                rate,
                file,
                from_cache,
            } => {
                let left = match (total, rate > 0.0) {
                    (Some(t), true) => format!(
                        " · about {:.0} s left",
                        (t.saturating_sub(received)) as f64 / rate
                    ),
                    _ => String::new(),
                };
                Some(ProgressInfo {
                    label: if from_cache {
                        "Loading the model from this device".into()
                    } else {
                        "Downloading the model".into()
                    },
                    fraction: total.map(|t| received as f64 / t.max(1) as f64),
                    detail: format!(
                        "{}{} · {}{}{}",
                        mb(received as f64),
                        total
                            .map(|t| format!(" of {}", mb(t as f64)))
                            .unwrap_or_default(),
                        file,
                        if rate > 0.0 {
                            format!(" · {}/s", mb(rate))
                        } else {
                            String::new()
                        },
                        left
                    ),
                })
            }
            ModelState::Parsing => Some(ProgressInfo {
                label: "Reading the model".into(),
                fraction: None,
                detail: "parsing weights and tokenizer".into(),
            }),
            _ => None,
        }
    }
}

impl Running {
    /// The progress bar of a run at time `now_ms`.
    pub fn progress(&self, now_ms: f64) -> ProgressInfo {
        let r = self;
        let within = if r.total > 0 {
            r.done as f64 / r.total as f64
        } else {
            0.0
        };
        let secs = (now_ms - r.started) / 1000.0;
        if r.task != Task::Run || r.stage == Stage::Krylov {
            return ProgressInfo {
                label: format!(
                    "{}{}",
                    capitalized(r.stage.label()),
                    match r.task {
                        Task::Layers => " (asked for)",
                        _ => "",
                    }
                ),
                fraction: Some(within),
                detail: format!(
                    "{:.0} % · {secs:.0} s so far · the page stays usable",
                    100.0 * within
                ),
            };
        }
        let stages = [
            Stage::Predict,
            Stage::Contributions,
            Stage::Jacobian,
            Stage::Svd,
            Stage::Ordinary,
        ];
        let k = stages.iter().position(|s| *s == r.stage).unwrap_or(0);
        // Rough shares of the time each stage takes.
        let weights = [0.02, 0.08, 0.45, 0.05, 0.40];
        let before: f64 = weights[..k].iter().sum();
        let frac = before + weights[k] * within;
        ProgressInfo {
            label: format!("Step {} of 5: {}", k + 1, r.stage.label()),
            fraction: Some(frac),
            detail: format!(
                "{}/{} steps of this stage · {secs:.0} s so far · the page stays usable",
                r.done, r.total
            ),
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
