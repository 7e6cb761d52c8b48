//! A compact snapshot of an analysis's results that a share link may carry,
//! so that a visitor sees them before the model has loaded. A link is
//! untrusted: parsing caps every length, and the page only shows the values
//! as text and checks them against its own recomputation.

use lens_report::Report;
use serde::{Deserialize, Serialize};

/// Singular values kept.
pub const SNAPSHOT_SIGMAS: usize = 8;
/// Decoded pairs kept, and words per pair.
pub const SNAPSHOT_PAIRS: usize = 3;
pub const SNAPSHOT_WORDS: usize = 3;
/// Longest token text kept (characters).
const MAX_WORD: usize = 48;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// The predicted next token.
    pub top: String,
    /// Reconstruction errors: detached `J`, ordinary `J`, contributions.
    pub detached: Option<f64>,
    pub ordinary: Option<f64>,
    pub contributions: Option<f64>,
    pub stable_rank: Option<f64>,
    /// `J_cat`'s top singular values.
    pub sigma: Vec<f64>,
    /// Top words of `u_k` for the first pairs.
    pub words: Vec<Vec<String>>,
}

fn word(s: &str) -> String {
    s.chars().take(MAX_WORD).collect()
}

impl Snapshot {
    /// What a link keeps of `report`.
    pub fn of(report: &Report) -> Self {
        let sigma = match (&report.svd, &report.matrix_free) {
            (Some(s), _) => s.concat.singular_values.clone(),
            (None, Some(m)) => m.singular_values.clone(),
            _ => Vec::new(),
        };
        Snapshot {
            top: report
                .top
                .first()
                .map(|t| word(&t.token))
                .unwrap_or_default(),
            detached: report.reconstruction.detached_rel_error,
            ordinary: report.reconstruction.ordinary_rel_error,
            contributions: Some(report.reconstruction.contributions_rel_error),
            stable_rank: report.svd.as_ref().map(|s| s.concat.stable_rank),
            sigma: sigma.into_iter().take(SNAPSHOT_SIGMAS).collect(),
            words: report
                .decode
                .as_ref()
                .map(|d| {
                    d.concat
                        .iter()
                        .take(SNAPSHOT_PAIRS)
                        .map(|p| {
                            p.u_tokens
                                .iter()
                                .take(SNAPSHOT_WORDS)
                                .map(|t| word(&t.token))
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a link's snapshot; `None` when it is not one. Lengths are cut
    /// to the limits above and non-finite numbers dropped.
    pub fn parse(json: &str) -> Option<Self> {
        let mut s: Snapshot = serde_json::from_str(json).ok()?;
        let finite = |x: Option<f64>| x.filter(|v| v.is_finite());
        s.top = word(&s.top);
        s.detached = finite(s.detached);
        s.ordinary = finite(s.ordinary);
        s.contributions = finite(s.contributions);
        s.stable_rank = finite(s.stable_rank);
        s.sigma.retain(|v| v.is_finite());
        s.sigma.truncate(SNAPSHOT_SIGMAS);
        s.words.truncate(SNAPSHOT_PAIRS);
        for w in s.words.iter_mut() {
            w.truncate(SNAPSHOT_WORDS);
            w.iter_mut().for_each(|t| *t = word(t));
        }
        Some(s)
    }

    /// Where `computed` disagrees with this snapshot, one line each. Only
    /// what both hold is compared. Values are equal to 1e-6 relative;
    /// reconstruction errors below 1e-4 (rounding noise in f64 or f32,
    /// which differs from machine to machine and between the page's two
    /// builds, fused multiply-add rounding once) only need to stay within a
    /// factor of 100.
    pub fn disagreements(&self, computed: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let same = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs());
        let same_error = |a: f64, b: f64| {
            if a.abs().max(b.abs()) < 1e-4 {
                a >= 0.0 && b >= 0.0 && (a.max(1e-300) / b.max(1e-300)).log10().abs() <= 2.0
            } else {
                same(a, b)
            }
        };
        if self.top != computed.top {
            out.push(format!(
                "predicted token: link {:?}, computed {:?}",
                self.top, computed.top
            ));
        }
        let pairs = [
            ("detached error", self.detached, computed.detached, true),
            ("ordinary error", self.ordinary, computed.ordinary, true),
            (
                "contributions error",
                self.contributions,
                computed.contributions,
                true,
            ),
            ("stable rank", self.stable_rank, computed.stable_rank, false),
        ];
        for (what, a, b, error) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                let agree = if error { same_error(a, b) } else { same(a, b) };
                if !agree {
                    out.push(format!("{what}: link {a:.6e}, computed {b:.6e}"));
                }
            }
        }
        for (k, (a, b)) in self.sigma.iter().zip(&computed.sigma).enumerate() {
            if !same(*a, *b) {
                out.push(format!("σ{}: link {a:.6}, computed {b:.6}", k + 1));
            }
        }
        for (k, (a, b)) in self.words.iter().zip(&computed.words).enumerate() {
            if a != b {
                out.push(format!("words of u{}: link {a:?}, computed {b:?}", k + 1));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            top: " the".into(),
            detached: Some(1.7e-15),
            ordinary: Some(0.98),
            contributions: Some(1.1e-15),
            stable_rank: Some(5.98),
            sigma: vec![12.3, 4.5],
            words: vec![vec![" only".into(), " first".into()]],
        }
    }

    #[test]
    fn parses_its_own_json_and_caps_lengths() {
        let s = snap();
        assert_eq!(Snapshot::parse(&s.to_json()), Some(s));
        assert_eq!(Snapshot::parse("<b>not json</b>"), None);
        let long = format!(
            r#"{{"top":"{}","sigma":[{}],"words":[["a","b","c","d"]]}}"#,
            "x".repeat(500),
            vec!["1.0"; 50].join(",")
        );
        let s = Snapshot::parse(&long).expect("parses");
        assert_eq!(s.top.chars().count(), MAX_WORD);
        assert_eq!(s.sigma.len(), SNAPSHOT_SIGMAS);
        assert_eq!(s.words[0].len(), SNAPSHOT_WORDS);
    }

    #[test]
    fn flags_changed_values_but_not_rounding_noise() {
        let a = snap();
        let mut b = snap();
        b.detached = Some(2.3e-15);
        assert!(a.disagreements(&b).is_empty());
        // f32's noise, rounded differently by a fused multiply-add.
        let (mut a32, mut b32) = (snap(), snap());
        (a32.detached, b32.detached) = (Some(3.1e-7), Some(2.2e-7));
        assert!(a32.disagreements(&b32).is_empty());
        b32.detached = Some(3.1e-4);
        assert_eq!(a32.disagreements(&b32).len(), 1);
        b.sigma[0] = 12.9;
        b.words[0][0] = " most".into();
        b.detached = Some(0.5);
        let d = a.disagreements(&b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[1].contains("σ1"), "{d:?}");
    }
}
