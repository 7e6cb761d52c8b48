//! One stage's result ([`Part`]) and the one place it is folded into a
//! [`Report`] ([`Report::apply`]). The CLI folds the parts it computed, the
//! worker sends each part as it is done, the page folds what arrives: all
//! three hold the same Report for the same stages.

use crate::{
    Attention, Attribution, Certificate, Columns, DecodeReport, LayerRow, MatrixFree, PathPoint,
    Precision, Reconstruction, Report, Steering, SvdReport, Timings, TokenRow, TopToken,
};
use serde::{Deserialize, Serialize};

/// Where a run computes, decided once where it starts: the CPU at either
/// precision, or the GPU (which computes in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    #[default]
    CpuF64,
    CpuF32,
    Gpu,
}

/// The CPU backend's products in this build and their micro-kernel's peak
/// here (GFLOP/s, one thread, on data in cache): with fused multiply-add
/// where the build has it (the page's relaxed-SIMD build), and without.
/// The roofline a run's own GFLOP/s is read against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KernelPeaks {
    /// The products fuse multiply and add (rounding once).
    pub fused_multiply_add: bool,
    pub f64_plain: f64,
    pub f32_plain: f64,
    pub f64_fma: Option<f64>,
    pub f32_fma: Option<f64>,
}

impl Device {
    /// The device for a run: the GPU when one is in use, else the CPU at
    /// the precision asked for.
    pub fn choose(gpu: bool, precision: Precision) -> Self {
        match (gpu, precision) {
            (true, _) => Device::Gpu,
            (false, Precision::F64) => Device::CpuF64,
            (false, Precision::F32) => Device::CpuF32,
        }
    }

    /// The precision the passes compute in.
    pub fn precision(self) -> Precision {
        match self {
            Device::CpuF64 => Precision::F64,
            Device::CpuF32 | Device::Gpu => Precision::F32,
        }
    }

    pub fn is_gpu(self) -> bool {
        self == Device::Gpu
    }

    /// As the page's engine label names it.
    pub fn label(self) -> &'static str {
        match self {
            Device::Gpu => "WebGPU",
            Device::CpuF64 | Device::CpuF32 => "CPU",
        }
    }
}

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Download,
    Parse,
    Predict,
    Contributions,
    Jacobian,
    Svd,
    /// The top singular triplets without forming `J` (long prompts).
    Krylov,
    Ordinary,
    Layers,
    Inspect,
    Steering,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Download => "downloading the model",
            Stage::Parse => "reading the model",
            Stage::Predict => "prediction",
            Stage::Contributions => "contributions c_i = J_i x_i (forward mode)",
            Stage::Jacobian => "full detached Jacobian",
            Stage::Svd => "SVD of J_cat and of each J_i, decoded",
            Stage::Krylov => "top singular vectors without forming J (long prompt)",
            Stage::Ordinary => "ordinary Jacobian (nothing frozen)",
            Stage::Layers => "layer curves (a Jacobian per layer, module and mode)",
            Stage::Inspect => "reading J_i",
            Stage::Steering => "steering (source operator, then generation)",
        }
    }
}

/// How the SVD of `J_cat` is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SvdMode {
    /// Full `J` for short prompts, matrix-free past the long-prompt threshold.
    #[default]
    Auto,
    /// Always form `J`.
    Full,
    /// Never form `J`: block Lanczos from probe products.
    Krylov,
}

impl SvdMode {
    pub const ALL: [SvdMode; 3] = [SvdMode::Auto, SvdMode::Full, SvdMode::Krylov];

    pub fn as_str(self) -> &'static str {
        match self {
            SvdMode::Auto => "auto",
            SvdMode::Full => "full",
            SvdMode::Krylov => "krylov",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        SvdMode::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How far a run goes. Every run starts with the prediction and the
/// target's exact shares (one transpose pass of its unembedding row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Extent {
    /// The prediction and the shares alone: what follows typing.
    Shares,
    /// Then the contributions `c_i` with both precisions' reconstruction
    /// (the page's quick look).
    Contributions,
    /// Then the ordinary error, `J` (or its spectrum matrix-free), the
    /// spectra, attention, layers, steering.
    #[default]
    Full,
}

impl Extent {
    pub const ALL: [Extent; 3] = [Extent::Shares, Extent::Contributions, Extent::Full];

    pub fn as_str(self) -> &'static str {
        match self {
            Extent::Shares => "shares",
            Extent::Contributions => "contributions",
            Extent::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Extent::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The frozen forward's prediction: what starts a Report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub model: String,
    pub precision: Precision,
    pub token_ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// The characters of the prompt each token covers (see `Report::spans`).
    #[serde(default)]
    pub spans: Vec<Option<[usize; 2]>>,
    pub top: Vec<TopToken>,
    pub ms: f64,
}

/// Each token's exact share of the target's logit (and of the predicted
/// token's, when the target is another), `(w_tᵀ J_i) · x_i` for every `i`
/// from one transpose pass of `w_t`: no `c_i`, about a forward's cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shares {
    pub attribution: Attribution,
    pub attribution_predicted: Option<Attribution>,
    pub ms: f64,
}

/// The contributions `c_i = J_i x_i` (forward mode, no `J`) and what they
/// give: the per-token rows, exact attribution, the reconstruction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Contributions {
    /// `‖Σ_i c_i − y‖ / ‖y‖`.
    pub rel_error: f64,
    /// The same at the other precision, from its own frozen forward.
    #[serde(default)]
    pub other_precision_rel_error: Option<f64>,
    /// `jacobian_fro_norm` is `None` here; the Jacobian part fills it.
    pub per_token: Vec<TokenRow>,
    pub attribution: Attribution,
    pub attribution_predicted: Option<Attribution>,
    /// On the GPU: its transpose pass on random probes against the f64
    /// CPU's, before `J` is formed.
    #[serde(default)]
    pub certificate: Option<Certificate>,
    pub ms: f64,
}

/// The full detached Jacobian's numbers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JacobianPart {
    /// `‖Σ_i J_i x_i − y‖ / ‖y‖`.
    pub detached_rel_error: f64,
    /// `‖J_i‖_F` per token.
    pub fro_norms: Vec<f64>,
    /// On the GPU: the probes against the GPU's `J` itself.
    #[serde(default)]
    pub certificate: Option<Certificate>,
    /// On the GPU: what forming J asked of the device.
    #[serde(default)]
    pub gpu_work: Option<crate::GpuWork>,
    pub ms: f64,
}

/// The spectra (from `J`, or matrix-free), decoded, and the last token's
/// largest columns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Spectra {
    pub svd: Option<SvdReport>,
    pub matrix_free: Option<MatrixFree>,
    pub decode: Option<DecodeReport>,
    pub columns: Option<Columns>,
    pub svd_ms: f64,
    pub decode_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ordinary {
    /// `‖Σ_i J_i^ord x_i − y‖ / ‖y‖` of the ordinary Jacobian.
    pub rel_error: f64,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Layers {
    pub layers: Vec<LayerRow>,
    pub path: Vec<PathPoint>,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Steered {
    pub steering: Steering,
    pub ms: f64,
}

/// One stage's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "stage", content = "data", rename_all = "snake_case")]
pub enum Part {
    Shares(Shares),
    Contributions(Contributions),
    Jacobian(JacobianPart),
    Spectra(Spectra),
    Attention(Attention),
    Ordinary(Ordinary),
    Layers(Layers),
    Steered(Steered),
}

impl Report {
    /// A Report holding only the prediction; the other stages fold in with
    /// [`Report::apply`].
    pub fn new(p: Prediction) -> Self {
        Report {
            model: p.model,
            precision: p.precision,
            token_ids: p.token_ids,
            tokens: p.tokens,
            spans: p.spans,
            top: p.top,
            reconstruction: Reconstruction::default(),
            per_token: Vec::new(),
            layers: Vec::new(),
            svd: None,
            matrix_free: None,
            decode: None,
            attribution: Attribution::default(),
            attribution_predicted: None,
            columns: None,
            path: Vec::new(),
            attention: None,
            steering: None,
            gpu_work: None,
            timings_ms: Timings {
                forward: p.ms,
                ..Timings::default()
            },
        }
    }

    /// Folds one stage's result in: the one place a Report is assembled.
    pub fn apply(&mut self, part: Part) {
        let r = &mut self.reconstruction;
        match part {
            Part::Shares(s) => {
                self.attribution = s.attribution;
                self.attribution_predicted = s.attribution_predicted;
                self.timings_ms.shares = s.ms;
            }
            Part::Contributions(c) => {
                r.contributions_rel_error = c.rel_error;
                r.other_precision_rel_error = c.other_precision_rel_error;
                r.certificate = c.certificate;
                // Norms of J already folded in stay (a stage re-run).
                let fro: Vec<Option<f64>> =
                    self.per_token.iter().map(|t| t.jacobian_fro_norm).collect();
                self.per_token = c.per_token;
                for (t, f) in self.per_token.iter_mut().zip(fro) {
                    t.jacobian_fro_norm = t.jacobian_fro_norm.or(f);
                }
                self.attribution = c.attribution;
                self.attribution_predicted = c.attribution_predicted;
                self.timings_ms.contributions = c.ms;
            }
            Part::Jacobian(j) => {
                r.detached_rel_error = Some(j.detached_rel_error);
                if j.certificate.is_some() {
                    r.certificate = j.certificate;
                }
                if j.gpu_work.is_some() {
                    self.gpu_work = j.gpu_work;
                }
                for (t, f) in self.per_token.iter_mut().zip(j.fro_norms) {
                    t.jacobian_fro_norm = Some(f);
                }
                self.timings_ms.jacobian = j.ms;
            }
            Part::Spectra(s) => {
                self.svd = s.svd;
                self.matrix_free = s.matrix_free;
                self.decode = s.decode;
                self.columns = s.columns;
                self.timings_ms.svd = s.svd_ms;
                self.timings_ms.decode = s.decode_ms;
            }
            Part::Attention(a) => self.attention = Some(a),
            Part::Ordinary(o) => {
                r.ordinary_rel_error = Some(o.rel_error);
                self.timings_ms.ordinary = o.ms;
            }
            Part::Layers(l) => {
                self.layers = l.layers;
                self.path = l.path;
                self.timings_ms.layers = l.ms;
            }
            Part::Steered(s) => {
                self.steering = Some(s.steering);
                self.timings_ms.steering = s.ms;
            }
        }
    }

    /// `‖J_i‖_F` per token, once the Jacobian part is in.
    pub fn fro_norms(&self) -> Option<Vec<f64>> {
        if self.per_token.is_empty() {
            return None;
        }
        self.per_token.iter().map(|t| t.jacobian_fro_norm).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction() -> Prediction {
        Prediction {
            model: "m".into(),
            precision: Precision::F64,
            token_ids: vec![1, 2],
            tokens: vec!["a".into(), "b".into()],
            spans: vec![None, Some([0, 1])],
            top: vec![TopToken {
                id: 3,
                token: "c".into(),
                logit: 2.0,
                prob: 0.5,
            }],
            ms: 1.5,
        }
    }

    fn row(token: &str, norm: f64) -> TokenRow {
        TokenRow {
            token: token.into(),
            embedding_norm: 1.0,
            jacobian_fro_norm: None,
            contribution_norm: norm,
            projection_on_y: norm,
        }
    }

    #[test]
    fn parts_fold_into_one_report_and_a_rerun_keeps_what_it_does_not_replace() {
        let contributions = Part::Contributions(Contributions {
            rel_error: 1e-16,
            other_precision_rel_error: Some(1e-7),
            per_token: vec![row("a", 1.0), row("b", 2.0)],
            attribution: Attribution {
                target_id: 3,
                target_token: "c".into(),
                logit: 2.0,
                per_token: vec![0.5, 1.5],
                sum_rel_error: 0.0,
            },
            attribution_predicted: None,
            certificate: None,
            ms: 2.0,
        });
        let jacobian = Part::Jacobian(JacobianPart {
            detached_rel_error: 3e-16,
            fro_norms: vec![4.0, 5.0],
            certificate: None,
            gpu_work: None,
            ms: 3.0,
        });
        let mut a = Report::new(prediction());
        assert_eq!(a.fro_norms(), None);
        a.apply(contributions.clone());
        a.apply(jacobian);
        // The contributions again (a stage re-run): J's norms are kept.
        let mut b = a.clone();
        b.apply(contributions);
        for rep in [&a, &b] {
            assert_eq!(rep.fro_norms(), Some(vec![4.0, 5.0]));
            assert_eq!(rep.reconstruction.detached_rel_error, Some(3e-16));
            assert_eq!(rep.reconstruction.other_precision_rel_error, Some(1e-7));
            assert_eq!(rep.attribution.per_token, vec![0.5, 1.5]);
            assert_eq!(rep.timings_ms.forward, 1.5);
        }
        assert_eq!(a.timings_ms.jacobian, 3.0);
        a.apply(Part::Ordinary(Ordinary {
            rel_error: 0.3,
            ms: 9.0,
        }));
        assert_eq!(a.reconstruction.ordinary_rel_error, Some(0.3));
        assert_eq!(a.timings_ms.ordinary, 9.0);
    }

    #[test]
    fn a_certificate_from_j_replaces_the_probes_and_survives_a_jacobian_without_one() {
        let cert = |e: f64| Certificate {
            device: "gpu".into(),
            probes: 3,
            max_rel_error: e,
            seed: 1,
            ms: 1.0,
        };
        let mut r = Report::new(prediction());
        r.apply(Part::Contributions(Contributions {
            rel_error: 1e-7,
            other_precision_rel_error: None,
            per_token: vec![row("a", 1.0), row("b", 1.0)],
            attribution: Attribution::default(),
            attribution_predicted: None,
            certificate: Some(cert(4e-6)),
            ms: 1.0,
        }));
        assert_eq!(r.reconstruction.certificate, Some(cert(4e-6)));
        let j = |c| {
            Part::Jacobian(JacobianPart {
                detached_rel_error: 1e-7,
                fro_norms: vec![1.0, 1.0],
                certificate: c,
                gpu_work: None,
                ms: 1.0,
            })
        };
        r.apply(j(Some(cert(5e-6))));
        assert_eq!(r.reconstruction.certificate, Some(cert(5e-6)));
        r.apply(j(None));
        assert_eq!(r.reconstruction.certificate, Some(cert(5e-6)));
    }

    #[test]
    fn the_device_decides_the_precision() {
        assert_eq!(Device::choose(true, Precision::F64), Device::Gpu);
        assert_eq!(Device::Gpu.precision(), Precision::F32);
        assert_eq!(
            Device::choose(false, Precision::F64).precision(),
            Precision::F64
        );
        assert_eq!(
            Device::choose(false, Precision::F32).precision(),
            Precision::F32
        );
        assert_eq!(Device::Gpu.label(), "WebGPU");
        assert_eq!(Device::CpuF32.label(), "CPU");
    }
}
