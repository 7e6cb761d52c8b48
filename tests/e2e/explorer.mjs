// Browser end-to-end tests of the explorer (the page + the engine worker),
// in Debian's headless Chromium driven by playwright-core:
//
//   LINEAR_LENS_BIN=target/release/linear-lens TINY_QWEN3_DIR=/tmp/tiny \
//     node tests/e2e/explorer.mjs http://127.0.0.1:8080/ [screenshot-dir]
//
// The expected numbers come from the CLI (`linear-lens analyze --json`) on
// the same model files and prompts. Prints what it saw; exits non-zero on
// any failed check.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, cliAnalyze, cliJson, failures, finish, hubStandIn, launch, open, relClose, scenario, t, waitReady, MODEL_TIMEOUT, RUN_TIMEOUT } from "./lib.mjs";

const url = process.argv[2];
const shots = process.argv[3] ?? process.env.SCREENSHOT_DIR ?? "";
const bin = process.env.LINEAR_LENS_BIN;
const tinyDir = process.env.TINY_QWEN3_DIR;
if (!url || !bin || !tinyDir) {
  console.error("usage: LINEAR_LENS_BIN=… TINY_QWEN3_DIR=… node tests/e2e/explorer.mjs URL [screenshot-dir]");
  process.exit(2);
}
if (shots) mkdirSync(shots, { recursive: true });

const PROMPT = "The capital of"; // 4 tokens: every check holds, each pass costs ∝ n
const TINY_PROMPT = "w5 w17 w42 w8 w23";
const analyze = (model, prompt) => cliAnalyze(bin, model, prompt, "f64");

const browser = await launch();

async function waitValue(page, testid) {
  const sel = `[data-testid="${testid}"][data-value], [data-testid="error-message"]`;
  await page.waitForSelector(sel, { timeout: RUN_TIMEOUT });
  const err = await page.$('[data-testid="error-message"]');
  if (err) throw new Error(`${testid}: ${await err.textContent()}`);
  return Number(await page.getAttribute(`[data-testid="${testid}"]`, "data-value"));
}

async function results(page) {
  const ordinary = await waitValue(page, "recon-error-ordinary");
  return {
    predicted: await page.textContent('[data-testid="predicted-token"]'),
    detached: await waitValue(page, "recon-error-detached"),
    ordinary,
    stableRank: await waitValue(page, "stable-rank"),
    singular: JSON.parse(await page.getAttribute('[data-testid="singular-values"]', "data-values")),
  };
}

function compareWithCli(r, cli, what) {
  check(r.predicted === cli.top[0].token, `${what}: predicted ${JSON.stringify(r.predicted)} = CLI ${JSON.stringify(cli.top[0].token)}`);
  check(r.detached <= 1e-13, `${what}: f64 detached reconstruction ${r.detached.toExponential(2)} ≤ 1e-13 (full J)`);
  check(relClose(r.ordinary, cli.reconstruction.ordinary_rel_error, 1e-9),
    `${what}: ordinary error ${r.ordinary.toFixed(6)} = CLI ${cli.reconstruction.ordinary_rel_error.toFixed(6)}`);
  const want = cli.svd.concat.singular_values;
  check(r.singular.length === Math.min(16, want.length) && r.singular.every((s, k) => relClose(s, want[k], 1e-9)),
    `${what}: ${r.singular.length} singular values = CLI's to 1e-9 (σ1 ${r.singular[0]?.toFixed(6)})`);
  check(relClose(r.stableRank, cli.svd.concat.stable_rank, 1e-9), `${what}: stable rank ${r.stableRank.toFixed(6)} = CLI`);
}

// A stand-in for huggingface.co (lib.mjs), with two broken repositories.
const hub = await hubStandIn(tinyDir);
const hfRequests = hub.requests;
const hfBase = hub.base;

const timings = {};
// Carried from one scenario to the next.
let share, rA, cliTiny, rT;

await scenario("default model: every stage vs the CLI, the cache, cancel", async () => {
  // 1. The default model, a prompt, every stage; the page stays responsive.
  const cli = analyze("gemma-3-270m", PROMPT);
  const ctxA = await browser.newContext();
  const modelRequests = [];
  ctxA.on("request", (r) => r.url().endsWith(".gguf") && modelRequests.push(r.url()));
  const t0 = Date.now();
  let page = await open(ctxA, url);
  check((await page.title()) === "Linear Lens", "page title");
  // Served like the static site: no isolation headers, the service worker's
  // cache named for this build.
  check(await page.evaluate(() => self.crossOriginIsolated === false), "no cross-origin isolation, as on a static host");
  const swVersion = await page.evaluate(async () => (await (await fetch("sw.js")).text()).match(/^const VERSION = "([0-9a-f]{16})";/m)?.[1]);
  check(!!swVersion, `the build stamped the service worker's cache name (${swVersion})`);
  check((await page.textContent('[data-testid="backend-label"]')) === "CPU", "backend label says CPU");
  check((await page.inputValue('[data-testid="model-select"]')) === "gemma-3-270m", "default model is gemma-3-270m");
  console.log(`status: ${await waitReady(page)}`);
  timings.load = Date.now() - t0;
  // The pool: one engine worker per core (this machine's Chromium says
  // how many), each with the model, named in the footer.
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  const poolText = await page.textContent('[data-testid="engine-pool"]');
  const want = Math.min(cores, 8);
  check(poolText.startsWith(`${want} engine worker`) && poolText.includes(`${cores} core`),
    `the footer names the pool: "${poolText}"`);
  for (let k = 0; k < 50 && page.workers().length < want; k++) await page.waitForTimeout(100);
  check(page.workers().length >= want, `${page.workers().length} Web Workers started for ${cores} cores`);
  check(modelRequests.length === 1, `the first visit downloads the model (${modelRequests.length} request)`);

  await page.fill('[data-testid="prompt-input"]', PROMPT);
  await page.selectOption('[data-testid="precision-select"]', "f64");
  const t1 = Date.now();
  await page.click('[data-testid="run-button"]');
  await page.waitForSelector('[data-testid="predicted-token"]', { timeout: RUN_TIMEOUT });
  timings.prediction = Date.now() - t1;
  // Progress while the full Jacobian forms, and a UI interaction meanwhile.
  await page.waitForFunction(
    () => document.querySelector('[data-testid="progress"]')?.getAttribute("aria-label")?.includes("detached Jacobian"),
    null,
    { timeout: RUN_TIMEOUT },
  );
  const samples = [];
  for (let k = 0; k < 12; k++) {
    const v = await page.getAttribute('[data-testid="progress"]', "aria-valuenow").catch(() => null);
    if (v !== null) samples.push(Number(v));
    await page.waitForTimeout(700);
  }
  const distinct = [...new Set(samples)];
  check(distinct.length >= 3 && samples.every((v, k) => k === 0 || v >= samples[k - 1]),
    `the progress bar advances during the Jacobian (${distinct.join(" → ")})`);
  const tClick = Date.now();
  await page.click('[data-testid="tokens"] [data-index="3"]', { timeout: 2000 });
  await page.waitForSelector('[data-testid="tokens"] [data-index="3"][aria-pressed="true"]', { timeout: 2000 });
  const clickMs = Date.now() - tClick;
  check(clickMs < 1000, `a click on a token is handled while the Jacobian computes (${clickMs} ms)`);
  check(await page.$('[data-testid="progress"]') !== null, "…and the run is still going");
  rA = await results(page);
  timings.full = Date.now() - t1;
  compareWithCli(rA, cli, "Gemma 3 270M");
  const attr = await page.$$eval('[data-testid="tokens"] [data-attribution]', (els) => els.map((e) => Number(e.dataset.attribution)));
  check(attr.length === cli.tokens.length && attr.every((a, i) => relClose(a, cli.attribution.per_token[i], 1e-9) || Math.abs(a - cli.attribution.per_token[i]) < 1e-9),
    `token strip attributions = CLI's (${attr.map((a) => a.toFixed(3)).join(" ")})`);
  await page.click('[data-testid="view-tab-spectrum"]');
  share = await page.getAttribute('[data-testid="share-link"]', "href");
  check(share.includes("#") && share.includes("prompt=The%20capital") && share.includes("token=3") && share.includes("view=spectrum"),
    `share link carries the state: ${share}`);
  // An edit in the prompt box that has not been run yet: a click on a token
  // of the run on screen still shows that run's J_i (not the edit's).
  await page.fill('[data-testid="prompt-input"]', "Hi");
  await page.click('[data-testid="tokens"] [data-index="1"]');
  await page.waitForSelector('[data-testid="view-heatmap"][data-state="ready"][data-position="1"]', { timeout: 30_000 }).catch(() => null);
  const heat = await page.$('[data-testid="view-heatmap"][data-state="ready"][data-position="1"]');
  check(!!heat && !(await page.$('[data-testid="error-message"]')),
    "an unrun edit of the prompt: a token click still shows the run's J_1, no error");
  await page.fill('[data-testid="prompt-input"]', PROMPT);
  await page.click('[data-testid="tokens"] [data-index="3"]');
  if (shots) await page.screenshot({ path: join(shots, "explorer-gemma.png"), fullPage: true });
  console.log(`times: model ${t(timings.load)}, first prediction ${t(timings.prediction)}, all stages (f64) ${t(timings.full)}`);

  // 2. The second load comes from the cache: no request for the weights.
  modelRequests.length = 0;
  await page.reload();
  const status = await waitReady(page);
  check(modelRequests.length === 0 && status.includes("cache"), `the second load makes no request for the weights (${modelRequests.length}; "${status}")`);

  // 3. The reloaded page (its URL now carries the analysis) runs it again;
  // cancel stops that run within a second and the page stays usable.
  await page.waitForFunction(
    () => document.querySelector('[data-testid="progress"]')?.getAttribute("aria-label")?.includes("detached Jacobian"),
    null,
    { timeout: RUN_TIMEOUT },
  );
  const running = page.workers();
  const closed = running.map((w) => new Promise((r) => w.once("close", () => r(true))));
  const tCancel = Date.now();
  await page.click('[data-testid="cancel-button"]');
  await page.waitForSelector('[data-testid="progress"]', { state: "detached", timeout: 1000 });
  const cancelMs = Date.now() - tCancel;
  check(cancelMs <= 1000, `cancel stops the run (${cancelMs} ms)`);
  const stopped = await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(() => r(null), 3000))]);
  check(running.length >= 2 && stopped !== null,
    `cancel stops every worker of the pool at once (${running.length} terminated in ${Date.now() - tCancel} ms)`);
  check((await page.textContent('[data-testid="error-message"]')).includes("Cancelled"), "the page says the run was cancelled");
  await page.waitForFunction(
    () => document.querySelector('[data-testid="model-status"]')?.textContent.startsWith("ready"),
    null,
    { timeout: MODEL_TIMEOUT },
  );
  check(await page.isEnabled('[data-testid="run-button"]'), "after cancel the model is ready again and Run is enabled");
  await ctxA.close();
});

// One profile for the scenarios that follow.
const ctxB = await browser.newContext();

await scenario("a share link in a fresh profile, a worker of the pool crashing", async () => {
  // 4. The share link in a fresh profile reproduces the analysis, though
  // the first helper of the pool dies on the first rows it is given (an
  // exception in its message handler, as a trap or out-of-memory would).
  let made = 0;
  ctxB.once("page", (p) => p.on("worker", (w) => {
    if (made++ !== 1) return;
    w.evaluate(() => {
      // A capturing listener runs before the worker's own handler: the
      // first rows request never reaches the engine.
      let crashed = false;
      self.addEventListener("message", (ev) => {
        // Requests are JS values (serde-wasm-bindgen), alone or beside a
        // transferred buffer.
        const msg = Array.isArray(ev.data) ? ev.data[0] : ev.data;
        if (!crashed && msg?.type === "rows") {
          crashed = true;
          ev.stopImmediatePropagation();
          throw new Error("test: this worker of the pool crashes");
        }
      }, { capture: true });
    }).catch((e) => console.log(`could not arm the helper: ${e.message}`));
  }));
  const page = await open(ctxB, share);
  await waitReady(page);
  const rB = await results(page);
  const note = await page.$('[data-testid="pool-note"]');
  const noteText = note ? await note.textContent() : "";
  check(made >= 3 && noteText.includes("replaced"),
    `the crashed worker was replaced (${made} workers started) and the page says so: "${noteText}"`);
  check(rB.predicted === rA.predicted, `shared link: same prediction ${JSON.stringify(rB.predicted)}`);
  check(rB.singular.every((s, k) => relClose(s, rA.singular[k], 1e-12)), "shared link: same singular values");
  check((await page.inputValue('[data-testid="prompt-input"]')) === PROMPT, "shared link: same prompt");
  check((await page.getAttribute('[data-testid="tokens"] [data-index="3"]', "aria-pressed")) === "true", "shared link: same selected token");
  check((await page.getAttribute('[data-testid="view-tab-spectrum"]', "aria-current")) === "true", "shared link: same view in focus");
  await page.close();
});

await scenario("markup in a link is text; a pasted link replaces the run", async () => {
  // 5. Markup in a shared prompt is text, never HTML.
  const evil = "<img src=x onerror=alert(1)>";
  const page = await open(ctxB, `${url}#model=gemma-3-270m&prompt=${encodeURIComponent(evil)}&precision=f32`);
  let dialogs = 0;
  page.on("dialog", async (d) => {
    dialogs++;
    await d.dismiss();
  });
  await waitReady(page);
  await page.waitForSelector('[data-testid="predicted-token"]', { timeout: RUN_TIMEOUT });
  check((await page.inputValue('[data-testid="prompt-input"]')) === evil, "the prompt from the link is in the input as text");
  const strip = await page.textContent('[data-testid="tokens"]');
  check(strip.includes("img") && strip.includes("onerror"), `the tokens show the markup as text (${JSON.stringify(strip)})`);
  check((await page.$$("main img")).length === 0 && dialogs === 0, "no element was injected and no script ran");

  // A link pasted into the same tab while a run goes on replaces that run.
  const next = "Paris is the capital of";
  const want = cliJson(bin, ["predict", "--model", "gemma-3-270m", "--prompt", next, "--precision", "f32", "--json"]);
  await page.evaluate((p) => (location.hash = `model=gemma-3-270m&prompt=${encodeURIComponent(p)}&precision=f32`), next);
  await page.waitForFunction(
    (p) => document.querySelector('[data-testid="tokens"]')?.textContent.includes("capital") &&
      document.querySelector('[data-testid="prompt-input"]')?.value === p &&
      document.querySelector('[data-testid="predicted-token"]'),
    next,
    { timeout: RUN_TIMEOUT },
  );
  const got = await page.textContent('[data-testid="predicted-token"]');
  check(got === want.top[0].token, `a new link in the same tab runs the new prompt: ${JSON.stringify(got)} = CLI ${JSON.stringify(want.top[0].token)}`);
  await page.close();
});

await scenario("a tiny Qwen 3 through the Hugging Face layout", async () => {
  // 6. A tiny Qwen 3 through the Hugging Face URL layout, from a local server.
  cliTiny = analyze(tinyDir, TINY_PROMPT);
  const page = await open(ctxB, `${url}?hf_base=${encodeURIComponent(hfBase)}#model=hf%3Atiny%2Fqwen3&prompt=${encodeURIComponent(TINY_PROMPT)}&precision=f64`);
  console.log(`status: ${await waitReady(page)}`);
  rT = await results(page);
  compareWithCli(rT, cliTiny, "tiny Qwen 3 via the Hugging Face path");
  check(hfRequests.some((u) => u.endsWith("/model.safetensors")), `weights came from the mirror (${hfRequests.join(", ")})`);
  if (shots) await page.screenshot({ path: join(shots, "explorer-tiny-qwen3.png"), fullPage: true });
  await page.close();
});

await scenario("broken and corrupt downloads", async () => {
  // 7. A download that breaks off, and a corrupt file: a clear message, and
  // the page stays usable (the next model loads).
  for (const [repo, words] of [["cut", /broke off|ended early/], ["corrupt", /not a usable model/]]) {
    const page = await open(ctxB, `${url}?hf_base=${encodeURIComponent(hfBase)}#model=hf%3Atiny%2F${repo}&prompt=w5`);
    await page.waitForSelector('[data-testid="error-message"]', { timeout: MODEL_TIMEOUT });
    const msg = await page.textContent('[data-testid="error-message"]');
    check(words.test(msg), `tiny/${repo}: the page says what went wrong: ${JSON.stringify(msg)}`);
    await page.selectOption('[data-testid="model-select"]', "gemma-3-270m");
    await waitReady(page);
    check(await page.isEnabled('[data-testid="run-button"]'), `after tiny/${repo} another model loads and Run is enabled`);
    await page.close();
  }
});

await scenario("local files by the picker", async () => {
  // 8. Local files by the file picker.
  const page = await open(ctxB, url);
  await waitReady(page);
  await page.setInputFiles('[data-testid="model-files"]', ["config.json", "tokenizer.json", "model.safetensors"].map((f) => join(tinyDir, f)));
  await page.waitForFunction(
    () => document.querySelector('[data-testid="model-status"]')?.textContent.includes("qwen3"),
    null,
    { timeout: MODEL_TIMEOUT },
  );
  await page.fill('[data-testid="prompt-input"]', TINY_PROMPT);
  await page.click('[data-testid="run-button"]');
  const rF = await results(page);
  check(rF.predicted === cliTiny.top[0].token && rF.singular.every((v, k) => relClose(v, rT.singular[k], 1e-12)),
    `local files: the same model, the same numbers (${JSON.stringify(rF.predicted)})`);
});

await scenario("a worker out of memory while loading", async () => {
  // 9. V8 lets this browser's wasm memories grow to 400 MiB only: Gemma's
  // 253 MB file and its copy into the model do not fit, and the worker dies
  // in the middle of loading it. The page says so once (it does not load
  // the same files into a fresh worker again, to die again), and stays
  // usable: a small model loads.
  const small = await launch({ args: ["--js-flags=--wasm-max-mem-pages=6400"] });
  const ctx = await small.newContext();
  const page = await open(ctx, url);
  await page.waitForSelector('[data-testid="error-message"]', { timeout: MODEL_TIMEOUT });
  const msg = await page.textContent('[data-testid="error-message"]');
  check(msg.includes("stopped while loading the model") && msg.includes("pick a smaller model"), `the page says what happened: ${JSON.stringify(msg.slice(0, 200))}`);
  await page.waitForTimeout(5000);
  const status = await page.textContent('[data-testid="model-status"]');
  check(status === "no model loaded" && (await page.textContent('[data-testid="error-message"]')) === msg,
    `no second try by itself: ${JSON.stringify(status)}`);
  await page.goto(`${url}?hf_base=${encodeURIComponent(hfBase)}#model=hf%3Atiny%2Fqwen3&prompt=${encodeURIComponent(TINY_PROMPT)}`);
  console.log(`status: ${await waitReady(page)}`);
  check((await page.textContent('[data-testid="model-status"]')).startsWith("ready"), "a small model loads in the same browser");
  await small.close();
});

await ctxB.close().catch(() => {});
await browser.close();
hub.close();

finish();
