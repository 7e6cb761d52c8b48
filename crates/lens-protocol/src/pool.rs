//! The page's pool of engine workers forming one detached Jacobian
//! together: how many workers the visitor's machine allows, `J`'s rows cut
//! into chunks, which worker holds which chunk, a lost chunk handed out
//! again, and the chunks' values assembled into `J`'s bytes. Plain logic:
//! the page runs it in the browser, the native tests drive a run through it.
//!
//! Row `r` of `J` is one cotangent row of the transpose pass, so the rows
//! are independent: any worker holding the model and the prompt's frozen
//! forward computes any chunk, and the assembled `J` equals a single
//! worker's (to the last bits that the products' blocking changes).

use std::collections::VecDeque;

/// Never more workers than this, however many cores.
pub const MAX_WORKERS: usize = 8;
/// What one worker needs beside the model's own bytes: the transpose pass's
/// working memory (`PassOptions`' 256 MiB), the frozen forward, its rows.
pub const WORKER_OVERHEAD_BYTES: u64 = 384 << 20;
/// The device memory assumed where the browser does not say
/// (`navigator.deviceMemory` exists in Chromium only, and caps at 8 GB).
pub const ASSUMED_DEVICE_GB: f64 = 4.0;
/// The most memory one wasm32 worker can address.
pub const WASM32_BYTES: u64 = 4 << 30;

/// The memory the page's engine workers may take together: half the
/// device's, as far as the browser says.
fn budget_bytes(device_gb: Option<f64>) -> u64 {
    let gb = device_gb
        .filter(|g| g.is_finite() && *g > 0.0)
        .unwrap_or(ASSUMED_DEVICE_GB);
    (gb * 0.5 * (1u64 << 30) as f64) as u64
}

/// What one engine worker may use: the budget, and never more than wasm32
/// addresses. A model or a run estimated above it is refused before
/// anything is allocated for it.
pub fn worker_limit(device_gb: Option<f64>) -> u64 {
    budget_bytes(device_gb).min(WASM32_BYTES)
}

/// One share of rows per worker. Smaller chunks balance better but cost
/// more: each chunk is a transpose pass of its own, and below about
/// `d·ffn / (2·ffn − d)` rows (380 on Gemma 3 270M) a pass can no longer
/// compose each position's MLP map once for all rows, so a row costs about
/// 1.35× more (measured on the page, 2 workers: two chunks each put
/// Gemma's 8-token J on screen after 34.8 s, one each after 33.4 s).
pub const CHUNKS_PER_WORKER: usize = 1;
/// A chunk lost this many times ends the run.
pub const MAX_TRIES: u32 = 2;

/// How many engine workers the page starts, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSize {
    pub workers: usize,
    /// `navigator.hardwareConcurrency`.
    pub cores: usize,
    /// The memory the pool may take: half the device's.
    pub budget_bytes: u64,
    /// Workers that the budget allows for this model.
    pub fit: usize,
}

impl PoolSize {
    /// One worker per core, as many as the memory budget holds (each keeps
    /// its own copy of the model's bytes), at least one, at most
    /// [`MAX_WORKERS`].
    pub fn choose(cores: Option<usize>, device_gb: Option<f64>, model_bytes: u64) -> Self {
        let cores = cores.unwrap_or(1).max(1);
        let budget_bytes = budget_bytes(device_gb);
        let per = model_bytes.saturating_add(WORKER_OVERHEAD_BYTES).max(1);
        let fit = (budget_bytes / per) as usize;
        PoolSize {
            workers: cores.min(fit).clamp(1, MAX_WORKERS),
            cores,
            budget_bytes,
            fit,
        }
    }

    /// One sentence for the page's engine details.
    pub fn describe(&self) -> String {
        format!(
            "{} engine worker{} ({} core{}; a memory budget of {:.1} GB holds {} cop{} of this model)",
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.cores,
            if self.cores == 1 { "" } else { "s" },
            self.budget_bytes as f64 / (1u64 << 30) as f64,
            self.fit,
            if self.fit == 1 { "y" } else { "ies" },
        )
    }
}

/// Rows `start .. start + count` of `J`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub start: usize,
    pub count: usize,
}

/// One `J` being formed by the pool: `[n, rows, width]` values of `elem`
/// bytes each, position-major as the transpose pass writes them.
#[derive(Debug)]
pub struct Assembly {
    pub job: u32,
    n: usize,
    rows: usize,
    width: usize,
    elem: usize,
    bytes: Vec<u8>,
    pending: VecDeque<(Chunk, u32)>,
    /// (worker, chunk, tries so far, its pass's progress 0..=1)
    inflight: Vec<(usize, Chunk, u32, f64)>,
    done_rows: usize,
}

impl Assembly {
    /// `rows` cut into about [`CHUNKS_PER_WORKER`] chunks per worker.
    pub fn new(job: u32, n: usize, rows: usize, width: usize, elem: usize, workers: usize) -> Self {
        let parts = (workers.max(1) * CHUNKS_PER_WORKER).min(rows.max(1));
        let size = rows.div_ceil(parts).max(1);
        let pending = (0..rows)
            .step_by(size)
            .map(|start| {
                (
                    Chunk {
                        start,
                        count: size.min(rows - start),
                    },
                    0,
                )
            })
            .collect();
        Assembly {
            job,
            n,
            rows,
            width,
            elem,
            bytes: vec![0; n * rows * width * elem],
            pending,
            inflight: Vec::new(),
            done_rows: 0,
        }
    }

    /// The next chunk for a free `worker`, now counted as its.
    pub fn next_for(&mut self, worker: usize) -> Option<Chunk> {
        if self.holds(worker) {
            return None;
        }
        let (chunk, tries) = self.pending.pop_front()?;
        self.inflight.push((worker, chunk, tries, 0.0));
        Some(chunk)
    }

    /// Whether `worker` is computing a chunk of this `J`.
    pub fn holds(&self, worker: usize) -> bool {
        self.inflight.iter().any(|f| f.0 == worker)
    }

    /// The chunk's values (`[n, count, width]`) from `worker`, put in place.
    pub fn deliver(&mut self, worker: usize, chunk: Chunk, values: &[u8]) -> Result<(), String> {
        let Some(k) = self
            .inflight
            .iter()
            .position(|f| f.0 == worker && f.1 == chunk)
        else {
            return Err(format!(
                "rows {}..{} came from a worker that was not computing them",
                chunk.start,
                chunk.start + chunk.count
            ));
        };
        let want = self.n * chunk.count * self.width * self.elem;
        if values.len() != want {
            return Err(format!(
                "rows {}..{} came with {} bytes, expected {want}",
                chunk.start,
                chunk.start + chunk.count,
                values.len()
            ));
        }
        self.inflight.swap_remove(k);
        let row = self.width * self.elem;
        let span = chunk.count * row;
        for i in 0..self.n {
            let to = (i * self.rows + chunk.start) * row;
            self.bytes[to..to + span].copy_from_slice(&values[i * span..(i + 1) * span]);
        }
        self.done_rows += chunk.count;
        Ok(())
    }

    /// `worker` died or failed: its chunk goes back to the front of the
    /// queue, or, lost [`MAX_TRIES`] times, ends the run with the reason.
    pub fn lost(&mut self, worker: usize, why: &str) -> Result<(), String> {
        let Some(k) = self.inflight.iter().position(|f| f.0 == worker) else {
            return Ok(());
        };
        let (_, chunk, tries, _) = self.inflight.swap_remove(k);
        if tries + 1 >= MAX_TRIES {
            return Err(format!(
                "rows {}..{} of the Jacobian failed {} times ({why})",
                chunk.start,
                chunk.start + chunk.count,
                tries + 1
            ));
        }
        self.pending.push_front((chunk, tries + 1));
        Ok(())
    }

    /// The progress of `worker`'s pass on its chunk.
    pub fn progress_of(&mut self, worker: usize, done: usize, total: usize) {
        if let Some(f) = self.inflight.iter_mut().find(|f| f.0 == worker) {
            f.3 = done as f64 / total.max(1) as f64;
        }
    }

    /// Rows done, counting the chunks in flight by their passes' progress,
    /// out of all rows: the progress bar summed across workers.
    pub fn progress(&self) -> (usize, usize) {
        let partial: f64 = self.inflight.iter().map(|f| f.1.count as f64 * f.3).sum();
        (self.done_rows + partial as usize, self.rows)
    }

    pub fn is_complete(&self) -> bool {
        self.done_rows == self.rows
    }

    /// `J`'s bytes once every chunk is in.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        self.is_complete().then_some(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_follows_cores_and_memory() {
        let gemma = 253_113_024;
        let p = PoolSize::choose(Some(2), Some(8.0), gemma);
        assert_eq!((p.workers, p.fit), (2, 6));
        // Sixteen cores, but 8 GB of device memory: six copies fit.
        assert_eq!(PoolSize::choose(Some(16), Some(8.0), gemma).workers, 6);
        // A browser that says nothing: one core, 4 GB assumed.
        let quiet = PoolSize::choose(None, None, gemma);
        assert_eq!((quiet.workers, quiet.budget_bytes), (1, 2 << 30));
        // A model larger than the budget still gets one worker.
        assert_eq!(PoolSize::choose(Some(4), Some(2.0), 3 << 30).workers, 1);
        assert_eq!(
            PoolSize::choose(Some(64), Some(1e6), 1).workers,
            MAX_WORKERS
        );
        assert!(p.describe().starts_with("2 engine workers (2 cores"));
    }

    /// Values of row `r` at position `i`, column `c`, as one byte each.
    fn chunk_values(n: usize, c: Chunk, width: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            for r in c.start..c.start + c.count {
                for col in 0..width {
                    v.push((i * 100 + r * 10 + col) as u8);
                }
            }
        }
        v
    }

    #[test]
    fn chunks_land_in_place_whoever_computes_them() {
        let (n, rows, width) = (3, 10, 2);
        let mut a = Assembly::new(1, n, rows, width, 1, 3);
        let mut handed = Vec::new();
        while let Some(c) = a.next_for(handed.len() % 3) {
            handed.push(c);
            if handed.len() % 3 == 0 {
                break;
            }
        }
        // Three workers hold a chunk each; none gets a second meanwhile.
        assert_eq!(handed.len(), 3);
        assert!(a.next_for(0).is_none());
        // Worker 1 dies; its chunk is redone by worker 0 after its own.
        a.deliver(0, handed[0], &chunk_values(n, handed[0], width))
            .unwrap();
        a.lost(1, "crashed").unwrap();
        let redo = a.next_for(0).unwrap();
        assert_eq!(redo, handed[1]);
        a.progress_of(2, 1, 2);
        let (done, all) = a.progress();
        assert_eq!(all, rows);
        assert_eq!(done, handed[0].count + handed[2].count / 2);
        for (w, c) in [(0, redo), (2, handed[2])] {
            a.deliver(w, c, &chunk_values(n, c, width)).unwrap();
        }
        while let Some(c) = a.next_for(5) {
            a.deliver(5, c, &chunk_values(n, c, width)).unwrap();
        }
        let whole = chunk_values(
            n,
            Chunk {
                start: 0,
                count: rows,
            },
            width,
        );
        assert_eq!(a.into_bytes().unwrap(), whole);
    }

    #[test]
    fn wrong_or_repeatedly_lost_chunks_are_refused() {
        let mut a = Assembly::new(1, 2, 4, 3, 8, 2);
        let c = a.next_for(0).unwrap();
        assert_eq!(c, Chunk { start: 0, count: 2 });
        assert!(a
            .deliver(0, c, &[0; 5])
            .unwrap_err()
            .contains("expected 96"));
        assert!(a.deliver(1, c, &[0; 96]).is_err());
        a.lost(0, "out of memory").unwrap();
        assert_eq!(a.next_for(1), Some(c));
        let e = a.lost(1, "out of memory").unwrap_err();
        assert!(e.contains("rows 0..2") && e.contains("2 times"), "{e}");
        assert!(!a.is_complete());
    }
}
