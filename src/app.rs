//! The App: the page state built from the link (or the defaults) and
//! provided as context, the engine worker started, the window listened to,
//! the layout drawn. The rooms: `page` (the shared state), `session` (job
//! queue, replies), `loading` (models), `url_sync` (links, classroom keys),
//! `layout` (what is on screen).

use crate::browser;
use crate::layout::Layout;
use crate::loading::Loadable;
use crate::page::Page;
use crate::worker_client::Engine;
use lens_protocol::catalog::HF_BASE;
use lens_protocol::{AnalysisSpec, Catalog, Reply};
use leptos::prelude::*;
use std::rc::Rc;

const CATALOG_JSON: &str = include_str!("../web/models.json");
const DEFAULT_PROMPT: &str = "The bridge out of Marin is the";

#[component]
pub fn App() -> impl IntoView {
    let catalog = match Catalog::parse(CATALOG_JSON) {
        Ok(c) => c,
        Err(e) => return view! { <p class="error">{e}</p> }.into_any(),
    };
    let hf_base = browser::query_param("hf_base").unwrap_or_else(|| HF_BASE.to_string());
    let defaults = AnalysisSpec::new(&catalog.default, DEFAULT_PROMPT);
    let from_link = AnalysisSpec::from_fragment(&browser::fragment(), &defaults);
    let linked = from_link.is_some();
    let page = Page::new(catalog, hf_base, from_link.unwrap_or(defaults), linked);
    provide_context(page);

    page.loaded
        .set_value(Some(Loadable::Remote(page.spec.get_untracked().model)));
    let on_reply = Rc::new(move |r: Reply, buffer| page.on_lead_reply(r, buffer));
    let on_crash = Rc::new(move |msg: String| page.on_crash(msg));
    page.engine.set_value(Some(Engine::new(on_reply, on_crash)));
    page.listen_to_window();

    view! { <Layout /> }.into_any()
}
