//! What a job's replies from the worker put into the page's [`Results`]:
//! the prediction, the contributions, J's numbers, the Report and what is
//! merged into it later (ordinary Jacobian, layer curves, steering). The
//! page (app.rs) routes the replies, keeps the job queue and starts what
//! follows a run; this only fills data for the views.

use crate::run_state::Results;
use crate::views::prediction::PredictionData;
use lens_protocol::messages::Reply;
use lens_protocol::Precision;

/// Whether a reply ends its job (the worker moves on to the next).
pub(crate) fn ends_job(r: &Reply) -> bool {
    matches!(
        r,
        Reply::Layers { .. } | Reply::Inspect { .. } | Reply::Steered { .. } | Reply::Done { .. }
    )
}

/// Fills `res` from one reply of a job the page is waiting for.
pub(crate) fn apply(res: &mut Results, reply: Reply) {
    match reply {
        // The GPU computes in f32 (auto included).
        Reply::Backend { name, .. } if name == "WebGPU" => res.precision = Precision::F32,
        Reply::Prediction {
            tokens, top, ms, ..
        } => {
            res.tokens = tokens.clone();
            res.prediction = Some(PredictionData { tokens, top, ms });
        }
        Reply::Contributions {
            target_token,
            logit,
            per_token,
            rel_error,
            other_precision_rel_error,
            certificate,
            ..
        } => {
            res.rows = Some(per_token);
            res.target_token = target_token;
            res.logit = logit;
            res.contributions = Some((rel_error, other_precision_rel_error));
            // The GPU's probe products, until its J refines them.
            res.certificate = certificate;
        }
        Reply::Jacobian {
            detached_rel_error,
            fro_norms,
            certificate,
            ..
        } => {
            res.detached = Some(detached_rel_error);
            res.fro_norms = Some(fro_norms);
            res.certificate = certificate;
        }
        Reply::Spectrum { ms, .. } => res.svd_ms = Some(ms),
        Reply::LongPrompt { tokens, reason, .. } => {
            res.long_prompt = Some(format!(
                "Matrix-free mode for this prompt ({tokens} tokens): {reason}. The page finds \
                 the top of the spectrum without forming J (block Lanczos on probe products); \
                 the heatmap, the per-token spectra and the ordinary Jacobian need the full J \
                 and are left out."
            ))
        }
        Reply::Report { report, .. } => {
            let mut report = *report;
            // The Jacobian stage's certificate, for the export.
            if report.reconstruction.certificate.is_none() {
                report.reconstruction.certificate = res.certificate.clone();
            }
            res.report = Some(report);
        }
        Reply::Ordinary {
            ordinary_rel_error,
            ms,
            ..
        } => {
            res.ordinary = Some(ordinary_rel_error);
            if let Some(rep) = res.report.as_mut() {
                rep.reconstruction.ordinary_rel_error = Some(ordinary_rel_error);
                rep.timings_ms.ordinary = ms;
            }
        }
        Reply::Layers {
            layers, path, ms, ..
        } => {
            if let Some(rep) = res.report.as_mut() {
                rep.layers = layers;
                rep.path = path;
                rep.timings_ms.layers = ms;
            }
        }
        Reply::Inspect {
            heatmap, columns, ..
        } => res.inspect = Some((heatmap, columns)),
        Reply::Steered { steering, ms, .. } => {
            if let Some(rep) = res.report.as_mut() {
                rep.steering = Some(steering.clone());
                rep.timings_ms.steering = ms;
            }
            res.steering = Some(steering);
        }
        Reply::Done { ms, .. } => res.done_ms = Some(ms),
        _ => {}
    }
}
