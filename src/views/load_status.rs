//! The model download / preparation status with its progress bar.

use crate::app::MODEL_ID;
use leptos::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub enum Load {
    Fetching { received: u64, total: Option<u64> },
    Parsing { bytes: u64 },
    Ready { bytes: u64, ms: f64 },
    Failed(String),
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[component]
pub fn LoadStatus(load: ReadSignal<Load>) -> impl IntoView {
    let state = move || match load.get() {
        Load::Fetching { .. } => "fetching",
        Load::Parsing { .. } => "parsing",
        Load::Ready { .. } => "ready",
        Load::Failed(_) => "failed",
    };
    // (value, max) of the bar; bytes when the size is known, else 0..1.
    let bar = move || match load.get() {
        Load::Fetching {
            received,
            total: Some(t),
        } => (received as f64, t.max(1) as f64),
        Load::Fetching { .. } | Load::Failed(_) => (0.0, 1.0),
        _ => (1.0, 1.0),
    };
    let label = move || match load.get() {
        Load::Fetching {
            received,
            total: Some(t),
        } => format!(
            "Downloading {MODEL_ID}: {} of {} ({:.0}%)",
            mb(received),
            mb(t),
            100.0 * received as f64 / t.max(1) as f64
        ),
        Load::Fetching {
            received,
            total: None,
        } => format!("Downloading {MODEL_ID}: {}", mb(received)),
        Load::Parsing { bytes } => format!("Preparing {MODEL_ID} ({})…", mb(bytes)),
        Load::Ready { bytes, ms } => {
            format!(
                "{MODEL_ID} ready: {} loaded in {:.1} s",
                mb(bytes),
                ms / 1000.0
            )
        }
        Load::Failed(_) => format!("{MODEL_ID} could not be loaded"),
    };
    let load_ms = move || match load.get() {
        Load::Ready { ms, .. } => Some(format!("{ms:.0}")),
        _ => None,
    };
    let error = move || match load.get() {
        Load::Failed(msg) => {
            Some(view! { <p class="error" role="alert" data-testid="error">{msg}</p> })
        }
        _ => None,
    };
    view! {
        <section class="load" data-state=state>
            <div class="load-label">{label}</div>
            <progress
                data-testid="load-progress"
                data-state=state
                data-ms=load_ms
                prop:value=move || bar().0
                prop:max=move || bar().1
            ></progress>
            {error}
        </section>
    }
}
