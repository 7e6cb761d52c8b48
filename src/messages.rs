//! What the page says when something happens that the visitor did not ask
//! for: a fallback, a failed download, a refused prompt, a crash. Each
//! message is one plain sentence (what happened, what to do) for the
//! visitor — a class reads it on the wall — and the technical detail (the
//! adapter's error, the numbers, the trap) kept apart, shown behind a
//! "Details" disclosure (`views::message`). Plain logic: built and tested
//! natively.

use lens_protocol::ErrorKind;

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// One sentence: what happened and what the visitor can do.
    pub plain: String,
    /// The technical detail, where there is any.
    pub details: Option<String>,
}

impl Message {
    pub fn new(plain: impl Into<String>, details: Option<String>) -> Self {
        let details = details.filter(|d| !d.trim().is_empty());
        Message {
            plain: plain.into(),
            details,
        }
    }

    /// A sentence with nothing behind it.
    pub fn plain(plain: impl Into<String>) -> Self {
        Message::new(plain, None)
    }

    /// A sentence written elsewhere (the worker's notices, a link's note)
    /// whose parenthesised parts are technical: the sentence without them,
    /// and the whole text as the details.
    pub fn from_text(text: &str) -> Self {
        let plain = without_parentheses(text);
        if plain == text.trim() {
            Message::plain(plain)
        } else {
            Message::new(plain, Some(text.to_string()))
        }
    }
}

/// `text` without its parenthesised parts (nested ones too) and the space
/// before each.
fn without_parentheses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => {
                if depth == 0 {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                }
                depth += 1;
            }
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// Auto found no WebGPU adapter (or a software one) and runs on the CPU.
pub fn backend_fallback(reason: &str) -> Message {
    Message::new(
        "This browser offers no graphics card the page can use through WebGPU, so it computes on the \
         processor instead: the results are the same, only slower.",
        Some(format!("WebGPU unavailable: {reason}")),
    )
}

/// The worker refused or failed: a load (`in_run` false) or a job.
pub fn worker_failed(kind: ErrorKind, message: &str, in_run: bool) -> Message {
    let plain = match kind {
        ErrorKind::Network => {
            "The model could not be downloaded: check the connection, then pick the model again."
        }
        ErrorKind::BadModel => {
            "The model's files could not be read: pick another model, or check that the files \
             are complete."
        }
        ErrorKind::Quota => {
            "This browser's storage is full, so the model is not kept for the next visit; it \
             still works now, and clearing stored models makes room."
        }
        ErrorKind::OutOfMemory if in_run => {
            "This prompt needs more memory than this browser can give it: shorten the prompt, or \
             choose f32."
        }
        ErrorKind::OutOfMemory => {
            "This model needs more memory than this browser can give it: pick a smaller model, \
             or open the page on a device with more memory."
        }
        ErrorKind::BadPrompt if message.contains("empty") => {
            "The prompt is empty: type some text, then press Run."
        }
        ErrorKind::BadPrompt if message.contains("at most") => {
            "The prompt is too long for the page: shorten it, then press Run again."
        }
        ErrorKind::BadPrompt => {
            "The model could not read this prompt: change it, then press Run again."
        }
        // "WebGPU (f32)" chosen in a browser without it: the worker says so.
        ErrorKind::Engine if in_run && message.contains("WebGPU is not available") => {
            "This browser offers no graphics card the page can use through WebGPU: choose the \
             CPU backend, then press Run again."
        }
        ErrorKind::Engine if in_run => {
            "The analysis stopped on an error: press Run to try again, and reload the page if it \
             happens again."
        }
        ErrorKind::Engine => {
            "The model could not be loaded: pick it again, and reload the page if it happens again."
        }
    };
    Message::new(plain, Some(message.to_string()))
}

/// The engine's worker died (a trap: out of memory, a panic's
/// `unreachable`), while loading, while computing, or idle.
pub fn crash(trap: &str, loading: bool, running: bool) -> Message {
    let plain = if loading {
        "The engine stopped while loading the model, most likely for lack of memory: pick a \
         smaller model, or close other tabs and pick it again."
    } else if running {
        "The engine stopped while computing, most likely for lack of memory: it is restarting \
         with the model, so try a shorter prompt or f32."
    } else {
        "The engine stopped unexpectedly: it is restarting with the model, so you can run again \
         in a moment."
    };
    Message::new(plain, Some(trap.to_string()))
}

/// The Cancel button: a run or a download stopped.
pub fn cancelled(was_running: bool) -> Message {
    Message::plain(if was_running {
        "Cancelled: the results already shown stay, and the model is reloading from this \
         device's cache."
    } else {
        "Download cancelled: pick a model to load it again."
    })
}

/// A helper worker of the pool died during a run and was replaced.
pub fn helper_replaced(worker: usize, trap: &str) -> Message {
    Message::new(
        "One of the engine's helper workers stopped; it was replaced and its share of the work \
         is being redone, so the run continues.",
        Some(format!("engine worker {worker}: {trap}")),
    )
}

/// The layer list does not name layers of this model.
pub fn bad_layers(max: usize, out_of_range: &[usize]) -> Message {
    Message::new(
        format!("Layers must be numbers from 1 to {max}, separated by commas: correct the list."),
        (!out_of_range.is_empty()).then(|| format!("out of range: {out_of_range:?}")),
    )
}

/// A model id, repository or URL the catalog cannot turn into files.
pub fn bad_model_reference(why: &str) -> Message {
    Message::new(
        "This model cannot be found: pick one from the list, or check the repository name or \
         URL.",
        Some(why.to_string()),
    )
}

/// Saving an export failed.
pub fn export_failed(why: &str) -> Message {
    Message::new(
        "The export could not be saved: try again, or pick another format.",
        Some(why.to_string()),
    )
}

/// Clearing the stored models failed.
pub fn clear_failed(why: &str) -> Message {
    Message::new(
        "The stored models could not be cleared: try again, or clear this site's data in the \
         browser's settings.",
        Some(why.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sentence: a single full stop, at the end (a colon or semicolon
    /// may join its two halves).
    fn one_sentence(m: &Message) {
        let p = m.plain.trim();
        assert!(p.ends_with('.'), "{p}");
        assert_eq!(p.matches(". ").count(), 0, "more than one sentence: {p}");
        assert!(!p.contains('('), "technical detail in the sentence: {p}");
    }

    #[test]
    fn the_fallback_keeps_the_adapters_error_out_of_the_sentence() {
        let reason = "no GPU adapter: No suitable graphics adapter found; noop support not \
                      compiled in, vulkan support not compiled in";
        let m = backend_fallback(reason);
        one_sentence(&m);
        assert!(!m.plain.contains("adapter") && !m.plain.contains("vulkan"));
        assert!(m.plain.contains("processor"));
        assert_eq!(
            m.details.as_deref(),
            Some(format!("WebGPU unavailable: {reason}").as_str())
        );
    }

    #[test]
    fn every_kind_of_failure_says_what_to_do_with_the_workers_text_as_details() {
        let kinds = [
            ErrorKind::Network,
            ErrorKind::BadModel,
            ErrorKind::Quota,
            ErrorKind::OutOfMemory,
            ErrorKind::BadPrompt,
            ErrorKind::Engine,
        ];
        for kind in kinds {
            for in_run in [false, true] {
                let m = worker_failed(kind, "http://127.0.0.1/x.gguf: 404", in_run);
                one_sentence(&m);
                assert!(
                    m.plain.contains(':') || m.plain.contains(';'),
                    "{}",
                    m.plain
                );
                assert_eq!(m.details.as_deref(), Some("http://127.0.0.1/x.gguf: 404"));
            }
        }
    }

    #[test]
    fn webgpu_asked_for_where_there_is_none_points_to_the_cpu() {
        let why = "WebGPU is not available in this browser (no GPU adapter: …); choose the CPU \
                   backend";
        let m = worker_failed(ErrorKind::Engine, why, true);
        one_sentence(&m);
        assert!(m.plain.contains("choose the CPU backend"));
        assert_eq!(m.details.as_deref(), Some(why));
        let other = worker_failed(ErrorKind::Engine, "a stage failed", true);
        assert!(other.plain.starts_with("The analysis stopped"));
    }

    #[test]
    fn a_memory_refusal_names_the_remedy_for_a_model_or_a_prompt() {
        let numbers = "Gemma 3 270M needs about 0.56 GB (0.25 GB of weights), more than the \
                       0.13 GB this browser can give it";
        let load = worker_failed(ErrorKind::OutOfMemory, numbers, false);
        assert!(load.plain.contains("smaller model") && !load.plain.contains("GB"));
        assert_eq!(load.details.as_deref(), Some(numbers));
        let run = worker_failed(ErrorKind::OutOfMemory, numbers, true);
        assert!(run.plain.contains("shorten the prompt"));
    }

    #[test]
    fn a_prompt_is_refused_as_empty_too_long_or_unreadable() {
        let empty = worker_failed(
            ErrorKind::BadPrompt,
            "the prompt is empty: type some text first",
            true,
        );
        assert!(empty.plain.starts_with("The prompt is empty"));
        let long = worker_failed(
            ErrorKind::BadPrompt,
            "the prompt has 900 tokens; the page analyses at most 512",
            true,
        );
        assert!(long.plain.starts_with("The prompt is too long"));
        assert!(long.details.expect("numbers").contains("900 tokens"));
        let odd = worker_failed(ErrorKind::BadPrompt, "tokenizer: bad byte", true);
        assert!(odd
            .plain
            .starts_with("The model could not read this prompt"));
    }

    #[test]
    fn a_crash_says_where_it_happened_and_keeps_the_trap_as_details() {
        let trap = "Uncaught RuntimeError: unreachable";
        for (loading, running) in [(true, false), (false, true), (false, false)] {
            let m = crash(trap, loading, running);
            one_sentence(&m);
            assert!(!m.plain.contains("RuntimeError"));
            assert_eq!(m.details.as_deref(), Some(trap));
        }
        assert!(crash(trap, true, false)
            .plain
            .contains("stopped while loading the model"));
        assert!(crash(trap, false, true).plain.contains("shorter prompt"));
    }

    #[test]
    fn cancels_and_the_pages_own_refusals_are_one_sentence() {
        for m in [
            cancelled(true),
            cancelled(false),
            helper_replaced(1, "RuntimeError: unreachable"),
            bad_layers(18, &[19, 40]),
            bad_layers(18, &[]),
            bad_model_reference("unknown model id `x`"),
            export_failed("canvas"),
            clear_failed("SecurityError"),
        ] {
            one_sentence(&m);
        }
        assert!(cancelled(true).plain.starts_with("Cancelled"));
        assert!(cancelled(false).plain.starts_with("Download cancelled"));
        assert_eq!(bad_layers(18, &[]).details, None);
        assert_eq!(
            bad_layers(18, &[19]).details.as_deref(),
            Some("out of range: [19]")
        );
    }

    #[test]
    fn a_written_sentence_keeps_its_parentheses_as_details() {
        let text = "The graphics device stopped in the middle of the run (device lost: \
                    destroyed (by a test)); the run is being done again on the CPU.";
        let m = Message::from_text(text);
        assert_eq!(
            m.plain,
            "The graphics device stopped in the middle of the run; the run is being done \
             again on the CPU."
        );
        assert_eq!(m.details.as_deref(), Some(text));
        let clean = Message::from_text("Resuming the download from 120 MB.");
        assert_eq!(clean.plain, "Resuming the download from 120 MB.");
        assert_eq!(clean.details, None);
        assert_eq!(Message::new("x.", Some("  ".into())).details, None);
    }
}
