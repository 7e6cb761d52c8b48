//! The CLI's transport for the engine's run driver: the Report folded by
//! the driver, progress and notices on stderr (a progress line only when
//! stderr is a terminal, so logs and pipes stay clean).

use lens_engine::analysis::compare::{Comparison, Side};
use lens_engine::analysis::{AnalyzeOptions, Report};
use lens_engine::run::{self, Event, Hooks};
use lens_engine::Model;
use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::Instant;

struct Terminal {
    start: Instant,
    tty: bool,
    /// A progress line is on screen (to be cleared before other output).
    drawn: Cell<bool>,
}

impl Terminal {
    fn clear(&self) {
        if self.drawn.replace(false) {
            eprint!("\r\x1b[2K");
        }
    }
}

impl Hooks for Terminal {
    fn emit(&self, event: Event) {
        if let Some(m) = lens_local::notice(&event) {
            self.clear();
            eprintln!("{m}");
            return;
        }
        match event {
            Event::Progress { stage, done, total } if self.tty => {
                let pct = 100.0 * done as f64 / total.max(1) as f64;
                eprint!("\r\x1b[2K{} {pct:.0}%", stage.label());
                let _ = std::io::stderr().flush();
                self.drawn.set(true);
            }
            Event::Done { .. } => self.clear(),
            _ => {}
        }
    }

    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }
}

fn hooks() -> Rc<dyn Hooks> {
    Rc::new(Terminal {
        start: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        drawn: Cell::new(false),
    })
}

/// The run of `prompt` on `gpu` (else this machine's CPU): its Report.
pub fn run(
    model: &Model,
    prompt: &str,
    opts: &AnalyzeOptions,
    gpu: Option<&lens_gpu::Gpu>,
) -> Result<Report, String> {
    let hooks = hooks();
    let out = lens_local::run(model, prompt, opts, gpu, &hooks);
    hooks.emit(Event::Done { ms: 0.0 });
    out.map(|(report, _)| report).map_err(|e| e.to_string())
}

/// A comparison's two runs on this machine's CPU (`model_b`: none for one
/// model), with their progress, and the comparison.
pub fn compare(
    model: &Model,
    prompt: &str,
    model_b: Option<&Model>,
    prompt_b: &str,
    opts: &AnalyzeOptions,
) -> Result<(Side, Side, Comparison), String> {
    let hooks = hooks();
    let out = run::compare_here(model, prompt, model_b, prompt_b, opts, &hooks);
    hooks.emit(Event::Done { ms: 0.0 });
    out.map_err(|e| e.to_string())
}
