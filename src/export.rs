//! Exports: the Report as JSON, the numbers of the view in focus as CSV
//! (`csv`), and the view's plot as SVG or PNG, saved as files by the browser.

use crate::browser::js_error;
use crate::csv::csv;
use crate::run_state::Results;
use crate::view_data::view_title;
use lens_protocol::View;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The page's stylesheet, embedded in exported SVGs so that they look as
/// they do on the page.
const STYLE: &str = include_str!("../web/style.css");

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
/// go to `on_error` as a sentence. For the compare view, `comparison`
/// gives its JSON (`{a, b, comparison}`, as `linear-lens compare --json`)
/// and its CSV, once B is compared.
#[component]
pub fn ExportBar(
    results: RwSignal<Results>,
    view: Signal<View>,
    on_error: Callback<String>,
    comparison: Callback<(), Option<(String, String)>>,
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
                    if view.get_untracked() == View::Compare {
                        match comparison.run(()) {
                            Some((json, _)) => report_error(save_text("linear-lens-comparison.json", "application/json", &json)),
                            None => on_error.run("Run B against the pinned A first: there is no comparison yet.".into()),
                        }
                        return;
                    }
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
                    let out = if v == View::Compare {
                        Some(comparison.run(()).map(|(_, csv)| csv))
                    } else {
                        results.with_untracked(|r| {
                            r.report.as_ref().map(|rep| csv(v, rep, r.inspect.as_ref()))
                        })
                    };
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
