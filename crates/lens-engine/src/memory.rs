//! What a model needs in memory, estimated before anything is allocated for
//! it: before its files are read (only their size is known) and before a run
//! (the prompt's length and the model's sizes are known). The caller compares
//! the need with what its place allows (a browser worker's wasm32 memory, a
//! device's RAM) and refuses with the numbers; `crates/lens-worker/tests/memory_need.rs` holds
//! the estimate against a counting allocator on the real models.

use crate::model::ModelConfig;
use crate::{Precision, PrecisionDType};

/// The engine's own memory beside the model (code tables, the tokenizer, the
/// allocator's slack), measured on the real models with room to spare.
pub const BASELINE_BYTES: u64 = 48 << 20;
/// What parsing takes beside the file once the download's copy is let go:
/// the tokenizer's tables above all, for the largest vocabulary of the three
/// families (Gemma 3's 262 k tokens). While a file is copied into the model
/// both copies are held; whichever is larger is the peak.
pub const PARSE_BYTES: u64 = 192 << 20;
/// What a run keeps beside the frozen forward and `J`: the passes'
/// temporaries (`PassOptions`' budget, reached on long prompts only), the
/// decoding's blocks of the unembedding, the spectra.
pub const RUN_WORKING_BYTES: u64 = 320 << 20;

/// One estimate, in bytes, by what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryNeed {
    /// The weights, kept as the file stores them (before a load), or the
    /// model as the worker holds it, its tokenizer and tables with it (before
    /// a run).
    pub weights: u64,
    /// A second copy of the file while it is parsed into the model, and the
    /// parser's tables.
    pub reading: u64,
    /// The frozen forward of the prompt, in both precisions.
    pub trace: u64,
    /// `J` for the prompt and its SVD's copies (or a matrix-free run's blocks).
    pub jacobian: u64,
    /// Temporaries and the engine's own memory.
    pub working: u64,
}

impl MemoryNeed {
    /// Before a model's files are read: their size is all that is known.
    pub fn to_load(file_bytes: u64) -> Self {
        MemoryNeed {
            weights: file_bytes,
            reading: file_bytes.max(PARSE_BYTES),
            working: BASELINE_BYTES,
            ..Self::default()
        }
    }

    /// What a loaded model holds: its file's bytes and the tokenizer's
    /// tables.
    pub fn held_by_model(file_bytes: u64) -> u64 {
        file_bytes + PARSE_BYTES
    }

    /// A run of `n` tokens at `precision`, with `held` bytes held already
    /// (the model, its tokenizer: [`MemoryNeed::held_by_model`]); `full_j` when the run forms `J` whole (else
    /// its spectrum is found matrix-free, a few blocks of `n·d` vectors).
    pub fn to_run(
        held: u64,
        c: &ModelConfig,
        n: usize,
        precision: Precision,
        full_j: bool,
    ) -> Self {
        let (n, d, l) = (n as u64, c.hidden as u64, c.layers as u64);
        let elem = precision.dtype().size_in_bytes() as u64;
        // Per layer and token: five residual-sized vectors (in, attention
        // out, middle, MLP out, out), the gates, one attention row per head.
        let per_layer = n * (5 * d + c.ffn as u64 + c.heads as u64 * n);
        // The run keeps the other precision's forward too (f64 and f32).
        let trace = l * per_layer * (8 + 4);
        let j = n * d * d * elem;
        let jacobian = if full_j {
            // J's values, the SVD's matrix and its V.
            3 * j
        } else {
            // Lanczos blocks of up to 64 vectors of n·d, a few at a time.
            4 * 64 * n * d * 8
        };
        MemoryNeed {
            weights: held,
            reading: 0,
            trace,
            jacobian,
            working: RUN_WORKING_BYTES + BASELINE_BYTES,
        }
    }

    /// The most held at once: the file and its parsed copy while loading,
    /// or the model and a run's working set (one estimate has one or the
    /// other).
    pub fn peak(&self) -> u64 {
        self.weights + self.reading + self.trace + self.jacobian + self.working
    }

    /// `None` when the need fits `limit`; else one sentence with the numbers.
    pub fn refuse(&self, limit: u64, what: &str) -> Option<String> {
        if self.peak() <= limit {
            return None;
        }
        let mut parts = vec![format!("{} of weights", gb(self.weights))];
        if self.reading > 0 {
            parts.push(format!("{} more while they are read", gb(self.reading)));
        }
        if self.trace > 0 {
            parts.push(format!("{} for the frozen forward", gb(self.trace)));
        }
        if self.jacobian > 0 {
            parts.push(format!("{} for J", gb(self.jacobian)));
        }
        parts.push(format!("{} working memory", gb(self.working)));
        Some(format!(
            "{what} needs about {} ({}), more than the {} this browser can give it",
            gb(self.peak()),
            parts.join(", "),
            gb(limit)
        ))
    }
}

/// Bytes as GB with two decimals (MB below 0.1 GB).
pub fn gb(bytes: u64) -> String {
    let g = bytes as f64 / 1e9;
    if g < 0.1 {
        format!("{:.0} MB", bytes as f64 / 1e6)
    } else {
        format!("{g:.2} GB")
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryNeed;

    /// The refusal names the numbers; a need that fits is not refused.
    #[test]
    fn a_refusal_gives_the_numbers() {
        let m = MemoryNeed::to_load(8_200_000_000)
            .refuse(4 << 30, "Qwen3-4B")
            .expect("8.2 GB does not fit 4 GiB");
        for part in [
            "Qwen3-4B needs about 16.45 GB",
            "8.20 GB of weights",
            "8.20 GB more while they are read",
            "50 MB working memory",
            "more than the 4.29 GB",
        ] {
            assert!(m.contains(part), "{part} not in: {m}");
        }
        assert!(MemoryNeed::to_load(253_113_024)
            .refuse(4 << 30, "Gemma")
            .is_none());
    }
}
