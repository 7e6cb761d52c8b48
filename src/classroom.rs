//! Classroom mode: presets, large type, and a walkthrough a teacher clicks
//! (or arrows) through, each step with its own picture and a sentence or two.

use crate::views::format::shown;
use lens_protocol::report::TokenRow;
use lens_protocol::View;
use leptos::prelude::*;

/// Prompts a teacher can pick; the first is the paper's.
pub const PRESETS: [&str; 6] = [
    "The bridge out of Marin is the",
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "I went to new york to see the",
    "The opposite of hot is",
    "Water freezes at zero degrees",
];

/// Pairs of prompts one word apart (A, B) for the comparison step. On
/// Gemma 3 270M in f64: France → Italy lowers " the" by 1.25, Marin →
/// Oakland raises " only" by 1.05, hot → up flips the prediction (" cold"
/// → " down", −12.9); in each the first token's share (`<bos>`, where
/// attention rests) moves more than the changed word's: the reveal a class
/// does not expect.
pub const COMPARE_PRESETS: [(&str, &str); 3] = [
    ("The capital of France is", "The capital of Italy is"),
    (
        "The bridge out of Marin is the",
        "The bridge out of Oakland is the",
    ),
    ("The opposite of hot is", "The opposite of up is"),
];

pub struct Step {
    pub title: &'static str,
    pub text: &'static str,
    /// The view that draws the step's picture (`None`: the embedding bars).
    pub view: Option<View>,
}

pub const STEPS: [Step; 10] = [
    Step {
        title: "Tokenize",
        text: "The prompt is cut into tokens. Each token becomes one input vector; the model \
               reads them all and predicts the next token.",
        view: Some(View::Tokens),
    },
    Step {
        title: "Embed",
        text: "Each token is looked up in the embedding table: xᵢ, a list of d numbers. The \
               bars show how long each xᵢ is.",
        view: None,
    },
    Step {
        title: "Freeze",
        text: "Run the model once and freeze everything that depends on the input: the norm \
               scales, the gate activations and the attention weights (shown here). What \
               remains is a linear function of the xᵢ.",
        view: Some(View::Attention),
    },
    Step {
        title: "Jacobian",
        text: "The frozen network's Jacobian Jᵢ = ∂y/∂xᵢ is one d × d matrix per token. This \
               is the last token's: blue and orange are positive and negative entries.",
        view: Some(View::Heatmap),
    },
    Step {
        title: "Reconstruct",
        text: "Σᵢ Jᵢ xᵢ rebuilds the model's output y to rounding error: the linear map is \
               exact for this prompt. The ordinary Jacobian, with nothing frozen, is far off.",
        view: Some(View::Exactness),
    },
    Step {
        title: "SVD",
        text: "The singular values of [J₁ … Jₙ] fall fast: the map acts through a few \
               directions. The stable rank counts them.",
        view: Some(View::Spectrum),
    },
    Step {
        title: "Decode",
        text: "Each direction reads as words: the output side uᵢ through the unembedding, the \
               input side vᵢ as the nearest token embeddings.",
        view: Some(View::Decode),
    },
    Step {
        title: "Layers",
        text: "The same map, cut after each layer, shows where the prediction forms: the \
               stable rank per layer, and the words each layer's top direction reads as.",
        view: Some(View::Layers),
    },
    Step {
        title: "Steer",
        text: "One prompt's linear map, added to another text's hidden state while it \
               writes, steers what it says.",
        view: Some(View::Steering),
    },
    Step {
        title: "Change one word",
        text: "Pin a prompt as A, change one word and run it as B. Before the reveal: which                token's share of the prediction will move most? Each bar is one token's exact                change; together they add up to the logit's change.",
        view: Some(View::Compare),
    },
];

/// The classroom's controls on one line: the model, the prompt preset,
/// Run, the model's status, and the way back to the full page.
#[component]
#[allow(clippy::too_many_arguments)] // one line of controls, each with its own input
pub fn ClassroomBar(
    /// The catalog's models: id and name.
    models: Vec<(String, String)>,
    current: Signal<String>,
    on_pick: Callback<String>,
    prompt: Signal<String>,
    on_preset: Callback<String>,
    on_run: Callback<()>,
    can_run: Signal<bool>,
    status: Signal<String>,
    on_exit: Callback<()>,
) -> impl IntoView {
    let known: Vec<String> = models.iter().map(|(id, _)| id.clone()).collect();
    view! {
        <header class="classroom-bar" data-testid="classroom-bar">
            <span class="classroom-title">"Linear Lens"</span>
            <select data-testid="model-select" aria-label="model"
                prop:value=move || current.get()
                on:change=move |ev| on_pick.run(event_target_value(&ev))>
                {models.into_iter().map(|(id, name)| {
                    let is = id.clone();
                    view! { <option value=id selected=move || current.get() == is>{name}</option> }
                }).collect_view()}
                {move || (!known.contains(&current.get())).then(|| view! {
                    <option value=current.get() selected=true>{current.get()}</option>
                })}
            </select>
            <select data-testid="classroom-preset" aria-label="prompt"
                prop:value=move || prompt.get()
                on:change=move |ev| on_preset.run(event_target_value(&ev))>
                {PRESETS.iter().map(|p| view! {
                    <option value=*p selected=move || prompt.get() == *p>{*p}</option>
                }).collect_view()}
                {move || (!PRESETS.contains(&prompt.get().as_str())).then(|| view! {
                    <option value=prompt.get() selected=true>{prompt.get()}</option>
                })}
            </select>
            <button type="button" class="primary" data-testid="run-button"
                disabled=move || !can_run.get() on:click=move |_| on_run.run(())>"Run"</button>
            <span class="classroom-status" data-testid="model-status">{move || status.get()}</span>
            <button type="button" class="secondary classroom-toggle" data-testid="classroom-toggle"
                aria-pressed="true" on:click=move |_| on_exit.run(())>"Full page"</button>
        </header>
    }
}

/// The step bar: step names, the current step's text, previous / next.
#[component]
pub fn ClassroomNav(step: Signal<usize>, on_step: Callback<usize>) -> impl IntoView {
    let last = STEPS.len() - 1;
    view! {
        <section class="card classroom-nav" data-testid="classroom" aria-label="classroom walkthrough">
            <ol class="steps" role="list">
                {STEPS.iter().enumerate().map(|(i, s)| view! {
                    <li>
                        <button type="button" class="step" data-testid=format!("classroom-step-{i}")
                            aria-current=move || (step.get() == i).then_some("step")
                            on:click=move |_| on_step.run(i)>
                            {format!("{}. {}", i + 1, s.title)}
                        </button>
                    </li>
                }).collect_view()}
            </ol>
            <div class="classroom-body" data-testid="classroom-step" data-step=move || step.get().to_string()
                aria-live="polite">
                <h2>{move || format!("Step {} of {}: {}", step.get() + 1, STEPS.len(), STEPS[step.get().min(last)].title)}</h2>
                <p class="lead">{move || STEPS[step.get().min(last)].text}</p>
            </div>
            <div class="classroom-buttons">
                <button type="button" class="secondary" data-testid="classroom-prev"
                    disabled=move || step.get() == 0
                    on:click=move |_| on_step.run(step.get_untracked().saturating_sub(1))>"← Previous"</button>
                <button type="button" data-testid="classroom-next"
                    disabled=move || { step.get() >= last }
                    on:click=move |_| on_step.run((step.get_untracked() + 1).min(last))>"Next →"</button>
                <span class="hint">"Keys: ← and → move between steps."</span>
            </div>
        </section>
    }
}

/// The "embed" step's picture: one bar per token, `‖xᵢ‖`.
#[component]
pub fn EmbeddingBars(rows: Signal<Option<Vec<TokenRow>>>) -> impl IntoView {
    move || {
        let Some(rows) = rows.get() else {
            return view! { <p class="hint placeholder">"Run the prompt to see its embeddings."</p> }.into_any();
        };
        let max = rows
            .iter()
            .map(|r| r.embedding_norm)
            .fold(0.0, f64::max)
            .max(1e-300);
        view! {
            <section class="card" data-testid="view-embed">
                <h2>"Input embeddings xᵢ"</h2>
                <div class="bars">
                    {rows.into_iter().enumerate().map(|(i, r)| view! {
                        <div class="bar-row" data-index=i data-value=format!("{:e}", r.embedding_norm)>
                            <span class="bar-token">{shown(&r.token)}</span>
                            <span class="bar" style=format!("width: {:.1}%", 100.0 * r.embedding_norm / max)></span>
                            <span class="bar-value">{format!("‖x{}‖ = {:.3}", i, r.embedding_norm)}</span>
                        </div>
                    }).collect_view()}
                </div>
            </section>
        }
        .into_any()
    }
}
