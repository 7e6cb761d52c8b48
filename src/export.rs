//! Exports: the Report as JSON, the numbers of the view in focus as CSV,
//! and the view's plot as SVG or PNG, saved as files by the browser.

use crate::browser::js_error;
use crate::layout::view_title;
use crate::run_state::Results;
use lens_protocol::report::{Columns, Heatmap, Report};
use lens_protocol::View;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The page's stylesheet, embedded in exported SVGs so that they look as
/// they do on the page.
const STYLE: &str = include_str!("../web/style.css");

/// One CSV field, quoted when it needs to be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with([' ', '=', '+', '-', '@']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn row(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

fn num(x: f64) -> String {
    format!("{x:e}")
}

fn opt(x: Option<f64>) -> String {
    x.map(num).unwrap_or_default()
}

/// The CSV of `view`'s numbers; `None` when the view has none yet.
pub fn csv(view: View, report: &Report, inspect: Option<&(Heatmap, Columns)>) -> Option<String> {
    let mut out = String::new();
    let mut put = |f: Vec<String>| out.push_str(&row(&f));
    let s = |x: &str| x.to_string();
    match view {
        View::Prediction => {
            put(vec![s("rank"), s("id"), s("token"), s("logit"), s("prob")]);
            for (k, t) in report.top.iter().enumerate() {
                put(vec![
                    (k + 1).to_string(),
                    t.id.to_string(),
                    t.token.clone(),
                    num(t.logit),
                    num(t.prob),
                ]);
            }
        }
        View::Exactness => {
            put(vec![s("reconstruction"), s("rel_error")]);
            let r = &report.reconstruction;
            put(vec![s("detached"), opt(r.detached_rel_error)]);
            put(vec![s("ordinary"), opt(r.ordinary_rel_error)]);
            put(vec![s("contributions"), num(r.contributions_rel_error)]);
        }
        View::Tokens => {
            put(vec![
                s("position"),
                s("token"),
                s("attribution"),
                s("embedding_norm"),
                s("contribution_norm"),
                s("projection_on_y"),
                s("jacobian_fro_norm"),
            ]);
            for (i, t) in report.per_token.iter().enumerate() {
                put(vec![
                    i.to_string(),
                    t.token.clone(),
                    opt(report.attribution.per_token.get(i).copied()),
                    num(t.embedding_norm),
                    num(t.contribution_norm),
                    num(t.projection_on_y),
                    opt(t.jacobian_fro_norm),
                ]);
            }
        }
        View::Spectrum => {
            let svd = report.svd.as_ref();
            let mf = report.matrix_free.as_ref();
            let concat: Vec<f64> = match (svd, mf) {
                (Some(s), _) => s.concat.singular_values.clone(),
                (None, Some(m)) => m.singular_values.clone(),
                _ => return None,
            };
            let mut head = vec![s("k"), s("sigma_J_cat")];
            let per: Vec<&Vec<f64>> = svd
                .map(|s| s.per_token.iter().map(|p| &p.singular_values).collect())
                .unwrap_or_default();
            head.extend((0..per.len()).map(|i| format!("sigma_J_{i}")));
            put(head);
            for (k, c) in concat.iter().enumerate() {
                let mut f = vec![(k + 1).to_string(), num(*c)];
                f.extend(
                    per.iter()
                        .map(|p| p.get(k).map(|v| num(*v)).unwrap_or_default()),
                );
                put(f);
            }
            if let Some(s) = svd {
                let mut f = vec![s_("stable_rank"), num(s.concat.stable_rank)];
                f.extend(s.per_token.iter().map(|p| num(p.stable_rank)));
                put(f);
            }
        }
        View::Decode => {
            let d = report.decode.as_ref()?;
            put(vec![
                s("of"),
                s("k"),
                s("sigma"),
                s("u_tokens"),
                s("v_tokens"),
                s("v_position"),
            ]);
            for (of, pairs) in [("J_cat", &d.concat), ("J_last", &d.last_token)] {
                for p in pairs {
                    let words = |t: &[lens_protocol::report::TokenScore]| {
                        t.iter()
                            .map(|t| t.token.clone())
                            .collect::<Vec<_>>()
                            .join("|")
                    };
                    put(vec![
                        s(of),
                        p.k.to_string(),
                        num(p.sigma),
                        words(&p.u_tokens),
                        words(&p.v_tokens),
                        p.v_position.to_string(),
                    ]);
                }
            }
        }
        View::Layers => {
            if report.layers.is_empty() {
                return None;
            }
            put(vec![
                s("layer"),
                s("kind"),
                s("mode"),
                s("stable_rank"),
                s("sigma_1"),
                s("rel_error"),
                s("u1_top_token"),
                s("logit_lens_top_token"),
            ]);
            for r in &report.layers {
                put(vec![
                    r.layer.to_string(),
                    s(r.kind.name()),
                    r.mode.clone(),
                    num(r.stable_rank),
                    opt(r.singular_values.first().copied()),
                    num(r.rel_error),
                    r.u_tokens
                        .first()
                        .and_then(|t| t.first())
                        .map(|t| t.token.clone())
                        .unwrap_or_default(),
                    r.logit_lens_tokens
                        .first()
                        .map(|t| t.token.clone())
                        .unwrap_or_default(),
                ]);
            }
        }
        View::Path => {
            if report.path.is_empty() {
                return None;
            }
            put(vec![s("layer"), s("x"), s("y"), s("label")]);
            for p in &report.path {
                put(vec![
                    p.layer.to_string(),
                    num(p.x),
                    num(p.y),
                    p.label.clone(),
                ]);
            }
        }
        View::Attention => {
            let att = report.attention.as_ref()?;
            put(vec![s("layer"), s("head"), s("query"), s("key"), s("p")]);
            for (l, heads) in att.iter().enumerate() {
                for (h, rows) in heads.iter().enumerate() {
                    for (q, keys) in rows.iter().enumerate() {
                        for (k, p) in keys.iter().enumerate().take(q + 1) {
                            put(vec![
                                (l + 1).to_string(),
                                h.to_string(),
                                q.to_string(),
                                k.to_string(),
                                num(*p),
                            ]);
                        }
                    }
                }
            }
        }
        View::Heatmap => {
            let (h, c) = inspect?;
            put(vec![
                s("kind"),
                s("position"),
                s("row"),
                s("col"),
                s("value"),
                s("tokens"),
            ]);
            for r in 0..h.rows {
                for col in 0..h.cols {
                    put(vec![
                        s("cell"),
                        h.position.to_string(),
                        r.to_string(),
                        col.to_string(),
                        num(h.values[r * h.cols + col]),
                        String::new(),
                    ]);
                }
            }
            for (kind, lines) in [("column", &c.columns), ("row", &c.rows)] {
                for l in lines {
                    let words = l
                        .tokens
                        .iter()
                        .map(|t| t.token.clone())
                        .collect::<Vec<_>>()
                        .join("|");
                    put(vec![
                        s(kind),
                        c.position.to_string(),
                        l.index.to_string(),
                        String::new(),
                        num(l.norm),
                        words,
                    ]);
                }
            }
        }
        View::Steering => {
            let st = report.steering.as_ref()?;
            put(vec![
                s("source"),
                s("layer"),
                s("lambda"),
                s("steered"),
                s("unsteered"),
                s("source_token"),
                s("p_steered"),
                s("p_unsteered"),
            ]);
            put(vec![
                st.source.clone(),
                st.layer.to_string(),
                num(st.lambda),
                st.steered.clone(),
                st.unsteered.clone(),
                st.source_token.clone(),
                num(st.source_token_prob_steered),
                num(st.source_token_prob_unsteered),
            ]);
        }
    }
    Some(out)
}

fn s_(x: &str) -> String {
    x.to_string()
}

/// Saves `bytes` as a file named `name`.
pub fn save(name: &str, mime: &str, parts: &js_sys::Array) -> Result<(), String> {
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(parts, &opts)
        .or_else(|_| web_sys::Blob::new_with_str_sequence_and_options(parts, &opts))
        .map_err(js_error)?;
    save_blob(name, &blob)
}

fn save_blob(name: &str, blob: &web_sys::Blob) -> Result<(), String> {
    let url = web_sys::Url::create_object_url_with_blob(blob).map_err(js_error)?;
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = doc
        .create_element("a")
        .map_err(js_error)?
        .dyn_into()
        .map_err(|_| "not an anchor".to_string())?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // Let the download start before the URL goes.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    if let Some(w) = web_sys::window() {
        let _ =
            w.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 5000);
    }
    Ok(())
}

/// Saves a text file.
pub fn save_text(name: &str, mime: &str, text: &str) -> Result<(), String> {
    save(name, mime, &js_sys::Array::of1(&JsValue::from_str(text)))
}

/// The first plot (`svg`) inside the element with id `slot`, as a standalone
/// SVG document with the page's styles and a white background.
pub fn svg_of(slot: &str) -> Result<(String, f64, f64), String> {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let el = doc
        .query_selector(&format!("#{slot} svg"))
        .map_err(js_error)?
        .ok_or("this view has no plot to export yet")?;
    let clone: web_sys::Element = el
        .clone_node_with_deep(true)
        .map_err(js_error)?
        .dyn_into()
        .map_err(|_| "not an element".to_string())?;
    let rect = el.get_bounding_client_rect();
    let (w, h) = (rect.width().max(1.0), rect.height().max(1.0));
    clone
        .set_attribute("xmlns", "http://www.w3.org/2000/svg")
        .map_err(js_error)?;
    clone
        .set_attribute("width", &format!("{w:.0}"))
        .map_err(js_error)?;
    clone
        .set_attribute("height", &format!("{h:.0}"))
        .map_err(js_error)?;
    let style = doc
        .create_element_ns(Some("http://www.w3.org/2000/svg"), "style")
        .map_err(js_error)?;
    style.set_text_content(Some(&format!(
        "svg {{ background: #fff; font-family: system-ui, sans-serif; }}\n{STYLE}"
    )));
    clone
        .insert_before(&style, clone.first_child().as_ref())
        .map_err(js_error)?;
    let xml = web_sys::XmlSerializer::new()
        .map_err(js_error)?
        .serialize_to_string(&clone)
        .map_err(js_error)?;
    Ok((
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{xml}"),
        w,
        h,
    ))
}

/// Draws an SVG document onto a canvas at twice its size and saves it as PNG.
pub async fn save_png(name: &str, svg: &str, w: f64, h: f64) -> Result<(), String> {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("image/svg+xml");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(
        &js_sys::Array::of1(&JsValue::from_str(svg)),
        &opts,
    )
    .map_err(js_error)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js_error)?;
    let img = web_sys::HtmlImageElement::new().map_err(js_error)?;
    img.set_src(&url);
    JsFuture::from(img.decode())
        .await
        .map_err(|e| format!("the plot could not be drawn: {}", js_error(e)))?;
    let _ = web_sys::Url::revoke_object_url(&url);
    let scale = 2.0;
    let canvas: web_sys::HtmlCanvasElement = doc
        .create_element("canvas")
        .map_err(js_error)?
        .dyn_into()
        .map_err(|_| "not a canvas".to_string())?;
    canvas.set_width((w * scale) as u32);
    canvas.set_height((h * scale) as u32);
    let ctx: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(js_error)?
        .ok_or("no 2d context")?
        .dyn_into()
        .map_err(|_| "not a 2d context".to_string())?;
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, w * scale, h * scale);
    ctx.draw_image_with_html_image_element_and_dw_and_dh(&img, 0.0, 0.0, w * scale, h * scale)
        .map_err(js_error)?;
    let data_url = canvas
        .to_data_url_with_type("image/png")
        .map_err(js_error)?;
    let b64 = data_url.split_once(',').map(|x| x.1).ok_or("no PNG data")?;
    let bin = web_sys::window()
        .ok_or("no window")?
        .atob(b64)
        .map_err(js_error)?;
    let bytes: Vec<u8> = bin.chars().map(|c| c as u32 as u8).collect();
    let arr = js_sys::Uint8Array::from(bytes.as_slice());
    save(name, "image/png", &js_sys::Array::of1(&arr))
}

/// The export buttons: they save what `results` holds for `view`; failures
/// go to `on_error` as a sentence.
#[component]
pub fn ExportBar(
    results: RwSignal<Results>,
    view: Signal<View>,
    on_error: Callback<String>,
) -> impl IntoView {
    let report_error = move |r: Result<(), String>| {
        if let Err(e) = r {
            on_error.run(format!("Export failed: {e}"));
        }
    };
    let has = move || results.with(|r| r.report.is_some());
    view! {
        <div class="exports" role="group" aria-label="export">
            <span class="exports-label">"Export:"</span>
            <button type="button" class="secondary" data-testid="export-json" disabled=move || !has()
                on:click=move |_| {
                    let json = results.with_untracked(|r| {
                        r.report.as_ref().map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
                    });
                    if let Some(json) = json {
                        report_error(save_text("linear-lens-report.json", "application/json", &json));
                    }
                }>"Report (JSON)"</button>
            <button type="button" class="secondary" data-testid="export-csv" disabled=move || !has()
                on:click=move |_| {
                    let v = view.get_untracked();
                    let out = results.with_untracked(|r| {
                        r.report.as_ref().map(|rep| csv(v, rep, r.inspect.as_ref()))
                    });
                    match out {
                        Some(Some(text)) => report_error(save_text(
                            &format!("linear-lens-{}.csv", v.as_str()), "text/csv", &text)),
                        Some(None) => on_error.run(format!("The {} view has no numbers yet.", view_title(v))),
                        None => {}
                    }
                }>"Numbers of this view (CSV)"</button>
            <button type="button" class="secondary" data-testid="export-svg" disabled=move || !has()
                on:click=move |_| {
                    let v = view.get_untracked();
                    report_error(svg_of(&format!("view-{}", v.as_str())).and_then(|(svg, _, _)| {
                        save_text(&format!("linear-lens-{}.svg", v.as_str()), "image/svg+xml", &svg)
                    }));
                }>"Plot (SVG)"</button>
            <button type="button" class="secondary" data-testid="export-png" disabled=move || !has()
                on:click=move |_| {
                    let v = view.get_untracked();
                    match svg_of(&format!("view-{}", v.as_str())) {
                        Ok((svg, w, h)) => spawn_local(async move {
                            report_error(save_png(&format!("linear-lens-{}.png", v.as_str()), &svg, w, h).await);
                        }),
                        Err(e) => report_error(Err(e)),
                    }
                }>"Plot (PNG)"</button>
        </div>
    }
}
