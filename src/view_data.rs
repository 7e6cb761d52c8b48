//! What the views draw, derived from the page's [`Results`] (its Report as
//! far as it has arrived). Plain data, no rendering, no linear algebra:
//! the page wraps each in a signal, the views in `views/` draw them, and
//! the unit tests here run natively.

use crate::run_state::Results;
use lens_protocol::report::{Certificate, MatrixFree, Report, Spectrum, TopToken};
use lens_protocol::View;

/// The top next tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionData {
    pub tokens: Vec<String>,
    pub top: Vec<TopToken>,
    pub ms: f64,
}

/// The reconstruction errors, as far as they are known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExactnessData {
    pub precision: &'static str,
    /// From the contributions `c_i` at the run's precision.
    pub contributions: Option<f64>,
    /// The same at the other precision.
    pub other_precision: Option<f64>,
    pub detached: Option<f64>,
    pub ordinary: Option<f64>,
    /// A run on the GPU: `k` random probes `uᵀJ` in f64 on the CPU against
    /// the GPU's `J`.
    pub certificate: Option<Certificate>,
}

/// One token's share of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct StripRow {
    pub token: String,
    pub id: u32,
    /// `w_t · c_i` for the attributed token `t` (these sum to its logit).
    pub attribution: f64,
    /// `‖c_i‖`.
    pub contribution_norm: f64,
    /// `c_i · y / ‖y‖`.
    pub projection_on_y: f64,
}

/// The prompt's tokens and, once the contributions are in, their shares.
#[derive(Clone, Debug, PartialEq)]
pub struct StripData {
    pub tokens: Vec<String>,
    /// Present once the contributions are in.
    pub rows: Option<Vec<StripRow>>,
    pub target_token: String,
    pub logit: f64,
    pub fro_norms: Option<Vec<f64>>,
}

/// `J_cat`'s spectrum (or the matrix-free top of it) and one `J_i`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct SpectrumData {
    /// `J_cat`'s top singular values.
    pub singular_values: Vec<f64>,
    /// `None` in matrix-free mode (it needs `‖J‖_F`).
    pub stable_rank: Option<f64>,
    pub fro_norm: Option<f64>,
    pub ms: f64,
    /// The selected token's `J_i`: its position, text and spectrum.
    pub token: Option<(usize, String, Spectrum)>,
    /// How the values were found without `J` (long prompts).
    pub matrix_free: Option<MatrixFree>,
}

/// A view's title, as the tabs and messages name it.
pub(crate) fn view_title(v: View) -> &'static str {
    match v {
        View::Prediction => "Next token",
        View::Exactness => "Exactness",
        View::Tokens => "Tokens",
        View::Spectrum => "Spectrum",
        View::Decode => "Decode",
        View::Layers => "Layers",
        View::Path => "Path",
        View::Attention => "Attention",
        View::Heatmap => "Heatmap",
        View::Steering => "Steering",
    }
}

/// Whether the contributions part has been folded into `rep`.
fn has_contributions(rep: &Report) -> bool {
    !rep.per_token.is_empty()
}

impl Results {
    pub(crate) fn prediction(&self) -> Option<PredictionData> {
        let rep = self.report.as_ref()?;
        Some(PredictionData {
            tokens: rep.tokens.clone(),
            top: rep.top.clone(),
            ms: rep.timings_ms.forward,
        })
    }

    pub(crate) fn tokens(&self) -> Vec<String> {
        self.report
            .as_ref()
            .map(|r| r.tokens.clone())
            .unwrap_or_default()
    }

    pub(crate) fn exactness(&self) -> ExactnessData {
        let Some(rep) = self.report.as_ref() else {
            return ExactnessData {
                precision: self.asked.name(),
                ..ExactnessData::default()
            };
        };
        let r = &rep.reconstruction;
        let contributions = has_contributions(rep);
        ExactnessData {
            precision: rep.precision.name(),
            contributions: contributions.then_some(r.contributions_rel_error),
            other_precision: r.other_precision_rel_error,
            detached: r.detached_rel_error,
            ordinary: r.ordinary_rel_error,
            certificate: r.certificate.clone(),
        }
    }

    /// What the GPU was asked to do for the run's J, as (what, how many)
    /// rows for the engine details; `None` off the GPU or before J.
    pub(crate) fn gpu_work(&self) -> Option<Vec<(&'static str, String)>> {
        let w = self.report.as_ref()?.gpu_work?;
        let count = |v: u64| v.to_string();
        Some(vec![
            ("dispatches", count(w.dispatches)),
            ("submits", count(w.submits)),
            ("compute passes", count(w.compute_passes)),
            ("buffers created", count(w.buffers_created)),
            ("bind groups created", count(w.bind_groups_created)),
            ("uploaded", crate::numbers::mb(w.bytes_uploaded as f64)),
            ("read back", crate::numbers::mb(w.bytes_read_back as f64)),
            ("waiting on the GPU", format!("{:.0} ms", w.wait_ms)),
        ])
    }

    pub(crate) fn strip(&self) -> Option<StripData> {
        let rep = self.report.as_ref()?;
        let rows = has_contributions(rep).then(|| {
            rep.per_token
                .iter()
                .enumerate()
                .map(|(i, t)| StripRow {
                    token: t.token.clone(),
                    id: rep.token_ids.get(i).copied().unwrap_or_default(),
                    attribution: rep.attribution.per_token.get(i).copied().unwrap_or(0.0),
                    contribution_norm: t.contribution_norm,
                    projection_on_y: t.projection_on_y,
                })
                .collect()
        });
        Some(StripData {
            tokens: rep.tokens.clone(),
            rows,
            target_token: rep.attribution.target_token.clone(),
            logit: rep.attribution.logit,
            fro_norms: rep.fro_norms(),
        })
    }

    /// J_cat's spectrum (or the matrix-free top of it) and the `selected`
    /// token's J_i (the last token when none is selected).
    pub(crate) fn spectrum(&self, selected: Option<usize>) -> Option<SpectrumData> {
        let rep = self.report.as_ref()?;
        let n = rep.tokens.len();
        let at = selected.filter(|&t| t < n).unwrap_or(n.saturating_sub(1));
        let ms = rep.timings_ms.svd + rep.timings_ms.decode;
        Some(match (&rep.svd, &rep.matrix_free) {
            (Some(svd), _) => SpectrumData {
                singular_values: svd.concat.singular_values.clone(),
                stable_rank: Some(svd.concat.stable_rank),
                fro_norm: Some(svd.concat.fro_norm),
                ms,
                token: svd.per_token.get(at).map(|sp| {
                    (
                        at,
                        rep.tokens.get(at).cloned().unwrap_or_default(),
                        sp.clone(),
                    )
                }),
                matrix_free: None,
            },
            (None, Some(mf)) => SpectrumData {
                singular_values: mf.singular_values.clone(),
                stable_rank: None,
                fro_norm: None,
                ms,
                token: None,
                matrix_free: Some(mf.clone()),
            },
            _ => return None,
        })
    }

    /// Whether the run has reached its spectra with a full `J` (a `J_i`
    /// can then be inspected).
    pub(crate) fn has_full_j(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.svd.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::tests::{contributions, jacobian, prediction, spectra};
    use lens_protocol::{Precision, Reply};

    fn results(replies: Vec<Reply>) -> Results {
        let mut r = Results::asking("Marin is the", Precision::F32);
        for reply in replies {
            r.apply(reply);
        }
        r
    }

    #[test]
    fn before_the_prediction_the_views_show_what_was_asked() {
        let r = Results::asking("Marin is the", Precision::F32);
        assert_eq!(r.exactness().precision, "f32");
        assert_eq!(r.exactness().contributions, None);
        assert!(r.prediction().is_none() && r.strip().is_none() && r.spectrum(None).is_none());
    }

    #[test]
    fn the_strip_fills_in_as_the_parts_arrive() {
        let r = results(vec![prediction()]);
        let strip = r.strip().expect("tokens are known");
        assert_eq!(strip.tokens, ["The", " sky"]);
        assert!(strip.rows.is_none() && strip.fro_norms.is_none());
        assert_eq!(r.prediction().map(|p| p.ms), Some(12.0));

        let r = results(vec![prediction(), contributions(), jacobian()]);
        let strip = r.strip().expect("strip");
        let rows = strip.rows.expect("rows");
        assert_eq!(rows[1].id, 7);
        assert_eq!(rows[1].attribution, 2.5);
        assert_eq!(strip.logit, 3.0);
        assert_eq!(strip.fro_norms, Some(vec![1.5, 2.5]));
        let e = r.exactness();
        assert_eq!(e.precision, "f64");
        assert_eq!(
            (e.contributions, e.other_precision, e.detached),
            (Some(1e-16), Some(2e-7), Some(3e-16))
        );
    }

    #[test]
    fn the_gpu_work_of_j_is_shown_as_counted() {
        let r = results(vec![prediction(), contributions(), jacobian()]);
        assert_eq!(r.gpu_work(), None, "a CPU run has no GPU work");
        let mut on_gpu = jacobian();
        if let Reply::Part {
            part: lens_protocol::report::Part::Jacobian(j),
            ..
        } = &mut on_gpu
        {
            j.gpu_work = Some(lens_protocol::report::GpuWork {
                dispatches: 270,
                submits: 18,
                compute_passes: 18,
                buffers_created: 0,
                bind_groups_created: 3,
                bytes_uploaded: 2_500_000,
                bytes_read_back: 26_214_400,
                wait_ms: 812.4,
            });
        }
        let rows = results(vec![prediction(), contributions(), on_gpu])
            .gpu_work()
            .expect("rows");
        let get = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1.as_str());
        assert_eq!(get("dispatches"), Some("270"));
        assert_eq!(get("buffers created"), Some("0"));
        assert_eq!(get("read back"), Some("26.2 MB"));
        assert_eq!(get("waiting on the GPU"), Some("812 ms"));
    }

    #[test]
    fn the_spectrum_reads_the_selected_token_or_the_last() {
        let r = results(vec![prediction(), contributions(), jacobian(), spectra()]);
        assert!(r.has_full_j());
        let s = r.spectrum(None).expect("spectrum");
        assert_eq!(s.singular_values, vec![4.0, 1.0]);
        assert_eq!(s.ms, 7.0);
        assert_eq!(s.token.as_ref().map(|t| t.0), Some(1));
        let s = r.spectrum(Some(0)).expect("spectrum");
        assert_eq!(s.token.map(|t| (t.0, t.1)), Some((0, "The".to_string())));
        // Out of range: the last token.
        assert_eq!(
            r.spectrum(Some(9)).and_then(|s| s.token).map(|t| t.0),
            Some(1)
        );
    }
}
