//! The App: the page's state built from the link (or the defaults), one
//! context per room, the engine worker started, the window listened to,
//! the layout drawn. The rooms: `url_sync` ([`Link`]: the link state),
//! `loading` ([`Model`]: models), `jobs` ([`Jobs`]: the job queue and
//! Results), `pool` ([`Pool`]: the other workers), `session` ([`Session`]:
//! what the page asks of the workers, their replies routed), `layout`
//! (what is on screen).

use crate::browser;
use crate::compare::Compare;
use crate::jobs::Jobs;
use crate::layout::Layout;
use crate::loading::{Loadable, Model};
use crate::pool::Pool;
use crate::session::Session;
use crate::typing::Typing;
use crate::url_sync::Link;
use crate::worker_client::Engine;
use lens_protocol::catalog::HF_BASE;
use lens_protocol::{AnalysisSpec, Catalog, Reply, Snapshot};
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
    let spec = from_link.unwrap_or(defaults);
    // A comparison link: side A runs first (on A's model), then B.
    let side_a = spec.compare.as_ref();
    let compare = Compare::new(
        side_a
            .and_then(|c| c.snapshot.as_deref())
            .and_then(Snapshot::parse),
        side_a.is_some(),
    );
    let first_model = spec.model_a().to_string();
    let link = Link::new(spec, linked);
    let model = Model::new(catalog, hf_base);
    let (jobs, pool) = (Jobs::new(), Pool::new());
    let typing = Typing::new(link, model, jobs);
    let session = Session::new(link, model, jobs, pool, compare, typing);
    provide_context(link);
    provide_context(compare);
    provide_context(model);
    provide_context(jobs);
    provide_context(pool);
    provide_context(session);
    provide_context(typing);

    model.loaded.set_value(Some(Loadable::Remote(first_model)));
    let on_reply = Rc::new(move |r: Reply, buffer| session.on_reply(r, buffer));
    let on_crash = Rc::new(move |msg: String| session.on_crash(msg));
    model
        .engine
        .set_value(Some(Engine::new(on_reply, on_crash)));
    session.listen_to_window();

    view! { <Layout /> }.into_any()
}
