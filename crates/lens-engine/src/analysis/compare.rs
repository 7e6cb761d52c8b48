//! Two runs compared: the tokens aligned, the target logit's exact change
//! split over them, the predictions, the spectra, the subspaces, the layer
//! curves. Everything is read from what each run already has ([`Side`]);
//! nothing here forms a `J`.
//!
//! The shares are exact (`Σ_i w_t · c_i = logit_t`), so their difference
//! is too: `Σ share_b − Σ share_a = logit_b − logit_a` to rounding.

use super::svd::decompose;
use crate::error::{EngineError, Result};
use lens_report::{
    AlignBy, AlignOp, Aligned, CompareTarget, DepthPoint, LayersChange, PredictionChange, Report,
    ShareRow, SpectraChange, WordsPair,
};
pub use lens_report::{Comparison, Side};
use std::collections::BTreeSet;

/// Past this many cells (characters of A × characters of B) the character
/// alignment of two tokenizers' prompts is refused (~ two 5,000-char prompts).
const MAX_CHAR_CELLS: usize = 25_000_000;

/// What the caller knows of the two vocabularies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vocabularies {
    /// Both runs on one model (one tokenizer).
    pub same_model: bool,
    /// B's top token in A's vocabulary (none: not one token there).
    pub top_b_in_a: Option<u32>,
    /// A's top token in B's vocabulary.
    pub top_a_in_b: Option<u32>,
}

/// The comparison of run A with run B. Both must have attributed the same
/// target token (the driver runs B with A's target).
pub fn compare(a: &Side, b: &Side, vocab: Vocabularies) -> Result<Comparison> {
    let (ra, rb) = (&a.report, &b.report);
    let (ta, tb) = (&ra.attribution, &rb.attribution);
    let same_target = if vocab.same_model {
        ta.target_id == tb.target_id
    } else {
        ta.target_token == tb.target_token
    };
    if !same_target {
        return Err(EngineError::BadRequest(format!(
            "the two runs attribute different tokens ({:?} and {:?}): run B with A's target",
            ta.target_token, tb.target_token
        )));
    }
    let (alignment, aligned_by) = if vocab.same_model {
        (align_ids(&ra.token_ids, &rb.token_ids), AlignBy::Ids)
    } else {
        (align_chars(a, b)?, AlignBy::Characters)
    };
    let share = |per: &[f64], i: Option<usize>| i.and_then(|i| per.get(i).copied());
    let shares: Vec<ShareRow> = alignment
        .iter()
        .map(|al| {
            let (sa, sb) = (share(&ta.per_token, al.a), share(&tb.per_token, al.b));
            ShareRow {
                a: al.a,
                b: al.b,
                share_a: sa,
                share_b: sb,
                change: sb.unwrap_or(0.0) - sa.unwrap_or(0.0),
            }
        })
        .collect();
    let (sum_a, sum_b) = (
        ta.per_token.iter().sum::<f64>(),
        tb.per_token.iter().sum::<f64>(),
    );
    let logit_change = tb.logit - ta.logit;
    let rel = |err: f64, scale: f64| if scale != 0.0 { err / scale.abs() } else { err };
    let sigma = |r: &Report| -> Vec<f64> {
        match (&r.svd, &r.matrix_free) {
            (Some(s), _) => s.concat.singular_values.clone(),
            (None, Some(m)) => m.singular_values.clone(),
            (None, None) => Vec::new(),
        }
    };
    let words = decoded_words(ra, rb);
    Ok(Comparison {
        same_model: vocab.same_model,
        aligned_by,
        target: CompareTarget {
            id: ta.target_id,
            id_b: tb.target_id,
            token: ta.target_token.clone(),
            logit_a: ta.logit,
            logit_b: tb.logit,
        },
        alignment,
        shares,
        logit_change,
        sum_rel_error: rel((sum_b - sum_a - logit_change).abs(), logit_change),
        // Each run's own measure of the same (`Attribution::sum_rel_error`).
        shares_rel_error_a: ta.sum_rel_error,
        shares_rel_error_b: tb.sum_rel_error,
        prediction: PredictionChange {
            top_a: ra.top.clone(),
            top_b: rb.top.clone(),
            prob_a_of_top_b: a.prob(vocab.top_b_in_a),
            prob_b_of_top_a: b.prob(vocab.top_a_in_b),
            flipped: ra.top.first().map(|t| &t.token) != rb.top.first().map(|t| &t.token),
        },
        spectra: SpectraChange {
            sigma_a: sigma(ra),
            sigma_b: sigma(rb),
            stable_rank_a: ra.svd.as_ref().map(|s| s.concat.stable_rank),
            stable_rank_b: rb.svd.as_ref().map(|s| s.concat.stable_rank),
        },
        principal_angles: if vocab.same_model {
            principal_angles(&a.u, &b.u)?
        } else {
            None
        },
        shared_words: shared_words(&words),
        words,
        layers: LayersChange {
            a: depth_curve(ra, a.depth),
            b: depth_curve(rb, b.depth),
        },
    })
}

/// One edit script between two token sequences, by dynamic programming:
/// `pair(i, j)` is the cost of lining token `i` of A up with token `j` of
/// B (`None`: they may not be lined up), an insertion or a deletion costs 1.
/// Ties prefer lining up, then deleting. `keep(i, j)` names a pair a keep.
fn edit_script(
    na: usize,
    nb: usize,
    pair: impl Fn(usize, usize) -> Option<f64>,
    keep: impl Fn(usize, usize) -> bool,
) -> Vec<Aligned> {
    let w = nb + 1;
    let mut cost = vec![0.0f64; (na + 1) * w];
    for i in 0..=na {
        for j in 0..=nb {
            cost[i * w + j] = match (i, j) {
                (0, _) => j as f64,
                (_, 0) => i as f64,
                _ => {
                    let del = cost[(i - 1) * w + j] + 1.0;
                    let ins = cost[i * w + j - 1] + 1.0;
                    let diag =
                        pair(i - 1, j - 1).map_or(f64::INFINITY, |c| cost[(i - 1) * w + j - 1] + c);
                    diag.min(del).min(ins)
                }
            };
        }
    }
    let mut out = Vec::with_capacity(na.max(nb));
    let (mut i, mut j) = (na, nb);
    while i > 0 || j > 0 {
        let here = cost[i * w + j];
        let diag = (i > 0 && j > 0)
            .then(|| pair(i - 1, j - 1).map(|c| cost[(i - 1) * w + j - 1] + c))
            .flatten();
        if diag.is_some_and(|d| d == here) {
            let op = if keep(i - 1, j - 1) {
                AlignOp::Keep
            } else {
                AlignOp::Substitute
            };
            out.push(Aligned {
                a: Some(i - 1),
                b: Some(j - 1),
                op,
            });
            i -= 1;
            j -= 1;
        } else if i > 0 && cost[(i - 1) * w + j] + 1.0 == here {
            out.push(Aligned {
                a: Some(i - 1),
                b: None,
                op: AlignOp::Delete,
            });
            i -= 1;
        } else {
            out.push(Aligned {
                a: None,
                b: Some(j - 1),
                op: AlignOp::Insert,
            });
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// One tokenizer: the edit distance on token ids (keep, substitute,
/// insert, delete, each edit costing 1).
pub fn align_ids(a: &[u32], b: &[u32]) -> Vec<Aligned> {
    edit_script(
        a.len(),
        b.len(),
        |i, j| Some(if a[i] == b[j] { 0.0 } else { 1.0 }),
        |i, j| a[i] == b[j],
    )
}

/// Two tokenizers: the prompts' characters aligned first (edit distance),
/// then each token of A lined up with the token of B over the same
/// characters. A pair costs `1 − shared / covered` of their characters,
/// so tokens over the same text pair up at no cost, overlapping ones (a
/// word split differently) below an insertion and a deletion, and tokens
/// with no character in common never. Tokens the tokenizers added (BOS)
/// pair only with each other.
pub fn align_chars(a: &Side, b: &Side) -> Result<Vec<Aligned>> {
    let (ca, cb): (Vec<char>, Vec<char>) = (a.prompt.chars().collect(), b.prompt.chars().collect());
    if ca.len().saturating_mul(cb.len()) > MAX_CHAR_CELLS {
        return Err(EngineError::BadRequest(format!(
            "the prompts are too long to line up by characters ({} and {} characters)",
            ca.len(),
            cb.len()
        )));
    }
    let to_b = char_map(&ca, &cb);
    let (sa, sb) = (&a.report.spans, &b.report.spans);
    let (ta, tb) = (&a.report.tokens, &b.report.tokens);
    let (na, nb) = (a.report.token_ids.len(), b.report.token_ids.len());
    if sa.len() != na || sb.len() != nb {
        return Err(EngineError::BadRequest(
            "a run without the characters of its tokens cannot be lined up with another model's"
                .into(),
        ));
    }
    let overlap = |i: usize, j: usize| -> Option<(usize, usize)> {
        let ([s0, e0], [s1, e1]) = (sa[i]?, sb[j]?);
        let shared = (s0..e0.min(ca.len()))
            .filter(|&c| to_b[c].is_some_and(|m| (s1..e1).contains(&m)))
            .count();
        Some((shared, (e0 - s0) + (e1 - s1) - shared))
    };
    let pair = |i: usize, j: usize| -> Option<f64> {
        match (sa[i], sb[j]) {
            (None, None) => Some(if ta[i] == tb[j] { 0.0 } else { 0.5 }),
            (Some(_), Some(_)) => match overlap(i, j)? {
                (0, _) => None,
                (shared, covered) => Some(1.0 - shared as f64 / covered.max(1) as f64),
            },
            _ => None,
        }
    };
    let keep = |i: usize, j: usize| {
        ta[i] == tb[j]
            && match (sa[i], sb[j]) {
                (None, None) => true,
                (Some([s0, e0]), Some([s1, e1])) => {
                    e0 - s0 == e1 - s1 && overlap(i, j).is_some_and(|(shared, _)| shared == e0 - s0)
                }
                _ => false,
            }
    };
    Ok(edit_script(na, nb, pair, keep))
}

/// For each character of `a`, the character of `b` it is kept as in an
/// edit script of least cost (none where it was substituted or deleted).
fn char_map(a: &[char], b: &[char]) -> Vec<Option<usize>> {
    let script = edit_script(
        a.len(),
        b.len(),
        |i, j| Some(if a[i] == b[j] { 0.0 } else { 1.0 }),
        |i, j| a[i] == b[j],
    );
    let mut map = vec![None; a.len()];
    for s in script {
        if let (Some(i), Some(j), AlignOp::Keep) = (s.a, s.b, s.op) {
            map[i] = Some(j);
        }
    }
    map
}

/// The principal angles (ascending, radians) between the spans of two sets
/// of orthonormal vectors, over as many as both have. The cosines are the
/// singular values of `U_aᵀ U_b`, the sines those of `U_b − U_a U_aᵀ U_b`;
/// each angle is read from whichever is the more accurate (Björck & Golub):
/// `acos` loses half the digits near 0, `asin` near π/2.
pub fn principal_angles(ua: &[Vec<f64>], ub: &[Vec<f64>]) -> Result<Option<Vec<f64>>> {
    let k = ua.len().min(ub.len());
    if k == 0 {
        return Ok(None);
    }
    let d = ua[0].len();
    if ua[..k].iter().chain(&ub[..k]).any(|u| u.len() != d) {
        return Err(EngineError::BadRequest(
            "the two runs' singular vectors have different widths".into(),
        ));
    }
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let m: Vec<f64> = (0..k * k).map(|c| dot(&ua[c / k], &ub[c % k])).collect();
    let cos = decompose(k, k, |i, j| m[i * k + j], 0, None)?.singular_values;
    // The part of U_b outside span(U_a), column j: ub_j − Σ_i m_ij ua_i.
    let rest = |r: usize, j: usize| ub[j][r] - (0..k).map(|i| m[i * k + j] * ua[i][r]).sum::<f64>();
    let mut sin = decompose(d, k, rest, 0, None)?.singular_values;
    sin.sort_by(f64::total_cmp);
    Ok(Some(
        cos.iter()
            .zip(&sin)
            .map(|(&c, &s)| {
                if c * c < 0.5 {
                    c.clamp(-1.0, 1.0).acos()
                } else {
                    s.clamp(0.0, 1.0).asin()
                }
            })
            .collect(),
    ))
}

/// The words of each decoded left singular vector of `J_cat`, pair by pair.
fn decoded_words(a: &Report, b: &Report) -> Vec<WordsPair> {
    let pairs = |r: &Report| {
        r.decode
            .as_ref()
            .map(|d| d.concat.clone())
            .unwrap_or_default()
    };
    let (pa, pb) = (pairs(a), pairs(b));
    (0..pa.len().max(pb.len()))
        .map(|k| {
            let words = |p: &[lens_report::DecodedPair]| {
                p.get(k)
                    .map(|d| d.u_tokens.iter().map(|t| t.token.clone()).collect())
                    .unwrap_or_default()
            };
            WordsPair {
                k: k + 1,
                a: words(&pa),
                b: words(&pb),
            }
        })
        .collect()
}

/// The words (trimmed, as written) that both sides' decoded vectors name.
fn shared_words(words: &[WordsPair]) -> Vec<String> {
    let set = |side: fn(&WordsPair) -> &Vec<String>| -> BTreeSet<String> {
        words
            .iter()
            .flat_map(|w| side(w).iter())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    };
    set(|w| &w.a)
        .intersection(&set(|w| &w.b))
        .cloned()
        .collect()
}

/// A run's stable-rank curve on a depth axis from 0 to 1.
fn depth_curve(r: &Report, depth: usize) -> Vec<DepthPoint> {
    r.layers
        .iter()
        .map(|l| DepthPoint {
            layer: l.layer,
            depth: l.layer as f64 / depth.max(1) as f64,
            kind: l.kind,
            mode: l.mode.clone(),
            stable_rank: l.stable_rank,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(al: &[Aligned]) -> Vec<(Option<usize>, Option<usize>, AlignOp)> {
        al.iter().map(|x| (x.a, x.b, x.op)).collect()
    }

    #[test]
    fn ids_substitution_insertion_deletion() {
        use AlignOp::*;
        let sub = align_ids(&[2, 10, 11, 12], &[2, 10, 99, 12]);
        assert_eq!(
            ops(&sub),
            vec![
                (Some(0), Some(0), Keep),
                (Some(1), Some(1), Keep),
                (Some(2), Some(2), Substitute),
                (Some(3), Some(3), Keep)
            ]
        );
        let ins = align_ids(&[2, 10, 12], &[2, 10, 11, 12]);
        assert_eq!(ops(&ins)[2], (None, Some(2), Insert));
        assert_eq!(ins.len(), 4);
        let del = align_ids(&[2, 10, 11, 12], &[2, 10, 12]);
        assert_eq!(ops(&del)[2], (Some(2), None, Delete));
        // Every token of each side appears once, in order.
        for al in [&sub, &ins, &del] {
            let a: Vec<usize> = al.iter().filter_map(|x| x.a).collect();
            let b: Vec<usize> = al.iter().filter_map(|x| x.b).collect();
            assert!(a.windows(2).all(|w| w[0] + 1 == w[1]));
            assert!(b.windows(2).all(|w| w[0] + 1 == w[1]));
        }
        assert!(align_ids(&[], &[]).is_empty());
        assert_eq!(ops(&align_ids(&[], &[5])), vec![(None, Some(0), Insert)]);
    }

    fn side(prompt: &str, tokens: &[&str], spans: &[Option<[usize; 2]>]) -> Side {
        let prediction = lens_report::Prediction {
            model: "m".into(),
            precision: lens_report::Precision::F64,
            token_ids: (0..tokens.len() as u32).collect(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            spans: spans.to_vec(),
            top: Vec::new(),
            ms: 0.0,
        };
        Side {
            prompt: prompt.into(),
            report: Report::new(prediction),
            u: Vec::new(),
            log_probs: Vec::new(),
            depth: 1,
        }
    }

    #[test]
    fn characters_line_up_two_tokenizers() {
        use AlignOp::*;
        // A: <bos>|The| Marin| is ; B: The| Mar|in| was (no BOS).
        let a = side(
            "The Marin is",
            &["<bos>", "The", " Marin", " is"],
            &[None, Some([0, 3]), Some([3, 9]), Some([9, 12])],
        );
        let b = side(
            "The Marin was",
            &["The", " Mar", "in", " was"],
            &[Some([0, 3]), Some([3, 7]), Some([7, 9]), Some([9, 13])],
        );
        let al = align_chars(&a, &b).unwrap();
        assert_eq!(
            ops(&al),
            vec![
                (Some(0), None, Delete),
                (Some(1), Some(0), Keep),
                (Some(2), Some(1), Substitute),
                (None, Some(2), Insert),
                (Some(3), Some(3), Substitute),
            ]
        );
    }

    #[test]
    fn principal_angles_of_known_subspaces() {
        let e = |i: usize| {
            (0..4)
                .map(|k| if k == i { 1.0 } else { 0.0 })
                .collect::<Vec<f64>>()
        };
        let t = 0.3f64;
        let rotated: Vec<f64> = vec![t.cos(), 0.0, t.sin(), 0.0];
        let angles = principal_angles(&[e(0), e(1)], &[rotated, e(1)])
            .unwrap()
            .unwrap();
        assert!(angles[0].abs() < 1e-15, "{angles:?}");
        assert!((angles[1] - t).abs() < 1e-12, "{angles:?}");
        assert_eq!(principal_angles(&[], &[e(0)]).unwrap(), None);
    }
}
