//! Singular vectors as words: the top singular pairs of `J_cat` and of the
//! last token's `J_n`, each `u` read through the unembedding and each `v`
//! as the input embeddings nearest it.

use super::format::{sci, shown};
use super::plot::{shown_text, token_chips, tokens_json};
use lens_protocol::report::{DecodeReport, DecodedPair};
use leptos::prelude::*;

/// `σ` as a table cell: plain for ordinary sizes, scientific otherwise.
fn sigma_text(s: f64) -> String {
    if (1e-2..1e4).contains(&s.abs()) {
        format!("{s:.4}")
    } else {
        sci(s)
    }
}

fn pair_row(p: &DecodedPair, which: &'static str, tokens: &[String]) -> impl IntoView {
    let position = (which == "concat").then(|| {
        let tok = tokens.get(p.v_position).cloned();
        let title = match &tok {
            Some(t) => format!(
                "vₖ is largest at position {} (“{}”)",
                p.v_position,
                shown_text(t)
            ),
            None => format!("vₖ is largest at position {}", p.v_position),
        };
        view! {
            <td class="pos-cell" title=title>
                <span class="pos-index">{p.v_position.to_string()}</span>
                {tok.map(|t| view! { <span class="tok">{shown(&t)}</span> })}
            </td>
        }
    });
    view! {
        <tr data-testid="decode-row" data-which=which data-k=p.k data-sigma=format!("{:e}", p.sigma)
            data-u-tokens=tokens_json(&p.u_tokens) data-v-tokens=tokens_json(&p.v_tokens)
            data-v-position=p.v_position>
            <td class="num">{p.k.to_string()}</td>
            <td class="num" title=format!("σ{} = {:e}", p.k, p.sigma)>{sigma_text(p.sigma)}</td>
            <td>{token_chips(&p.u_tokens, "score W_U u")}</td>
            <td>{token_chips(&p.v_tokens, "cosine")}</td>
            {position}
        </tr>
    }
}

fn pair_table(
    pairs: &[DecodedPair],
    which: &'static str,
    tokens: &[String],
    caption: String,
) -> impl IntoView {
    let with_position = which == "concat";
    let rows = pairs
        .iter()
        .map(|p| pair_row(p, which, tokens))
        .collect_view();
    let empty = pairs.is_empty().then(|| {
        view! { <p class="hint">"No singular pairs were decoded."</p> }
    });
    view! {
        <div class="table-wrap">
            <table class="data-table decode-table" data-testid=format!("decode-{which}")>
                <caption>{caption}</caption>
                <thead>
                    <tr>
                        <th scope="col" class="num">"k"</th>
                        <th scope="col" class="num">"σ"</th>
                        <th scope="col">"u → output words"</th>
                        <th scope="col">"v → nearest input embeddings"</th>
                        {with_position.then(|| view! { <th scope="col">"v's position"</th> })}
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
            {empty}
        </div>
    }
}

#[component]
pub fn DecodeView(
    decode: Signal<Option<DecodeReport>>,
    tokens: Signal<Vec<String>>,
    matrix_free: Signal<bool>,
) -> impl IntoView {
    move || {
        let Some(d) = decode.get() else {
            return view! {
                <section class="card placeholder decode-placeholder" data-testid="view-decode" data-state="placeholder">
                    <h2>"Singular vectors as words"</h2>
                    <p class="hint">
                        "Once the singular vectors are in, each one is read as words here: "
                        "output directions through the unembedding, input directions as the nearest "
                        "input embeddings."
                    </p>
                </section>
            }
            .into_any();
        };
        let toks = tokens.get();
        let last = toks.len().checked_sub(1);
        let last_caption = match last.and_then(|i| toks.get(i)) {
            Some(t) => format!(
                "Jₙ, the last token (position {}, “{}”)",
                toks.len() - 1,
                shown_text(t)
            ),
            None => "Jₙ, the last token".to_string(),
        };
        let mf = matrix_free.get();
        let concat_caption = if mf {
            "J_cat = [J₁ … Jₙ], matrix-free (Lanczos) triplets".to_string()
        } else {
            "J_cat = [J₁ … Jₙ]".to_string()
        };
        view! {
            <section class="card" data-testid="view-decode" data-state="ready" data-matrix-free=mf.to_string()>
                <h2>"Singular vectors as words"</h2>
                <p class="caption">
                    "Input along vₖ (an input direction, read as the input embeddings nearest it) "
                    "comes out σₖ times as large along uₖ (an output direction, read as the words "
                    "W_U uₖ scores highest)"
                    {if mf {
                        "; for J_cat these are the matrix-free triplets from block Lanczos, J was never formed."
                    } else {
                        "."
                    }}
                    " Hover a word for its score."
                </p>
                <div class="decode-tables">
                    {pair_table(&d.concat, "concat", &toks, concat_caption)}
                    {pair_table(&d.last_token, "last", &toks, last_caption)}
                </div>
            </section>
        }
        .into_any()
    }
}
