//! The page's state types and what the progress bar and status line say
//! about them (plain data; the page's signals hold these).

use crate::numbers::mb;
use lens_protocol::report::{Columns, Heatmap, Report};
use lens_protocol::{AnalysisSpec, BackendChoice, Device, Precision, Stage};

/// A progress bar: what runs, how far, and a line of detail.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressInfo {
    pub label: String,
    /// 0..1, or `None` when the total is not known yet.
    pub fraction: Option<f64>,
    pub detail: String,
}

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

/// Top next tokens a run asks for.
pub const TOP_K: usize = 10;

/// What a job computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The staged run (prediction … ordinary Jacobian).
    Run,
    Layers,
    Inspect,
    Steer,
    /// The last run kept as a comparison's side A.
    Pin,
    /// The prompt as typed: its prediction and shares (no progress bar;
    /// replaced, never queued, by the next pause in typing).
    Live,
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

/// What the page holds of the jobs' replies: the run's Report, folded
/// part by part as the worker sends them (`Report::apply`), and what is not
/// part of a Report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// The prompt this run is of. On-demand stages (a token's `J_i`, layer
    /// curves) ask about it, whatever the input box holds by then.
    pub prompt: String,
    /// The precision the run asked for, until its Report says which it got.
    pub asked: Precision,
    /// From the prediction on; the on-demand parts (layers, steering) fold
    /// into it too.
    pub report: Option<Report>,
    /// The selected token's `J_i`, drawn small, and its largest columns.
    pub inspect: Option<(Heatmap, Columns)>,
    /// Why the run went matrix-free (a long prompt).
    pub long_prompt: Option<String>,
    /// The whole run's time, once done.
    pub done_ms: Option<f64>,
}

impl Results {
    /// Empty results for a run of `prompt` that asked for `precision`.
    pub fn asking(prompt: &str, precision: Precision) -> Self {
        Results {
            prompt: prompt.to_string(),
            asked: precision,
            ..Results::default()
        }
    }
}

/// Where the worker says the latest run's passes run (its `Backend` reply).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendInfo {
    pub device: Device,
    /// The GPU adapter's name.
    pub adapter: Option<String>,
    /// Why auto fell back to the CPU.
    pub fallback: Option<String>,
}

/// The precision the requests carry: WebGPU computes in f32; auto and the
/// CPU use the chosen one (on auto the worker decides, and says where).
pub fn run_precision(spec: &AnalysisSpec) -> Precision {
    match spec.backend {
        BackendChoice::Webgpu => Precision::F32,
        BackendChoice::Auto | BackendChoice::Cpu => spec.precision,
    }
}

/// The default layer set a user is offered: every ⌊L/6⌋-th layer (six or
/// so curves whatever the depth).
pub fn default_layers(layers: usize) -> String {
    let step = (layers / 6).max(1);
    let mut out: Vec<String> = (1..=layers)
        .filter(|l| l % step == 0)
        .map(|l| l.to_string())
        .collect();
    if out.is_empty() {
        out.push("1".into());
    }
    out.join(",")
}

impl ModelState {
    /// On its way in: the worker starting for it, downloading, parsing.
    pub fn is_loading(&self) -> bool {
        matches!(
            self,
            ModelState::Starting | ModelState::Downloading { .. } | ModelState::Parsing
        )
    }

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

/// This build's version, as links record it (`build.rs`: the crate's
/// version and the commit, `0.1.0+1a2b3c4d5e6f`).
pub const APP_VERSION: &str = env!("LINEAR_LENS_VERSION");

/// What the page says when a link was made elsewhere: by another version of
/// the app (the numbers may differ in their last digits), or with another
/// file of the model (they will differ). Empty when nothing differs or the
/// link does not say.
pub fn link_notes(spec: &AnalysisSpec, ours: &str, loaded_sha256: Option<&str>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(v) = spec.made_with.as_deref().filter(|v| *v != ours) {
        notes.push(format!(
            "This link was made with Linear Lens {v}; this page is {ours}, so its numbers may \
             differ in the last digits."
        ));
    }
    if let (Some(theirs), Some(here)) = (spec.model_sha256.as_deref(), loaded_sha256) {
        if theirs != here {
            notes.push(format!(
                "This link was made with another file of this model (SHA-256 {}…; here {}…), \
                 so its numbers will differ.",
                &theirs[..12.min(theirs.len())],
                &here[..12.min(here.len())]
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(task: Task, stage: Stage, done: usize, total: usize) -> Running {
        Running {
            job: 1,
            task,
            stage,
            done,
            total,
            started: 0.0,
        }
    }

    #[test]
    fn a_run_counts_its_five_steps_weighted_by_their_share_of_the_time() {
        let p = running(Task::Run, Stage::Predict, 0, 1).progress(2000.0);
        assert_eq!(p.label, "Step 1 of 5: prediction");
        assert_eq!(p.fraction, Some(0.0));
        assert!(p.detail.contains("2 s so far"), "{}", p.detail);
        // Half the Jacobian: the prediction and contributions (0.10) and
        // half its 0.45.
        let p = running(Task::Run, Stage::Jacobian, 9, 18).progress(0.0);
        assert_eq!(p.label, "Step 3 of 5: full detached Jacobian");
        assert!((p.fraction.expect("known") - 0.325).abs() < 1e-12);
        assert!(p.detail.starts_with("9/18 steps"));
    }

    #[test]
    fn on_demand_jobs_and_matrix_free_runs_show_their_own_fraction() {
        let p = running(Task::Layers, Stage::Layers, 3, 12).progress(0.0);
        assert!(p.label.starts_with("Layer curves") && p.label.ends_with("(asked for)"));
        assert_eq!(p.fraction, Some(0.25));
        let p = running(Task::Run, Stage::Krylov, 1, 4).progress(0.0);
        assert_eq!(p.fraction, Some(0.25));
        assert!(p.label.starts_with("Top singular vectors"));
        // No total yet.
        assert_eq!(
            running(Task::Inspect, Stage::Inspect, 0, 0)
                .progress(0.0)
                .fraction,
            Some(0.0)
        );
    }

    #[test]
    fn a_download_says_how_much_and_how_long() {
        let s = ModelState::Downloading {
            received: 100_000_000,
            total: Some(250_000_000),
            rate: 50_000_000.0,
            file: "gemma.gguf".into(),
            from_cache: false,
        };
        assert_eq!(s.status(), "downloading…");
        let p = s.progress().expect("a bar");
        assert_eq!(p.label, "Downloading the model");
        assert_eq!(p.fraction, Some(0.4));
        assert_eq!(
            p.detail,
            "100.0 MB of 250.0 MB · gemma.gguf · 50.0 MB/s · about 3 s left"
        );
        assert!(ModelState::Idle.progress().is_none());
        let ready = ModelState::Ready {
            name: "Gemma".into(),
            detail: "18 layers".into(),
        };
        assert_eq!(ready.status(), "ready: Gemma (18 layers)");
    }

    #[test]
    fn default_layers_are_about_six_spread_over_the_depth() {
        assert_eq!(default_layers(18), "3,6,9,12,15,18");
        assert_eq!(default_layers(30), "5,10,15,20,25,30");
        assert_eq!(default_layers(4), "1,2,3,4");
        assert_eq!(default_layers(0), "1");
    }

    #[test]
    fn webgpu_asks_for_f32_and_the_cpu_for_the_chosen_precision() {
        let mut spec = AnalysisSpec::new("gemma-3-270m", "Hi");
        spec.precision = Precision::F64;
        spec.backend = BackendChoice::Webgpu;
        assert_eq!(run_precision(&spec), Precision::F32);
        spec.backend = BackendChoice::Cpu;
        assert_eq!(run_precision(&spec), Precision::F64);
        assert_eq!(BackendInfo::default().device.label(), "CPU");
    }

    #[test]
    fn a_link_from_another_version_or_model_file_is_said() {
        let mut spec = AnalysisSpec::new("gemma-3-270m", "Marin is the");
        let sha = "a5".repeat(32);
        assert!(link_notes(&spec, APP_VERSION, Some(&sha)).is_empty());
        spec.made_with = Some(APP_VERSION.into());
        spec.model_sha256 = Some(sha.clone());
        assert!(link_notes(&spec, APP_VERSION, Some(&sha)).is_empty());
        spec.made_with = Some("0.0.1+000000000000".into());
        spec.model_sha256 = Some("00".repeat(32));
        let notes = link_notes(&spec, APP_VERSION, Some(&sha));
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("0.0.1+000000000000") && notes[0].contains(APP_VERSION));
        assert!(notes[1].contains("000000000000…") && notes[1].contains("a5a5a5a5a5a5…"));
        // A model whose hash is not known here: nothing to compare.
        assert_eq!(link_notes(&spec, APP_VERSION, None).len(), 1);
    }
}
