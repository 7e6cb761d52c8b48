//! The Report of one analysis, as plain serde data. The engine fills it,
//! the CLI prints it as JSON, the worker sends it to the page, the page's
//! views draw it and export it. Nothing here computes.

use serde::{Deserialize, Serialize};

mod compare;
mod parts;
pub use compare::{
    AlignBy, AlignOp, Aligned, CompareTarget, Comparison, DepthPoint, LayersChange,
    PredictionChange, ShareRow, Side, SpectraChange, WordsPair,
};
pub use parts::{
    Contributions, Device, Extent, JacobianPart, KernelPeaks, Layers, Ordinary, Part, Prediction,
    Shares, Spectra, Stage, Steered, SvdMode,
};

/// The frozen attention probabilities `[layer][head][query][key]`.
pub type Attention = Vec<Vec<Vec<Vec<f64>>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F64,
    F32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f64" => Some(Precision::F64),
            "f32" => Some(Precision::F32),
            _ => None,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Precision::parse(s).ok_or_else(|| format!("unknown precision `{s}` (use f32 or f64)"))
    }
}

/// Which vector a Jacobian ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapKind {
    /// The residual stream after the block.
    Layer,
    /// The attention module's output (as added to the residual).
    Attn,
    /// The MLP module's output (as added to the residual).
    Mlp,
}

impl TapKind {
    pub const ALL: [TapKind; 3] = [TapKind::Layer, TapKind::Attn, TapKind::Mlp];

    pub fn name(self) -> &'static str {
        match self {
            TapKind::Layer => "layer",
            TapKind::Attn => "attn",
            TapKind::Mlp => "mlp",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopToken {
    pub id: u32,
    pub token: String,
    pub logit: f64,
    pub prob: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenScore {
    pub id: u32,
    pub token: String,
    /// `W_U u` for the unembedding; the cosine for the embedding.
    pub score: f64,
}

/// What the Report keeps of a decomposition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spectrum {
    /// The largest singular values, descending.
    pub singular_values: Vec<f64>,
    /// `‖J‖_F² / σ₁²` from all singular values.
    pub stable_rank: f64,
    /// `‖J‖_F`.
    pub fro_norm: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Attribution {
    pub target_id: u32,
    pub target_token: String,
    /// `w_t · y`.
    pub logit: f64,
    /// `w_t · c_i` for each input position.
    pub per_token: Vec<f64>,
    /// `|Σ_i w_t·c_i − logit| / |logit|`.
    pub sum_rel_error: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Steering {
    pub source: String,
    pub layer: usize,
    pub lambda: f64,
    /// The continuation with the operator added, and without.
    pub steered: String,
    pub unsteered: String,
    pub steered_ids: Vec<u32>,
    pub unsteered_ids: Vec<u32>,
    /// The source prompt's own predicted next token.
    pub source_token: String,
    /// Its probability at the first generated position, steered and not.
    pub source_token_prob_steered: f64,
    pub source_token_prob_unsteered: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Reconstruction {
    /// `‖Σ_i J_i x_i − y‖ / ‖y‖` of the detached Jacobian (`None` when it
    /// was not formed: matrix-free mode).
    pub detached_rel_error: Option<f64>,
    /// The same for the ordinary Jacobian (nothing frozen), when computed.
    pub ordinary_rel_error: Option<f64>,
    /// `‖Σ_i c_i − y‖ / ‖y‖` of the forward-mode contributions.
    pub contributions_rel_error: f64,
    /// The contributions' error at the other precision (f64 vs f32), from
    /// its own frozen forward (the page computes it; the CLI does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_precision_rel_error: Option<f64>,
    /// When `J` came from the GPU (f32): how far it is from the f64 CPU
    /// passes on random probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

/// A GPU-vs-f64 check of `J` without forming `J` in f64: `k` random unit
/// probes `u`, `uᵀJ` by the f64 transpose pass on the CPU against `uᵀ` times
/// the GPU's `J`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Certificate {
    /// Where `J` was computed (the adapter's name).
    pub device: String,
    pub probes: usize,
    /// `max_u ‖uᵀJ_gpu − uᵀJ_f64‖ / ‖uᵀJ_f64‖`.
    pub max_rel_error: f64,
    /// The probes' seed (the check is reproducible).
    pub seed: u64,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRow {
    pub token: String,
    /// `‖x_i‖`, the input embedding's norm.
    #[serde(default)]
    pub embedding_norm: f64,
    /// `‖J_i‖_F` (`None` in matrix-free mode).
    pub jacobian_fro_norm: Option<f64>,
    /// `‖c_i‖`, `c_i = J_i x_i`.
    pub contribution_norm: f64,
    /// `c_i · y / ‖y‖` (they sum to `‖y‖`).
    pub projection_on_y: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SvdReport {
    /// `J_cat = [J_1 … J_n]`.
    pub concat: Spectrum,
    /// Each `J_i`.
    pub per_token: Vec<Spectrum>,
}

/// One singular pair read as words.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecodedPair {
    /// 1-based rank.
    pub k: usize,
    pub sigma: f64,
    /// Top tokens of `W_U u_k` (`u_k` signed so that `u_k · y ≥ 0`).
    pub u_tokens: Vec<TokenScore>,
    /// Input embeddings nearest `v_k` by cosine (for `J_cat`: the block of
    /// `v_k` at `v_position`, the position where it is largest).
    pub v_tokens: Vec<TokenScore>,
    pub v_position: usize,
}

/// The top of `J_cat`'s spectrum found without forming `J`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MatrixFree {
    pub method: String,
    /// Vector products with `J` or `Jᵀ`.
    pub products: usize,
    pub blocks: usize,
    pub singular_values: Vec<f64>,
    /// `‖J_cat v_k − σ_k u_k‖` for each triplet.
    pub residuals: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecodeReport {
    pub concat: Vec<DecodedPair>,
    pub last_token: Vec<DecodedPair>,
}

/// A column or row of `J_i` with its norm, decoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Line {
    pub index: usize,
    pub norm: f64,
    pub tokens: Vec<TokenScore>,
}

/// The largest columns (input coordinates, decoded through the
/// unembedding) and rows (output coordinates, decoded as nearest input
/// embeddings) of `J_i` at `position`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Columns {
    pub position: usize,
    pub columns: Vec<Line>,
    pub rows: Vec<Line>,
}

/// `J_i` drawn small: `rows × cols` cells, each the entry of largest
/// magnitude (signed) in its block of the `d × d` matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heatmap {
    pub position: usize,
    pub rows: usize,
    pub cols: usize,
    /// Output / input coordinates per cell (the block's size).
    pub row_block: usize,
    pub col_block: usize,
    /// Row-major.
    pub values: Vec<f64>,
    /// Largest magnitude over the whole `J_i`.
    pub max_abs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRow {
    /// 1-based: the output of the `layer`-th block.
    pub layer: usize,
    pub kind: TapKind,
    /// "cumulative" (from the embeddings) or "layerwise" (from the block input).
    pub mode: String,
    pub rel_error: f64,
    /// Of the tap's `J_cat` (`‖J‖_F² / σ₁²`).
    pub stable_rank: f64,
    /// The tap's largest singular values.
    pub singular_values: Vec<f64>,
    /// Top tokens of `W_U u_k` for `u_1..u_3` (signed towards the tap's vector).
    pub u_tokens: Vec<Vec<TokenScore>>,
    /// The logit lens: the tap's vector through the final norm (frozen at its
    /// own value) and the unembedding.
    pub logit_lens_tokens: Vec<TokenScore>,
}

/// Where a layer's top two left singular vectors (cumulative, residual
/// stream) point, as coordinates on the output's: `u_k(ℓ) · u_k(L)`, each
/// signed towards its own vector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathPoint {
    pub layer: usize,
    pub x: f64,
    pub y: f64,
    /// Top token of `u_1(ℓ)`.
    pub label: String,
}

/// What the GPU was asked to do for one piece of work (a full J): the
/// counters that show whether the work reached the device in few, large
/// steps. Counted by the GPU backend as it records; plain data here.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct GpuWork {
    /// Kernel launches.
    pub dispatches: u64,
    /// Command buffers handed to the queue.
    pub submits: u64,
    /// Compute passes opened (one holds a run of dispatches).
    pub compute_passes: u64,
    /// GPU buffers created (a pooled buffer reused is not one).
    pub buffers_created: u64,
    /// Bind groups created (a cached one reused is not one).
    pub bind_groups_created: u64,
    /// Bytes written into GPU buffers from the host.
    pub bytes_uploaded: u64,
    /// Bytes copied back to the host.
    pub bytes_read_back: u64,
    /// Time spent waiting for readbacks and for the queue to drain, ms.
    pub wait_ms: f64,
}

impl GpuWork {
    /// The work done between `earlier` and `self` (both running totals).
    pub fn since(&self, earlier: &GpuWork) -> GpuWork {
        GpuWork {
            dispatches: self.dispatches - earlier.dispatches,
            submits: self.submits - earlier.submits,
            compute_passes: self.compute_passes - earlier.compute_passes,
            buffers_created: self.buffers_created - earlier.buffers_created,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            bytes_uploaded: self.bytes_uploaded - earlier.bytes_uploaded,
            bytes_read_back: self.bytes_read_back - earlier.bytes_read_back,
            wait_ms: self.wait_ms - earlier.wait_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Timings {
    pub forward: f64,
    /// The shares by one transpose pass (before the contributions).
    #[serde(default)]
    pub shares: f64,
    pub jacobian: f64,
    pub contributions: f64,
    pub layers: f64,
    pub ordinary: f64,
    pub svd: f64,
    pub decode: f64,
    pub steering: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub model: String,
    pub precision: Precision,
    pub token_ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// The characters of the prompt each token covers, `[start, end)`
    /// (counted in chars); none for a token the tokenizer added (BOS).
    #[serde(default)]
    pub spans: Vec<Option<[usize; 2]>>,
    pub top: Vec<TopToken>,
    pub reconstruction: Reconstruction,
    pub per_token: Vec<TokenRow>,
    pub layers: Vec<LayerRow>,
    pub svd: Option<SvdReport>,
    /// With `matrix_free`: the top triplets of `J_cat` (then `svd` is absent
    /// and `decode.concat` reads these triplets).
    pub matrix_free: Option<MatrixFree>,
    pub decode: Option<DecodeReport>,
    /// Of the `--target` token, or the predicted one.
    pub attribution: Attribution,
    /// Of the predicted token, when the target is another one.
    pub attribution_predicted: Option<Attribution>,
    pub columns: Option<Columns>,
    /// The path of the top singular vectors across `layers` (cumulative).
    pub path: Vec<PathPoint>,
    /// The frozen attention probabilities `[layer][head][query][key]`.
    pub attention: Option<Attention>,
    /// The prompt continued with and without another prompt's operator.
    pub steering: Option<Steering>,
    pub timings_ms: Timings,
    /// On the GPU: what the full J asked of the device.
    #[serde(default)]
    pub gpu_work: Option<GpuWork>,
}
