// Browser tests of the page as a visitor and a class meet it (issue 20):
// at a projector's 1280×720, a big screen's 1920×1080 and a phone's 390×844,
// the full page, classroom mode (every step) and every embedded view are no
// wider than the screen and each view's content stays inside its box (wide
// tables scroll in their own box); classroom mode puts the step's title,
// text and picture on the first screen; every control is reached by Tab and
// has a name, every plot has its numbers as a table; the messages are one
// plain sentence with the technical detail behind "Details".
//
//   node tests/e2e/layout.mjs http://127.0.0.1:8080/ [screenshot-dir]
//
// Screenshots of every size and mode go to the screenshot directory. With
// README_SCREENSHOT=FILE it also writes the README's picture (the page on
// the paper's prompt, 1000 px wide).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, finish, launch, open, scenario, t, waitIdle, waitReady } from "./lib.mjs";

const url = process.argv[2];
const shots = process.argv[3] ?? process.env.SCREENSHOT_DIR ?? "";
if (!url) {
  console.error("usage: node tests/e2e/layout.mjs URL [screenshot-dir]");
  process.exit(2);
}
if (shots) mkdirSync(shots, { recursive: true });

const MODEL = "gemma-3-270m";
const PAPER = "The bridge out of Marin is the";
const SHORT = "Marin is"; // the embeds: a short prompt
const SIZES = [
  { name: "projector", width: 1280, height: 720 },
  { name: "screen", width: 1920, height: 1080 },
  { name: "phone", width: 390, height: 844 },
];
const VIEWS = ["prediction", "exactness", "tokens", "spectrum", "decode", "layers", "path", "attention", "heatmap", "steering"];
const link = (prompt, extra = "") => `${url}#model=${MODEL}&prompt=${encodeURIComponent(prompt)}&precision=f32${extra}`;
const shot = async (page, name) => { if (shots) await page.screenshot({ path: join(shots, `layout-${name}.png`) }); };

/// What sticks out at this size: the page wider than the screen, a box
/// (a view, or the classroom's step and picture) outside the screen, or an
/// element outside its box (unless inside a box of its own that scrolls).
async function overflows(page, boxSelector) {
  return page.evaluate((sel) => {
    const bad = [];
    const vw = document.documentElement.clientWidth;
    const name = (e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}${e.className && typeof e.className === "string" ? "." + e.className.trim().split(/\s+/).join(".") : ""}${e.dataset?.testid ? `[${e.dataset.testid}]` : ""}`;
    if (document.documentElement.scrollWidth > vw + 1) bad.push(`the page is ${document.documentElement.scrollWidth} px wide in ${vw}`);
    const clips = (e) => ["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(e).overflowX);
    for (const box of document.querySelectorAll(sel)) {
      const b = box.getBoundingClientRect();
      if (b.width === 0) continue;
      if (b.left < -1 || b.right > vw + 1) bad.push(`${name(box)} spans ${b.left.toFixed(0)}–${b.right.toFixed(0)} px in ${vw}`);
      const walk = (el) => {
        for (const c of el.children) {
          const r = c.getBoundingClientRect();
          const shown = r.width > 0 && r.height > 0 && getComputedStyle(c).visibility !== "hidden";
          if (shown && (r.left < b.left - 1 || r.right > b.right + 1)) {
            bad.push(`${name(c)} (${r.left.toFixed(0)}–${r.right.toFixed(0)}) outside ${name(box)} (${b.left.toFixed(0)}–${b.right.toFixed(0)})`);
            continue;
          }
          // Inside a box that scrolls (or a folded <details>), its content is
          // that box's business.
          if (clips(c) || (c.tagName === "DETAILS" && !c.open)) continue;
          walk(c);
        }
      };
      walk(box);
    }
    return bad;
  }, boxSelector);
}

async function checkSizes(page, what, boxes, extra) {
  for (const size of SIZES) {
    await page.setViewportSize(size);
    await page.waitForTimeout(300);
    const bad = await overflows(page, boxes);
    check(bad.length === 0, `${what} at ${size.width}×${size.height}: nothing wider than the screen or outside its box${bad.length ? ` (${bad.length}: ${bad.slice(0, 4).join("; ")})` : ""}`);
    if (extra) await extra(size);
    await shot(page, `${what.replace(/[^a-z0-9]+/gi, "-")}-${size.width}x${size.height}`);
  }
}

/// A message as the visitor reads it: one sentence, nothing technical in
/// it, any detail in a folded <details>.
async function plainMessage(page, testid, what) {
  const m = await page.$eval(`[data-testid="${testid}"]`, (e) => ({
    text: e.querySelector(".message-text")?.textContent ?? "",
    details: e.querySelector("details")?.textContent ?? null,
    open: e.querySelector("details")?.open ?? false,
  }));
  const sentence = m.text.trim().endsWith(".") && !/\.\s/.test(m.text.trim()) && !/[()]|Error|adapter|compiled|http/.test(m.text);
  check(sentence && !m.open, `${what}: one plain sentence (${JSON.stringify(m.text)}), the detail folded (${JSON.stringify((m.details ?? "").slice(0, 120))})`);
  return m;
}

const browser = await launch();
const ctx = await browser.newContext();
let page;

await scenario("the full page on the paper's prompt, at three sizes", async () => {
  // Two layers in the first half: the layer view and the path drawn as with
  // any others, at a quarter of the cost of the taps of 6,12,18.
  page = await open(ctx, link(PAPER, "&layers=3,6"), SIZES[0]);
  await waitReady(page);
  const t0 = Date.now();
  await waitIdle(page, "decode-concat");
  await page.waitForSelector('[data-testid="layer-row"]', { timeout: 300_000 });
  await waitIdle(page, "layer-row");
  console.log(`   run and layers: ${t(Date.now() - t0)}`);
  if (process.env.README_SCREENSHOT) {
    // The page as a laptop's 1280 px lay it out, drawn 1000 px wide (a
    // small file for the README).
    await page.setViewportSize({ width: 1000, height: 1150 });
    await page.evaluate(() => { document.documentElement.style.zoom = String(1000 / 1280); window.scrollTo(0, 0); });
    await page.waitForTimeout(500);
    await page.screenshot({ path: process.env.README_SCREENSHOT });
    await page.evaluate(() => { document.documentElement.style.zoom = ""; });
    console.log(`   wrote ${process.env.README_SCREENSHOT}`);
  }
  await checkSizes(page, "full page", ".view-slot, main, .masthead, footer");
});

await scenario("keyboard: every control reached by Tab and named; every plot's numbers as text", async () => {
  await page.setViewportSize(SIZES[0]);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.focus("body");
  const reached = new Map();
  let first = null;
  for (let i = 0; i < 700; i++) {
    await page.keyboard.press("Tab");
    const f = await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || e === document.body) return null;
      if (!e.dataset.tabProbe) e.dataset.tabProbe = String(Math.random());
      const byLabel = e.id ? document.querySelector(`label[for="${e.id}"]`)?.textContent : "";
      const name = (e.getAttribute("aria-label") || byLabel || e.closest("label")?.textContent || e.getAttribute("title") ||
        e.textContent || e.getAttribute("placeholder") || "").trim();
      return { probe: e.dataset.tabProbe, tag: e.tagName.toLowerCase(), testid: e.dataset.testid ?? "", name };
    });
    if (!f) continue;
    if (f.probe === first) break;
    first ??= f.probe;
    reached.set(f.probe, f);
  }
  const unnamed = [...reached.values()].filter((f) => !f.name);
  check(unnamed.length === 0, `each of the ${reached.size} controls Tab reaches has a name (${JSON.stringify(unnamed.slice(0, 3))})`);
  const missed = await page.evaluate(() => [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")]
    .filter((e) => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0 && !e.closest("details:not([open]) > :not(summary)"))
    .filter((e) => !e.dataset.tabProbe)
    .map((e) => `${e.tagName.toLowerCase()}[${e.dataset.testid ?? e.textContent.trim().slice(0, 20)}]`));
  check(missed.length === 0, `every visible control is reached by Tab (${missed.length} missed: ${missed.slice(0, 5).join(", ")})`);
  const plots = await page.$$eval('svg[role="img"]', (svgs) => svgs.map((s) => ({
    label: s.getAttribute("aria-label") ?? "",
    table: !!s.closest(".card, section")?.querySelector('[data-testid="numbers-table"] table, table'),
  })));
  check(plots.length >= 5 && plots.every((p) => p.label && p.table),
    `each of the ${plots.length} plots has a label and its numbers as a table (${JSON.stringify(plots.filter((p) => !p.label || !p.table))})`);
  const strip = await page.$('[data-testid="token-strip"] [data-testid="numbers-table"]');
  check(!!strip, "the token strip's shares are in a table too");
});

await scenario("classroom mode: the lesson on the first screen, every step, three sizes", async () => {
  await page.setViewportSize(SIZES[0]);
  await page.click('[data-testid="classroom-toggle"]');
  await page.waitForSelector('[data-testid="classroom-step"][data-step="0"]');
  for (let k = 0; k < 9; k++) {
    if (k > 0) {
      await page.focus("body");
      await page.keyboard.press("ArrowRight");
      await page.waitForSelector(`[data-testid="classroom-step"][data-step="${k}"]`, { timeout: 5000 });
    }
    // The Layers step computes its curves (already there from the link).
    await page.waitForTimeout(400);
    await checkSizes(page, `classroom step ${k + 1}`, ".classroom-nav, .classroom-picture .view-slot, .classroom-bar", async (size) => {
      if (size.width < 800) return;
      const fit = await page.evaluate(() => {
        const r = (s) => document.querySelector(s)?.getBoundingClientRect();
        const [title, text, pic, bar] = [r(".classroom-body h2"), r(".classroom-body .lead"), r(".classroom-picture"), r(".classroom-bar")];
        return { h: innerHeight, scrolled: scrollY, title: title?.bottom, text: text?.bottom, pic: pic && [pic.top, pic.bottom, pic.height], bar: bar?.height };
      });
      check(fit.scrolled === 0 && fit.title <= fit.h && fit.text <= fit.h && fit.pic && fit.pic[1] <= fit.h + 1 && fit.pic[2] > fit.h / 2 && fit.bar < 80,
        `classroom step ${k + 1} at ${size.width}×${size.height}: title, text and picture on the first screen, controls in one line (${JSON.stringify(fit)})`);
    });
    await page.setViewportSize(SIZES[0]);
  }
  await page.focus("body");
  await page.keyboard.press("ArrowLeft");
  await page.waitForSelector('[data-testid="classroom-step"][data-step="7"]', { timeout: 5000 });
  await page.click('[data-testid="classroom-step-4"]');
  const step5 = await page.$$eval('.classroom-picture [data-testid^="recon-error-"]', (els) => els.map((e) => e.dataset.testid));
  check(step5.includes("recon-error-detached") && step5.includes("recon-error-ordinary"),
    `step 5 shows the reconstruction error beside the ordinary Jacobian's (${step5.join(", ")})`);
  await page.click('[data-testid="classroom-toggle"]');
  await page.waitForSelector('[data-testid="prompt-input"]');
});

await scenario("messages: the fallback, a prompt too long, a cancel", async () => {
  // This browser has no WebGPU: auto fell back to the CPU during the run.
  await plainMessage(page, "backend-fallback", "the fallback to the CPU");
  const fallback = await page.$eval('[data-testid="backend-fallback"] details', (e) => e.textContent);
  check(fallback.includes("WebGPU unavailable"), `the fallback's details hold the adapter's error (${JSON.stringify(fallback.slice(0, 100))})`);
  await page.fill('[data-testid="prompt-input"]', "word ".repeat(700).trim());
  await page.click('[data-testid="run-button"]');
  await page.waitForSelector('[data-testid="error-message"]', { timeout: 60_000 });
  const long = await plainMessage(page, "error-message", "a prompt too long");
  check(long.text.includes("too long") && /at most 512/.test(long.details ?? ""), "it says to shorten the prompt; the limit is in the details");
  await page.fill('[data-testid="prompt-input"]', PAPER);
  await page.click('[data-testid="run-button"]');
  await page.waitForSelector('[data-testid="cancel-button"]', { timeout: 60_000 });
  await page.click('[data-testid="cancel-button"]');
  await page.waitForSelector('[data-testid="error-message"]', { timeout: 10_000 });
  const cancelled = await plainMessage(page, "error-message", "a cancelled run");
  check(cancelled.text.startsWith("Cancelled"), "it says the run was cancelled");
  await page.waitForFunction(() => document.querySelector('[data-testid="model-status"]')?.textContent.startsWith("ready"),
    null, { timeout: 120_000 });
  await page.close();
});

await scenario("messages: a model too large for the device", async () => {
  // A browser that reports 0.25 GB of memory: Gemma is refused before its
  // bytes are fetched.
  const small = await browser.newContext();
  await small.addInitScript(() => Object.defineProperty(Navigator.prototype, "deviceMemory", { get: () => 0.25 }));
  const p = await open(small, link(SHORT), SIZES[0]);
  await p.waitForSelector('[data-testid="error-message"]', { timeout: 60_000 });
  const m = await plainMessage(p, "error-message", "a model too large");
  check(m.text.includes("smaller model") && /needs about 0\.\d\d GB/.test(m.details ?? ""), "it says to pick a smaller model; the numbers are in the details");
  await small.close();
});

await scenario("every embedded view at three sizes", async () => {
  // The first embed opens as a visitor's link does; the others are links
  // pasted into the same tab that change only the view (and the layers):
  // the page switches the view without a new run, so Gemma runs once here.
  let p;
  for (const v of VIEWS) {
    const target = link(SHORT, `&embed=${v}${v === "layers" || v === "path" ? "&layers=3,6" : ""}`);
    if (!p) {
      p = await open(ctx, target, SIZES[0]);
      await waitReady(p);
    } else {
      await p.setViewportSize(SIZES[0]);
      await p.evaluate((h) => { location.hash = h; }, new URL(target).hash);
    }
    await p.waitForSelector(`[data-testid="embed"][data-view="${v}"]`, { timeout: 10_000 });
    // Settled: no progress bar for 3 s in a row (the run, then what the
    // link asks for on demand).
    for (let quiet = 0, i = 0; quiet < 6 && i < 600; i++) {
      quiet = (await p.$('[data-testid="progress"]')) ? 0 : quiet + 1;
      await p.waitForTimeout(500);
    }
    await checkSizes(p, `embed ${v}`, ".page.embed, .view-slot");
  }
  await p.close();
});

await ctx.close();
await browser.close();
finish();
