//! What a job's replies from the worker put into the page's [`Results`]:
//! the prediction starts the Report, every later part is folded into it by
//! `Report::apply` (the one place a Report is assembled, as in the CLI).
//! The session routes the replies (`queue::route`) and `jobs` keeps the
//! job queue; this only fills data for the views.

use crate::run_state::Results;
use lens_protocol::messages::Reply;

/// What the page says when a run goes matrix-free.
fn long_prompt_notice(tokens: usize, reason: &str) -> String {
    format!(
        "Matrix-free mode for this prompt ({tokens} tokens): {reason}. The page finds the top \
         of the spectrum without forming J (block Lanczos on probe products); the heatmap, the \
         per-token spectra and the ordinary Jacobian need the full J and are left out."
    )
}

impl Results {
    /// Fills in one reply of a job the page is waiting for.
    pub(crate) fn apply(&mut self, reply: Reply) {
        match reply {
            Reply::Prediction { .. } | Reply::Part { .. } => reply.fold_into(&mut self.report),
            Reply::LongPrompt { tokens, reason, .. } => {
                self.long_prompt = Some(long_prompt_notice(tokens, &reason))
            }
            Reply::Inspect {
                heatmap, columns, ..
            } => self.inspect = Some((heatmap, columns)),
            Reply::Done { ms, .. } => self.done_ms = Some(ms),
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lens_protocol::report::Report;
    use lens_protocol::report::{
        Attribution, Contributions, JacobianPart, Layers, Part, Prediction, Shares, Spectra,
        Spectrum, SvdReport, TokenRow, TopToken,
    };
    use lens_protocol::Precision;

    pub(crate) fn prediction() -> Reply {
        Reply::Prediction {
            job: 1,
            prediction: Prediction {
                model: "tiny".into(),
                precision: Precision::F64,
                token_ids: vec![2, 7],
                tokens: vec!["The".into(), " sky".into()],
                spans: vec![Some([0, 3]), Some([3, 7])],
                top: vec![TopToken {
                    id: 9,
                    token: " is".into(),
                    logit: 3.0,
                    prob: 0.4,
                }],
                ms: 12.0,
            },
        }
    }

    fn row(token: &str) -> TokenRow {
        TokenRow {
            token: token.into(),
            embedding_norm: 1.0,
            jacobian_fro_norm: None,
            contribution_norm: 2.0,
            projection_on_y: 0.5,
        }
    }

    fn attribution() -> Attribution {
        Attribution {
            target_id: 9,
            target_token: " is".into(),
            logit: 3.0,
            per_token: vec![0.5, 2.5],
            sum_rel_error: 0.0,
        }
    }

    /// The shares by one transpose pass: the contributions' attribution
    /// to rounding, without the `c_i`.
    pub(crate) fn shares() -> Reply {
        Reply::Part {
            job: 1,
            part: Part::Shares(Shares {
                attribution: attribution(),
                attribution_predicted: None,
                ms: 8.0,
            }),
        }
    }

    pub(crate) fn contributions() -> Reply {
        Reply::Part {
            job: 1,
            part: Part::Contributions(Contributions {
                rel_error: 1e-16,
                other_precision_rel_error: Some(2e-7),
                per_token: vec![row("The"), row(" sky")],
                attribution: attribution(),
                attribution_predicted: None,
                certificate: None,
                ms: 20.0,
            }),
        }
    }

    pub(crate) fn jacobian() -> Reply {
        Reply::Part {
            job: 1,
            part: Part::Jacobian(JacobianPart {
                detached_rel_error: 3e-16,
                fro_norms: vec![1.5, 2.5],
                certificate: None,
                gpu_work: None,
                ms: 30.0,
            }),
        }
    }

    pub(crate) fn spectra() -> Reply {
        let sp = |s: Vec<f64>| Spectrum {
            singular_values: s,
            stable_rank: 1.2,
            fro_norm: 4.2,
        };
        Reply::Part {
            job: 1,
            part: Part::Spectra(Spectra {
                svd: Some(SvdReport {
                    concat: sp(vec![4.0, 1.0]),
                    per_token: vec![sp(vec![2.0]), sp(vec![3.0])],
                }),
                svd_ms: 5.0,
                decode_ms: 2.0,
                ..Spectra::default()
            }),
        }
    }

    #[test]
    fn the_report_is_the_cli_fold_of_the_same_parts() {
        let mut res = Results::default();
        let replies = [prediction(), contributions(), jacobian(), spectra()];
        for r in replies.clone() {
            res.apply(r);
        }
        // The same parts folded directly, as the CLI does.
        let mut expected = None::<Report>;
        for r in replies {
            match r {
                Reply::Prediction { prediction, .. } => expected = Some(Report::new(prediction)),
                Reply::Part { part, .. } => expected.as_mut().expect("report").apply(part),
                _ => unreachable!(),
            }
        }
        assert_eq!(res.report, expected);
    }

    #[test]
    fn parts_without_a_prediction_are_dropped_and_a_new_run_starts_afresh() {
        let mut res = Results::default();
        res.apply(jacobian());
        assert!(res.report.is_none());
        res.apply(prediction());
        res.apply(contributions());
        res.apply(Reply::Part {
            job: 1,
            part: Part::Layers(Layers {
                layers: Vec::new(),
                path: Vec::new(),
                ms: 4.0,
            }),
        });
        assert_eq!(res.report.as_ref().map(|r| r.timings_ms.layers), Some(4.0));
        res.apply(prediction());
        let rep = res.report.expect("report");
        assert!(rep.per_token.is_empty() && rep.timings_ms.layers == 0.0);
    }

    #[test]
    fn long_prompts_and_the_end_of_a_run_are_noted() {
        let mut res = Results::default();
        res.apply(Reply::LongPrompt {
            job: 1,
            tokens: 60,
            reason: "it has more than 48 tokens".into(),
        });
        let note = res.long_prompt.clone().expect("notice");
        assert!(note.starts_with("Matrix-free mode for this prompt (60 tokens): it has more"));
        res.apply(Reply::Done { job: 1, ms: 99.0 });
        assert_eq!(res.done_ms, Some(99.0));
    }
}
