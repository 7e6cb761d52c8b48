//! A message for the visitor (`crate::messages`): its sentence, and its
//! technical detail folded behind "Details" so that a class reads only
//! the sentence on the wall.

use crate::messages::Message;
use leptos::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something failed: announced at once (`role=alert`).
    Error,
    /// Something the visitor should know; nothing failed (`role=status`).
    Notice,
}

#[component]
pub fn MessageBox(message: Message, tone: Tone, testid: &'static str) -> impl IntoView {
    let (class, role) = match tone {
        Tone::Error => ("message error", "alert"),
        Tone::Notice => ("message notice", "status"),
    };
    view! {
        <div class=class role=role data-testid=testid>
            <span class="message-text">{message.plain}</span>
            {message.details.map(|d| view! {
                <details class="message-details">
                    <summary>"Details"</summary>
                    <pre>{d}</pre>
                </details>
            })}
        </div>
    }
}
