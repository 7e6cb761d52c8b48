//! A plot's numbers as a table, folded behind "The numbers" under the
//! plot: what a screen reader reads (and a visitor copies) instead of the
//! picture.

use leptos::prelude::*;

#[component]
pub fn NumbersTable(
    /// What the table holds (its caption).
    caption: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
) -> impl IntoView {
    view! {
        <details class="numbers" data-testid="numbers-table">
            <summary>"The numbers as a table"</summary>
            <div class="table-wrap">
                <table class="data-table">
                    <caption>{caption}</caption>
                    <thead><tr>{head.into_iter().map(|h| view! { <th scope="col">{h}</th> }).collect_view()}</tr></thead>
                    <tbody>
                        {rows.into_iter().map(|r| view! {
                            <tr>{r.into_iter().map(|c| view! { <td>{c}</td> }).collect_view()}</tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </details>
    }
}
