// Browser end-to-end tests of the whole analysis (issue 6): every view's
// numbers against the CLI's `analyze --json` on the same model and prompt,
// steering, share snapshots (and a tampered one), the embed mode, the
// classroom walkthrough by keyboard, exports, and screenshots of every view
// at laptop and projector size.
//
//   LINEAR_LENS_BIN=target/release/linear-lens \
//     node tests/e2e/analysis.mjs http://127.0.0.1:8080/ [screenshot-dir]

import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { check, cliJson, failures, finish, launch, open, relClose, scenario, t, typeAndWaitShares, waitIdle, waitReady, RUN_TIMEOUT } from "./lib.mjs";

const url = process.argv[2];
const shots = process.argv[3] ?? process.env.SCREENSHOT_DIR ?? "";
const bin = process.env.LINEAR_LENS_BIN;
if (!url || !bin) {
  console.error("usage: LINEAR_LENS_BIN=… node tests/e2e/analysis.mjs URL [screenshot-dir]");
  process.exit(2);
}
if (shots) mkdirSync(shots, { recursive: true });

const MODEL = "gemma-3-270m";
const PROMPT = "The capital of"; // 4 tokens: every check holds, each pass costs ∝ n
const STEER = { source: "The bridge is the Golden", text: "I went to new york to see the", layer: 12, lambda: 1, tokens: 4 };
const LAPTOP = { width: 1366, height: 768 };
const PROJECTOR = { width: 1920, height: 1080 };
const VIEWS = ["prediction", "exactness", "tokens", "spectrum", "decode", "layers", "path", "attention", "heatmap", "steering"];

const cliRun = (args) => cliJson(bin, [...args, "--json", "-"]);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const words = (list) => list.map((t) => t.token);
const attr = (page, sel, name) => page.getAttribute(sel, name);
const json = async (page, sel, name) => JSON.parse(await attr(page, sel, name));
const all = (page, sel, f) => page.$$eval(sel, (els, src) => els.map(new Function("e", `return (${src})(e)`)), f.toString());

const link = (extra) =>
  `${url}#model=${MODEL}&prompt=${encodeURIComponent(PROMPT)}&precision=f64${extra ?? ""}`;

async function download(page, testid) {
  const [d] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click(`[data-testid="${testid}"]`)]);
  const path = await d.path();
  return { name: d.suggestedFilename(), bytes: readFileSync(path) };
}

function parseCsv(text) {
  const rows = [];
  for (const line of text.trim().split("\n")) {
    const out = [];
    let cur = "", q = false;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (q) {
        if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (c === '"') q = false; else cur += c;
      } else if (c === '"') q = true;
      else if (c === ",") { out.push(cur); cur = ""; } else cur += c;
    }
    out.push(cur);
    rows.push(out);
  }
  return rows;
}

async function shootViews(page, label) {
  if (!shots) return;
  for (const size of [["laptop", LAPTOP], ["projector", PROJECTOR]]) {
    await page.setViewportSize(size[1]);
    for (const v of VIEWS) {
      const el = await page.$(`#view-${v}`);
      if (el) await el.screenshot({ path: join(shots, `${label}-${v}-${size[0]}.png`) });
    }
  }
  await page.setViewportSize(LAPTOP);
}

const browser = await launch();
// Carried from one scenario to the next.
let sv, snapJson;

/// A word typed after the prompt: the prediction and the shares follow the
/// typing (one transpose pass after a pause), no Run, no progress bar; the
/// shares = the CLI's (by the c_i) within `tol` of the logit.
async function typingFollows(page, precision, tol) {
  const word = " Italy";
  const cliLive = cliRun(["analyze", "--model", MODEL, "--prompt", PROMPT + word, "--precision", precision, "--extent", "contributions"]);
  let bars = 0;
  await page.exposeFunction("sawProgress", () => bars++);
  await page.evaluate(() => new MutationObserver(() => {
    if (document.querySelector('[data-testid="progress"]')) window.sawProgress();
  }).observe(document.body, { childList: true, subtree: true }));
  const after = await typeAndWaitShares(page, word, cliLive.tokens.length);
  const shown = await all(page, '[data-testid="tokens"] .strip-token', (e) => [e.dataset.token, Number(e.dataset.attribution)]);
  const logit = cliLive.attribution.logit;
  const worst = Math.max(...shown.map(([, v], i) => Math.abs(v - cliLive.attribution.per_token[i]))) / Math.abs(logit);
  check(same(shown.map(([w]) => w), cliLive.tokens) && worst < tol,
    `typing: "${PROMPT + word}"'s ${shown.length} shares (${precision}) on screen ${after.toFixed(2)} s after the last key, without Run; ` +
    `= the CLI's attribution by the c_i within ${worst.toExponential(1)} of the logit`);
  const top = await page.textContent('[data-testid="predicted-token"]');
  check(top.includes(cliLive.top[0].token.trim()) && bars === 0,
    `typing: the prediction follows (${JSON.stringify(top.trim())}), and no progress bar came up (${bars})`);
}

await scenario("one link asks for everything; every view = the CLI", async () => {
  // 1. One link asks for everything: the run, the selected token's J_i, two
  // layers' curves and steering. Every view's numbers = the CLI's.
  const cli = cliRun(["analyze", "--model", MODEL, "--prompt", PROMPT, "--precision", "f64", "--layers", "1,2"]);
  const cliSteer = cliRun(["analyze", "--model", MODEL, "--prompt", STEER.text, "--precision", "f64", "--svd", "0", "--decode", "0",
    "--columns", "0", "--no-attention", "--no-ordinary", "--steer-source", STEER.source, "--steer-layer", String(STEER.layer),
    "--steer-lambda", String(STEER.lambda), "--steer-tokens", String(STEER.tokens)]).steering;
  const n = cli.tokens.length;
  const ctx = await browser.newContext({ acceptDownloads: true });
  const t0 = Date.now();
  let page = await open(ctx, link(`&view=spectrum&token=${n - 1}&layers=1,2&attn=2.1&steer_source=${encodeURIComponent(STEER.source)}` +
    `&steer_text=${encodeURIComponent(STEER.text)}&steer_layer=${STEER.layer}&steer_lambda=${STEER.lambda}&steer_tokens=${STEER.tokens}&steer=1`), LAPTOP);
  await waitReady(page);
  await page.waitForSelector('[data-testid="steered"]', { timeout: RUN_TIMEOUT });
  await waitIdle(page, "path-point");
  console.log(`everything (run, J_i, 2 layers, steering) in ${t(Date.now() - t0)}`);

  // Spectrum: J_cat and the selected J_i.
  sv = await json(page, '[data-testid="singular-values"]', "data-values");
  const want = cli.svd.concat.singular_values;
  check(sv.length === want.length && sv.every((s, k) => relClose(s, want[k], 1e-9)), `spectrum: ${sv.length} σ of J_cat = CLI's to 1e-9 (σ1 ${sv[0].toFixed(6)})`);
  const sr = Number(await attr(page, '[data-testid="stable-rank"]', "data-value"));
  check(relClose(sr, cli.svd.concat.stable_rank, 1e-9), `spectrum: stable rank ${sr.toFixed(6)} = CLI`);
  const tokSv = await json(page, '[data-testid="token-stable-rank"]', "data-values");
  const tokSr = Number(await attr(page, '[data-testid="token-stable-rank"]', "data-value"));
  const wantTok = cli.svd.per_token[n - 1];
  check(tokSv.every((s, k) => relClose(s, wantTok.singular_values[k], 1e-9)) && relClose(tokSr, wantTok.stable_rank, 1e-9),
    `spectrum: J_${n - 1}'s σ and stable rank ${tokSr.toFixed(6)} = CLI's`);

  // Decode table.
  const rows = await all(page, '[data-testid="decode-row"]', (e) => ({ which: e.dataset.which, k: +e.dataset.k, sigma: +e.dataset.sigma,
    u: JSON.parse(e.dataset.uTokens), v: JSON.parse(e.dataset.vTokens), pos: +e.dataset.vPosition }));
  const wantRows = [...cli.decode.concat.map((p) => ["concat", p]), ...cli.decode.last_token.map((p) => ["last", p])];
  check(rows.length === wantRows.length && rows.every((r, i) => r.which === wantRows[i][0] && relClose(r.sigma, wantRows[i][1].sigma, 1e-9) &&
    same(r.u, words(wantRows[i][1].u_tokens)) && same(r.v, words(wantRows[i][1].v_tokens)) && r.pos === wantRows[i][1].v_position),
    `decode: ${rows.length} pairs, σ and u/v tokens = CLI's (u1 ${JSON.stringify(rows[0]?.u.slice(0, 3))})`);

  // Layers and path.
  const pts = await all(page, '[data-testid="layer-point"]', (e) => ({ layer: +e.dataset.layer, kind: e.dataset.kind, mode: e.dataset.mode, sr: +e.dataset.stableRank }));
  const okPts = cli.layers.every((r) => pts.some((p) => p.layer === r.layer && p.kind === r.kind && p.mode === r.mode && relClose(p.sr, r.stable_rank, 1e-9)));
  check(pts.length === cli.layers.length && okPts, `layers: ${pts.length} stable ranks (layer/attn/mlp × cumulative/layerwise) = CLI's to 1e-9`);
  const lrows = await all(page, '[data-testid="layer-row"]', (e) => ({ layer: +e.dataset.layer, u: JSON.parse(e.dataset.uTokens), lens: JSON.parse(e.dataset.lensTokens) }));
  const cum = cli.layers.filter((r) => r.kind === "layer" && r.mode === "cumulative");
  check(lrows.length === cum.length && lrows.every((r, i) => r.layer === cum[i].layer && same(r.u, words(cum[i].u_tokens[0])) && same(r.lens, words(cum[i].logit_lens_tokens))),
    `layers: decoded u1 and logit-lens tokens per layer = CLI's (${lrows.map((r) => JSON.stringify(r.lens[0])).join(", ")})`);
  const path = await all(page, '[data-testid="path-point"]', (e) => ({ layer: +e.dataset.layer, x: +e.dataset.x, y: +e.dataset.y, label: e.dataset.label }));
  check(path.length === cli.path.length && path.every((p, i) => Math.abs(p.x - cli.path[i].x) <= 1e-9 && Math.abs(p.y - cli.path[i].y) <= 1e-9 && p.label === cli.path[i].label),
    `path: ${path.length} points = CLI's to 1e-9`);

  // Attention, layer 2 head 1 (from the link).
  const att = await json(page, '[data-testid="attention-matrix"]', "data-values");
  const wantAtt = cli.attention[1][1];
  check(att.length === n && att.every((row, q) => row.every((p, k) => Math.abs(p - wantAtt[q][k]) <= 1e-12)),
    `attention: layer 2 head 1's ${n}×${n} probabilities = CLI's`);

  // Heatmap of the last token's J_i and its largest columns.
  const hcols = await all(page, '[data-testid="heatmap-column"]', (e) => ({ i: +e.dataset.index, norm: +e.dataset.norm, tokens: JSON.parse(e.dataset.tokens) }));
  check(hcols.length === cli.columns.columns.length && hcols.every((c, k) => c.i === cli.columns.columns[k].index && relClose(c.norm, cli.columns.columns[k].norm, 1e-9) &&
    same(c.tokens, words(cli.columns.columns[k].tokens))), `heatmap: the last J_i's largest columns and their words = CLI's (${hcols.map((c) => c.i).join(", ")})`);
  const maxAbs = Number(await attr(page, '[data-testid="view-heatmap"]', "data-max-abs"));
  check(maxAbs > 0 && (await page.$$('[data-testid="view-heatmap"] svg rect')).length >= 64 * 64, `heatmap: 64×64 cells, max |J_ij| ${maxAbs.toFixed(4)}`);

  // Steering.
  const steered = await attr(page, '[data-testid="steered"]', "data-text");
  const unsteered = await attr(page, '[data-testid="unsteered"]', "data-text");
  check(steered === cliSteer.steered && unsteered === cliSteer.unsteered,
    `steering: steered ${JSON.stringify(steered)} and unsteered ${JSON.stringify(unsteered)} = CLI's`);

  // Exports.
  const rep = JSON.parse((await download(page, "export-json")).bytes.toString("utf8"));
  check(same(rep.tokens, cli.tokens) && rep.svd.concat.singular_values.every((s, k) => relClose(s, sv[k], 1e-15)) && rep.layers.length === cli.layers.length &&
    rep.steering?.steered === steered && rep.reconstruction.ordinary_rel_error > 0.1 && rep.attention.length === cli.attention.length,
    "export: the Report JSON parses and holds what the views show (σ, layers, steering, ordinary error, attention)");
  let csv = await download(page, "export-csv");
  let table = parseCsv(csv.bytes.toString("utf8"));
  check(csv.name === "linear-lens-spectrum.csv" && table[0][1] === "sigma_J_cat" && table.slice(1, 1 + sv.length).every((r, k) => relClose(Number(r[1]), sv[k], 1e-15)),
    `export: ${csv.name} has the spectrum's ${sv.length} σ`);
  await page.click('[data-testid="view-tab-layers"]');
  csv = await download(page, "export-csv");
  table = parseCsv(csv.bytes.toString("utf8"));
  check(csv.name === "linear-lens-layers.csv" && table.length === 1 + cli.layers.length &&
    table.slice(1).every((r, k) => relClose(Number(r[3]), cli.layers[k].stable_rank, 1e-9)), `export: ${csv.name} has the ${cli.layers.length} layer curves' stable ranks`);
  await page.click('[data-testid="view-tab-spectrum"]');
  const svg = (await download(page, "export-svg")).bytes;
  const png = (await download(page, "export-png")).bytes;
  const pngSize = [png.readUInt32BE(16), png.readUInt32BE(20)];
  check(svg.toString("utf8").startsWith("<?xml") && svg.toString("utf8").includes("<svg") && png.subarray(1, 4).toString() === "PNG" && pngSize[0] > 100 && pngSize[1] > 50,
    `export: an SVG (${svg.length} bytes) and a ${pngSize.join("×")} PNG of the spectrum`);
  const decoded = await page.evaluate(async ([s, p]) => {
    const size = async (bytes, type) => {
      const img = new Image();
      img.src = URL.createObjectURL(new Blob([new Uint8Array(bytes)], { type }));
      await img.decode();
      return [img.naturalWidth, img.naturalHeight];
    };
    return [await size(s, "image/svg+xml"), await size(p, "image/png")];
  }, [[...svg], [...png]]);
  check(decoded.every(([w, h]) => w > 0 && h > 0), `export: the browser decodes both images (${decoded.map((d) => d.join("×")).join(", ")})`);
  await shootViews(page, "gemma");

  const snapLink = await attr(page, '[data-testid="share-link-snapshot"]', "href");
  snapJson = JSON.parse(decodeURIComponent(snapLink.match(/[#&]snap=([^&]*)/)[1]));
  const build = await attr(page, '[data-testid="backend-label"]', "data-build");
  check(build === "fma", `builds: Chromium validates relaxed SIMD, so the page runs the FMA build (${build})`);
  check(snapJson.sigma.length === 8 && relClose(snapJson.sigma[0], sv[0], 1e-12) && snapJson.top === cli.top[0].token,
    `share: the link with results carries a snapshot (${snapLink.length} characters)`);
  await typingFollows(page, "f64", 1e-12);
  await ctx.close();
});

await scenario("the SIMD128 build opens the FMA build's link", async () => {
  // 1b. The page starts the relaxed-SIMD build (products by fused
  // multiply-add) where the browser validates it, as Chromium does; with
  // `?engine=simd128` the other build. The first scenario's link with its
  // snapshot (made on the FMA build) opened on the SIMD128 build: confirmed,
  // and the numbers = the CLI's to the same tolerances.
  const cli = cliRun(["analyze", "--model", MODEL, "--prompt", PROMPT, "--precision", "f64"]);
  const ctxS = await browser.newContext();
  const simdUrl = url.replace(/\/?$/, "/?engine=simd128");
  const page = await open(ctxS, `${simdUrl}#model=${MODEL}&prompt=${encodeURIComponent(PROMPT)}&precision=f64&snap=${encodeURIComponent(JSON.stringify(snapJson))}`, LAPTOP);
  await waitReady(page);
  await page.waitForFunction(() => document.querySelector('[data-testid="snapshot"]')?.dataset.state !== "pending", null, { timeout: RUN_TIMEOUT });
  await waitIdle(page, "decode-row");
  const build = await attr(page, '[data-testid="backend-label"]', "data-build");
  const label = await page.textContent('[data-testid="backend-label"]');
  const state = await attr(page, '[data-testid="snapshot"]', "data-state");
  check(build === "simd128" && state === "confirmed",
    `builds: ?engine=simd128 runs the SIMD128 worker (${build}, "${label.trim()}"), and the FMA build's snapshot is ${state} there`);
  const sigma = await json(page, '[data-testid="singular-values"]', "data-values");
  const shares = await all(page, '[data-testid="tokens"] .strip-token', (e) => Number(e.dataset.attribution));
  const worst = Math.max(...shares.map((v, i) => Math.abs(v - cli.attribution.per_token[i]))) / Math.abs(cli.attribution.logit);
  check(sigma.every((v, k) => relClose(v, cli.svd.concat.singular_values[k], 1e-12)) && worst < 1e-12,
    `builds: on SIMD128, σ = the CLI's to 1e-12 and the shares within ${worst.toExponential(1)} of the logit`);
  await ctxS.close();
});

await scenario("embed mode with a tampered snapshot", async () => {
  // 2. Embed mode with a snapshot: one view, the link's numbers at once,
  // marked as such before the model has loaded, then checked by the
  // recomputation. This one is tampered (σ1 changed, markup as the token):
  // it is flagged and stays text. (A true snapshot confirmed in an embed:
  // the site and compare suites, in another origin's iframe.)
  const bad = { ...snapJson, sigma: [snapJson.sigma[0] * 1.5, ...snapJson.sigma.slice(1)], top: "<img src=x onerror=alert(1)>" };
  const ctxE = await browser.newContext();
  const page = await open(ctxE, link(`&view=spectrum&embed=spectrum&snap=${encodeURIComponent(JSON.stringify(bad))}`), LAPTOP);
  let dialogs = 0;
  page.on("dialog", async (d) => { dialogs++; await d.dismiss(); });
  await page.waitForSelector('[data-testid="snapshot"]', { timeout: 10_000 });
  const early = await page.textContent('[data-testid="model-status"]');
  check((await attr(page, '[data-testid="snapshot"]', "data-state")) === "pending" && !early.startsWith("ready"),
    `snapshot: shown before the model has loaded (status "${early}"), marked as from the link`);
  const shown = await json(page, '[data-testid="snapshot-sigma"]', "data-values");
  check(relClose(shown[0], bad.sigma[0], 1e-12) && shown.slice(1).every((s, k) => relClose(s, sv[k + 1], 1e-12)), "snapshot: its σ are the link's");
  check(!(await page.$('[data-testid="prompt-input"]')) && !!(await page.$('[data-testid="view-spectrum"]')) && !(await page.$('[data-testid="view-decode"]')),
    "embed: only the spectrum view, no page around it");
  check((await page.textContent('[data-testid="snapshot-top"]')).includes("onerror") && (await page.$$("img")).length === 0,
    "snapshot: markup in a link's snapshot shows as text");
  await page.waitForFunction(() => document.querySelector('[data-testid="snapshot"]')?.dataset.state !== "pending", null, { timeout: RUN_TIMEOUT });
  const diff = await page.textContent('[data-testid="snapshot-diff"]');
  check((await attr(page, '[data-testid="snapshot"]', "data-state")) === "mismatch" && diff.includes("σ1") && diff.includes("predicted token"),
    `snapshot: a tampered one is flagged (${JSON.stringify(diff.slice(0, 120))})`);
  check(dialogs === 0 && (await page.$$("img")).length === 0, "snapshot: no element injected, no script ran");
  if (shots) await page.screenshot({ path: join(shots, "embed-spectrum.png"), fullPage: true });
  await ctxE.close();
});

await scenario("matrix-free mode", async () => {
  // 4. Matrix-free mode: the page says so; σ and decoded words = the CLI's
  // `--matrix-free`.
  // Two tokens: the Lanczos products cost ∝ n, and the page and the CLI
  // still need hundreds of them.
  const MF_PROMPT = "Paris";
  const cliMf = cliRun(["analyze", "--model", MODEL, "--prompt", MF_PROMPT, "--precision", "f64", "--matrix-free", "--no-ordinary"]);
  const ctxM = await browser.newContext();
  const page = await open(ctxM, `${url}#model=${MODEL}&prompt=${encodeURIComponent(MF_PROMPT)}&precision=f64&svd=krylov&view=spectrum`, LAPTOP);
  await waitReady(page);
  await page.waitForSelector('[data-testid="long-prompt-notice"]', { timeout: RUN_TIMEOUT });
  await waitIdle(page, "decode-row");
  const mf = await json(page, '[data-testid="singular-values"]', "data-values");
  check(mf.length === cliMf.matrix_free.singular_values.length && mf.every((s, k) => relClose(s, cliMf.matrix_free.singular_values[k], 1e-9)),
    `matrix-free: ${mf.length} σ = CLI's --matrix-free to 1e-9, and the page says it runs matrix-free`);
  const mrows = await all(page, '[data-testid="decode-row"][data-which="concat"]', (e) => JSON.parse(e.dataset.uTokens));
  check(mrows.every((u, k) => same(u, words(cliMf.decode.concat[k].u_tokens))), "matrix-free: decoded words = CLI's");
  // The pool shared the Lanczos blocks: the other workers computed some.
  const shares = Number(await attr(page, '[data-testid="engine-pool"]', "data-shares"));
  const byHelpers = Number(await attr(page, '[data-testid="engine-pool"]', "data-helper-shares"));
  check(byHelpers > 0 && byHelpers < shares, `matrix-free: the pool's other workers computed ${byHelpers} of ${shares} shares of the Lanczos blocks`);
  await ctxM.close();
});

await scenario("classroom mode by keyboard", async () => {
  // 5. Classroom mode by keyboard alone: every step draws its picture.
  const ctxC = await browser.newContext();
  const page = await open(ctxC, `${url}#model=${MODEL}&prompt=${encodeURIComponent(PROMPT)}&precision=f32&classroom=0`, PROJECTOR);
  await waitReady(page);
  await waitIdle(page, "token-strip");
  await page.waitForSelector('[data-testid="classroom-step"][data-step="0"]');
  const pictures = ["token-strip", "view-embed", "view-attention", "view-heatmap", "view-exactness", "view-spectrum", "view-decode", "view-layers", "view-steering", "view-compare"];
  let walked = 0;
  for (let k = 0; k < pictures.length; k++) {
    if (k > 0) {
      // Alternate the two ways: the arrow key, and Tab to "Next" + Enter.
      if (k % 2) {
        await page.focus("body");
        await page.keyboard.press("ArrowRight");
      } else {
        await page.focus('[data-testid="classroom-next"]');
        await page.keyboard.press("Enter");
      }
    }
    await page.waitForSelector(`[data-testid="classroom-step"][data-step="${k}"]`, { timeout: 5000 });
    const pic = await page.$(`[data-testid="${pictures[k]}"]`);
    if (pic) walked++;
    if (shots) await page.screenshot({ path: join(shots, `classroom-${k}.png`) });
  }
  check(walked === pictures.length, `classroom: ${walked} of ${pictures.length} steps walked by keyboard, each with its picture`);
  await page.keyboard.press("ArrowLeft");
  const back = await page.waitForSelector(`[data-testid="classroom-step"][data-step="${pictures.length - 2}"]`, { timeout: 5000 })
    .then(() => true, () => false);
  check(back, "classroom: ← goes back a step");
  await ctxC.close();
});

await browser.close();
finish();
