//! What the exactness view, the token strip and the spectrum view draw,
//! derived from the page's [`Results`] (plain data; the page wraps each in
//! a signal).

use crate::run_state::Results;
use crate::views::exactness::ExactnessData;
use crate::views::spectrum::SpectrumData;
use crate::views::token_strip::StripData;

impl Results {
    pub(crate) fn exactness(&self) -> ExactnessData {
        ExactnessData {
            precision: self.precision.name(),
            contributions: self.contributions,
            detached: self.detached,
            ordinary: self.ordinary,
            certificate: self.certificate.clone().or_else(|| {
                self.report
                    .as_ref()
                    .and_then(|rep| rep.reconstruction.certificate.clone())
            }),
        }
    }

    pub(crate) fn strip(&self) -> Option<StripData> {
        (!self.tokens.is_empty()).then(|| StripData {
            tokens: self.tokens.clone(),
            rows: self.rows.clone(),
            target_token: self.target_token.clone(),
            logit: self.logit,
            fro_norms: self.fro_norms.clone(),
        })
    }

    /// J_cat's spectrum (or the matrix-free top of it) and the `selected`
    /// token's J_i (the last token when none is selected).
    pub(crate) fn spectrum(&self, selected: Option<usize>) -> Option<SpectrumData> {
        let rep = self.report.as_ref()?;
        let n = rep.tokens.len();
        let at = selected.filter(|&t| t < n).unwrap_or(n.saturating_sub(1));
        Some(match (&rep.svd, &rep.matrix_free) {
            (Some(svd), _) => SpectrumData {
                singular_values: svd.concat.singular_values.clone(),
                stable_rank: Some(svd.concat.stable_rank),
                fro_norm: Some(svd.concat.fro_norm),
                ms: self.svd_ms.unwrap_or(rep.timings_ms.svd),
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
                ms: rep.timings_ms.svd,
                token: None,
                matrix_free: Some(mf.clone()),
            },
            _ => return None,
        })
    }
}
