//! Two runs side by side: what changed between prompt A and prompt B (or
//! model A and model B), as plain data. The engine fills it from what each
//! run already has; the CLI prints it; the page draws it.

use crate::{Report, TapKind, TopToken};
use serde::{Deserialize, Serialize};

/// How two aligned tokens relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignOp {
    /// The same token (the same id; for two tokenizers, the same text over
    /// the same characters).
    Keep,
    /// A different token in the same place.
    Substitute,
    /// Only in B.
    Insert,
    /// Only in A.
    Delete,
}

/// What the alignment read: token ids (one tokenizer) or the characters
/// each token covers (two tokenizers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignBy {
    Ids,
    Characters,
}

/// One row of the alignment: a token of A, of B, or of both.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Aligned {
    pub a: Option<usize>,
    pub b: Option<usize>,
    pub op: AlignOp,
}

/// The token whose logit is compared, attributed in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareTarget {
    /// Its id in A's vocabulary.
    pub id: u32,
    /// Its id in B's vocabulary (= `id` for one model).
    pub id_b: u32,
    pub token: String,
    pub logit_a: f64,
    pub logit_b: f64,
}

/// One aligned row's share of the target's logit on each side (`w_t · c_i`;
/// absent on the side that lacks the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareRow {
    pub a: Option<usize>,
    pub b: Option<usize>,
    pub share_a: Option<f64>,
    pub share_b: Option<f64>,
    /// `share_b − share_a` (a missing share counts 0).
    pub change: f64,
}

/// The prediction on each side, and each side's probability of the other's
/// top token (absent when that token is no single token of this side's
/// vocabulary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionChange {
    pub top_a: Vec<TopToken>,
    pub top_b: Vec<TopToken>,
    /// A's probability of B's top token.
    pub prob_a_of_top_b: Option<f64>,
    /// B's probability of A's top token.
    pub prob_b_of_top_a: Option<f64>,
    /// The top token differs (by text).
    pub flipped: bool,
}

/// `J_cat`'s spectrum on each side (absent where a run formed none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpectraChange {
    pub sigma_a: Vec<f64>,
    pub sigma_b: Vec<f64>,
    pub stable_rank_a: Option<f64>,
    pub stable_rank_b: Option<f64>,
}

/// The decoded words of the k-th left singular vector on each side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordsPair {
    pub k: usize,
    pub a: Vec<String>,
    pub b: Vec<String>,
}

/// One point of a layer curve, with its depth from 0 to 1 (layer / the
/// model's layers) so that two models of different depth share an axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthPoint {
    pub layer: usize,
    pub depth: f64,
    pub kind: TapKind,
    pub mode: String,
    pub stable_rank: f64,
}

/// Both runs' stable-rank curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LayersChange {
    pub a: Vec<DepthPoint>,
    pub b: Vec<DepthPoint>,
}

/// What changed from run A to run B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Both runs on one model (one tokenizer, one vocabulary).
    pub same_model: bool,
    pub aligned_by: AlignBy,
    pub target: CompareTarget,
    pub alignment: Vec<Aligned>,
    /// Over the alignment, row for row.
    pub shares: Vec<ShareRow>,
    /// `logit_b − logit_a`.
    pub logit_change: f64,
    /// `|Σ share_b − Σ share_a − (logit_b − logit_a)| / |logit_b − logit_a|`.
    pub sum_rel_error: f64,
    /// `|Σ share − logit| / |logit|` on each side.
    pub shares_rel_error_a: f64,
    pub shares_rel_error_b: f64,
    pub prediction: PredictionChange,
    pub spectra: SpectraChange,
    /// One model only: the principal angles (radians, ascending) between
    /// the two runs' top-k left singular subspaces of `J_cat`.
    pub principal_angles: Option<Vec<f64>>,
    /// Decoded words of both, pair by pair.
    pub words: Vec<WordsPair>,
    /// The words both sides' decoded vectors name.
    pub shared_words: Vec<String>,
    pub layers: LayersChange,
}

/// What a comparison keeps of one run: its prompt and Report, `J_cat`'s top
/// left singular vectors, its next-token log-probabilities and its model's
/// depth. Not its `J` (`lens_engine::run::side` makes one from a run). The
/// page keeps A's between runs; `log_probs` crosses to the worker as bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub prompt: String,
    pub report: Report,
    /// `J_cat`'s top left singular vectors (`d` each), as many as the run kept.
    pub u: Vec<Vec<f64>>,
    /// `log p(token)` over the vocabulary, for the last position.
    pub log_probs: Vec<f64>,
    /// The model's layers.
    pub depth: usize,
}

impl Side {
    /// This side's probability of token `id` (none for no id, or one out of
    /// its vocabulary).
    pub fn prob(&self, id: Option<u32>) -> Option<f64> {
        id.and_then(|i| self.log_probs.get(i as usize))
            .map(|l| l.exp())
    }
}
