//! Number and token formatting shared by the views.

use leptos::prelude::*;

/// `1.23 × 10⁻¹⁵` for small and large numbers, plain otherwise.
pub fn sci(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let e = x.abs().log10().floor() as i32;
    if (-2..4).contains(&e) {
        return format!("{x:.3}");
    }
    let m = x / 10f64.powi(e);
    let sup: String = e
        .to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            d => "⁰¹²³⁴⁵⁶⁷⁸⁹"
                .chars()
                .nth(d.to_digit(10).unwrap_or(0) as usize)
                .unwrap_or('?'),
        })
        .collect();
    format!("{m:.2} × 10{sup}")
}

pub fn mb(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

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
