//! Token formatting shared by the views (numbers: `crate::numbers`).

pub use crate::numbers::{mb, sci};
use leptos::prelude::*;

/// A token as text, its spaces and newlines shown as faint marks.
pub fn shown(token: &str) -> AnyView {
    if token.is_empty() {
        return view! { <span class="mark">"∅"</span> }.into_any();
    }
    token
        .chars()
        .map(|c| match c {
            ' ' => view! { <span class="mark">"␣"</span> }.into_any(),
            '\n' => view! { <span class="mark">"⏎"</span> }.into_any(),
            c => c.to_string().into_any(),
        })
        .collect_view()
        .into_any()
}
