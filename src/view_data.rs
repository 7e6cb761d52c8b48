//! What the views draw, derived from the page's [`Results`] (its Report as
//! far as it has arrived). Plain data, no rendering, no linear algebra:
//! the page wraps each in a signal, the views in `views/` draw them, and
//! the unit tests here run natively.

use crate::run_state::Results;
use lens_protocol::report::{
    AlignOp, Certificate, Comparison, DepthPoint, MatrixFree, Report, Spectrum, TopToken,
};
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
    /// `‖c_i‖` and `c_i · y / ‖y‖`, once the contributions are in (the
    /// shares come first, without the `c_i`).
    pub contribution: Option<(f64, f64)>,
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

/// One aligned row of a comparison: A's token over B's, each side's share
/// of the target's logit and the change.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareRow {
    pub a: Option<String>,
    pub b: Option<String>,
    pub op: AlignOp,
    pub share_a: Option<f64>,
    pub share_b: Option<f64>,
    pub change: f64,
}

/// One layer curve of a comparison's side: a tap kind and mode, its
/// points as (depth 0..1, stable rank, layer).
#[derive(Clone, Debug, PartialEq)]
pub struct DepthCurve {
    pub label: String,
    pub points: Vec<(f64, f64, usize)>,
}

/// What the comparison view draws: the Comparison, each aligned row with
/// its tokens' texts, the layer curves grouped, the angles in degrees.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareData {
    pub comparison: Comparison,
    pub prompt_a: String,
    pub prompt_b: String,
    pub model_a: String,
    pub model_b: String,
    pub rows: Vec<CompareRow>,
    /// The largest `|change|` (bars scale to it; 0 when nothing moved).
    pub max_change: f64,
    /// The row whose share moved most.
    pub moved_most: Option<usize>,
    pub angles_deg: Option<Vec<f64>>,
    pub curves_a: Vec<DepthCurve>,
    pub curves_b: Vec<DepthCurve>,
}

fn curves(points: &[DepthPoint]) -> Vec<DepthCurve> {
    let mut out: Vec<DepthCurve> = Vec::new();
    for p in points {
        let label = format!("{} ({})", p.kind.name(), p.mode);
        let at = (p.depth, p.stable_rank, p.layer);
        match out.iter_mut().find(|c| c.label == label) {
            Some(c) => c.points.push(at),
            None => out.push(DepthCurve {
                label,
                points: vec![at],
            }),
        }
    }
    for c in out.iter_mut() {
        c.points.sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    out
}

/// The comparison of side A (`a`, its prompt) with the run on screen (`b`).
pub(crate) fn compare_data(
    c: &Comparison,
    a: &Report,
    prompt_a: &str,
    b: &Report,
    prompt_b: &str,
) -> CompareData {
    let text = |r: &Report, i: Option<usize>| i.and_then(|i| r.tokens.get(i).cloned());
    let rows: Vec<CompareRow> = c
        .alignment
        .iter()
        .zip(&c.shares)
        .map(|(al, sh)| CompareRow {
            a: text(a, al.a),
            b: text(b, al.b),
            op: al.op,
            share_a: sh.share_a,
            share_b: sh.share_b,
            change: sh.change,
        })
        .collect();
    let max_change = rows.iter().map(|r| r.change.abs()).fold(0.0, f64::max);
    let moved_most = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.change != 0.0)
        .max_by(|x, y| x.1.change.abs().total_cmp(&y.1.change.abs()))
        .map(|(i, _)| i);
    CompareData {
        comparison: c.clone(),
        prompt_a: prompt_a.to_string(),
        prompt_b: prompt_b.to_string(),
        model_a: a.model.clone(),
        model_b: b.model.clone(),
        rows,
        max_change,
        moved_most,
        angles_deg: c
            .principal_angles
            .as_ref()
            .map(|v| v.iter().map(|r| r.to_degrees()).collect()),
        curves_a: curves(&c.layers.a),
        curves_b: curves(&c.layers.b),
    }
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
        View::Compare => "Compare",
    }
}

/// Whether the contributions part has been folded into `rep`.
fn has_contributions(rep: &Report) -> bool {
    !rep.per_token.is_empty()
}

/// Whether each token's share of the target's logit is in `rep` (the
/// shares part, or the contributions).
fn has_shares(rep: &Report) -> bool {
    !rep.tokens.is_empty() && rep.attribution.per_token.len() == rep.tokens.len()
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
        let rows = has_shares(rep).then(|| {
            rep.tokens
                .iter()
                .zip(&rep.attribution.per_token)
                .enumerate()
                .map(|(i, (token, &attribution))| StripRow {
                    token: token.clone(),
                    id: rep.token_ids.get(i).copied().unwrap_or_default(),
                    attribution,
                    contribution: rep
                        .per_token
                        .get(i)
                        .map(|t| (t.contribution_norm, t.projection_on_y)),
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

    /// The run found `J_cat`'s top singular vectors (from the full `J`, or
    /// matrix-free): it can be a comparison's side A.
    pub(crate) fn has_spectrum(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.svd.is_some() || r.matrix_free.is_some())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::replies::tests::{contributions, jacobian, prediction, shares, spectra};
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

        // The shares come first, before any c_i: rows without their norms.
        let r = results(vec![prediction(), shares()]);
        let rows = r.strip().and_then(|s| s.rows).expect("shares");
        assert_eq!((rows[1].attribution, rows[1].contribution), (2.5, None));
        assert_eq!(r.exactness().contributions, None);

        let r = results(vec![prediction(), shares(), contributions(), jacobian()]);
        let strip = r.strip().expect("strip");
        let rows = strip.rows.expect("rows");
        assert_eq!(rows[1].id, 7);
        assert_eq!(rows[1].attribution, 2.5);
        assert_eq!(rows[1].contribution, Some((2.0, 0.5)));
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
        let before = results(vec![prediction(), contributions(), jacobian()]);
        assert!(!before.has_full_j() && !before.has_spectrum());
        let r = results(vec![prediction(), contributions(), jacobian(), spectra()]);
        assert!(r.has_full_j() && r.has_spectrum());
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

    /// A comparison of "The sky" (A) with "The sea today" (B).
    pub(crate) fn compare_fixture() -> CompareData {
        use lens_protocol::report::{
            AlignBy, Aligned, CompareTarget, LayersChange, PredictionChange, ShareRow,
            SpectraChange, TapKind,
        };
        let r = results(vec![prediction(), contributions()]);
        let a = r.report.expect("report");
        let mut b = a.clone();
        b.tokens = vec!["The".into(), " sea".into(), " today".into()];
        let point = |layer: usize, depth: f64| DepthPoint {
            layer,
            depth,
            kind: TapKind::Layer,
            mode: "cumulative".into(),
            stable_rank: 1.0 + depth,
        };
        let c = Comparison {
            same_model: true,
            aligned_by: AlignBy::Ids,
            target: CompareTarget {
                id: 9,
                id_b: 9,
                token: " is".into(),
                logit_a: 3.0,
                logit_b: 2.0,
            },
            alignment: vec![
                Aligned {
                    a: Some(0),
                    b: Some(0),
                    op: AlignOp::Keep,
                },
                Aligned {
                    a: Some(1),
                    b: Some(1),
                    op: AlignOp::Substitute,
                },
                Aligned {
                    a: None,
                    b: Some(2),
                    op: AlignOp::Insert,
                },
            ],
            shares: vec![
                ShareRow {
                    a: Some(0),
                    b: Some(0),
                    share_a: Some(0.5),
                    share_b: Some(0.25),
                    change: -0.25,
                },
                ShareRow {
                    a: Some(1),
                    b: Some(1),
                    share_a: Some(2.5),
                    share_b: Some(1.0),
                    change: -1.5,
                },
                ShareRow {
                    a: None,
                    b: Some(2),
                    share_a: None,
                    share_b: Some(0.75),
                    change: 0.75,
                },
            ],
            logit_change: -1.0,
            sum_rel_error: 0.0,
            shares_rel_error_a: 0.0,
            shares_rel_error_b: 0.0,
            prediction: PredictionChange {
                top_a: a.top.clone(),
                top_b: a.top.clone(),
                prob_a_of_top_b: Some(0.4),
                prob_b_of_top_a: Some(0.4),
                flipped: false,
            },
            spectra: SpectraChange::default(),
            principal_angles: Some(vec![0.0, std::f64::consts::FRAC_PI_2]),
            words: Vec::new(),
            shared_words: Vec::new(),
            layers: LayersChange {
                a: vec![point(6, 0.5), point(3, 0.25)],
                b: vec![point(3, 0.25)],
            },
        };
        compare_data(&c, &a, "The sky", &b, "The sea today")
    }

    #[test]
    fn a_comparison_lines_up_tokens_and_finds_the_largest_move() {
        let d = compare_fixture();
        assert_eq!(d.rows[1].a.as_deref(), Some(" sky"));
        assert_eq!(d.rows[1].b.as_deref(), Some(" sea"));
        assert_eq!(
            (d.rows[2].a.clone(), d.rows[2].b.as_deref()),
            (None, Some(" today"))
        );
        assert_eq!(d.moved_most, Some(1));
        assert_eq!(d.max_change, 1.5);
        assert_eq!(d.angles_deg, Some(vec![0.0, 90.0]));
        // Curves ordered by depth, one per tap kind and mode.
        assert_eq!(d.curves_a.len(), 1);
        assert_eq!(
            d.curves_a[0].points.iter().map(|p| p.2).collect::<Vec<_>>(),
            vec![3, 6]
        );
    }
}
