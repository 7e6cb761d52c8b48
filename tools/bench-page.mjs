// Time to each stage on the page, against the CLI's own times for the same
// work, in one run (issue 16). Prints one JSON object.
//
//   LINEAR_LENS_BIN=target/release/linear-lens node tools/bench-page.mjs URL \
//     [--model gemma-3-270m] [--prompt "The bridge out of Marin is the"] \
//     [--backend cpu|webgpu] [--precision f64|f32] [--threads 2] [--svd auto|full|krylov]
//
// tools/bench-page.sh serves the built page and runs this. The page opens a
// link that carries the analysis and runs it once the model is ready; seconds
// are from "ready" to the stage's element on screen (polled in the page every
// 20 ms); `workers` counts the Web Workers the page started. Ratios are to
// the CLI's full J (`bench`, the release build); a negative
// ordinary_after_full_j: it came first. Then, on the same page, a word is
// typed after the prompt: `live_s` is from the last key to the new
// prediction and shares on screen (no Run). The run is done again with the
// page seeing one core (one engine worker): `pool` is one worker's J against
// the pool's, and once more on the SIMD128 build (`?engine=simd128`: no fused
// multiply-add) against the build the page chose. `roofline` gives the J's
// GFLOP/s (the CLI's count of the pass's flops over the page's own J time,
// from its Report) beside the CLI's, and the browser's peak: the workers'
// micro-kernel on data in cache, each build (Request::Peaks).

import { readFileSync } from "node:fs";
import { cliJson, launch, options, typeAndWaitShares } from "../tests/e2e/lib.mjs";

const url = process.argv[2];
const bin = process.env.LINEAR_LENS_BIN;
if (!url || !bin) {
  console.error("usage: LINEAR_LENS_BIN=… node tools/bench-page.mjs URL [--model M] [--prompt P] [--backend cpu|webgpu] [--precision f64|f32] [--threads N] [--svd auto|full|krylov]");
  process.exit(2);
}
const opts = options({ model: "gemma-3-270m", prompt: "The bridge out of Marin is the", backend: "cpu", precision: "f64", threads: "2", svd: "auto" });
if (opts.backend === "webgpu") opts.precision = "f32"; // the GPU computes in f32

// What marks each stage on screen (the exactness figures are there from the
// start, as "…", and get their data-value when the stage arrives).
const MARKS = {
  prediction: '[data-testid="predicted-token"]',
  shares: '[data-testid="tokens"] .strip-token[data-attribution]',
  contributions: '[data-testid="recon-error-contributions"][data-value]',
  decoded_spectrum: '[data-testid="decode-row"]',
  full_j: '[data-testid="recon-error-detached"][data-value]',
  svd_every_j: '[data-testid="token-stable-rank"]',
  ordinary_error: '[data-testid="recon-error-ordinary"][data-value]',
};

const cli = (args) => cliJson(bin, args);

const browser = await launch({ webgpu: opts.backend === "webgpu" });
const LIVE_WORD = " today";

/// One visit: the link's run timed stage by stage, its Report's own times,
/// and (when `typing`) a word typed after the prompt timed to its shares.
async function visit({ cores = null, typing = false, build = null } = {}) {
  const context = await browser.newContext({ acceptDownloads: true });
  if (cores !== null) {
    await context.addInitScript((n) => Object.defineProperty(navigator, "hardwareConcurrency", { get: () => n }), cores);
}
const page = await context.newPage();
let workers = 0;
page.on("worker", () => workers++);
page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
// The link carries the analysis: the page runs it as soon as the model is
// ready, so the clock starts there (no click, no run of another prompt).
const link = `${url}${build ? `?engine=${build}` : ""}#model=${encodeURIComponent(opts.model)}&prompt=${encodeURIComponent(opts.prompt)}` +
  `&backend=${opts.backend}` + (opts.backend === "webgpu" ? "" : `&precision=${opts.precision}`) +
  (opts.svd === "auto" ? "" : `&svd=${opts.svd}`);
await page.goto(link);

// The clock runs in the page: "ready" and every sighting on one timeline.
const run = await page.evaluate(
  (marks) =>
    new Promise((resolve) => {
      const seen = {};
      let t0 = null;
      let idleSince = null;
      const tick = () => {
        const now = performance.now();
        const error = document.querySelector('[data-testid="error-message"]');
        if (t0 === null) {
          if (document.querySelector('[data-testid="model-status"]')?.textContent.startsWith("ready")) t0 = now;
          else if (error) return resolve({ seen, error: error.textContent, total: 0, ready: now });
          return setTimeout(tick, 20);
        }
        for (const [k, sel] of Object.entries(marks)) {
          if (!(k in seen) && document.querySelector(sel)) seen[k] = (now - t0) / 1000;
        }
        const busy = !!document.querySelector('[data-testid="progress"]');
        idleSince = busy || !("prediction" in seen) ? null : (idleSince ?? now);
        // Done: an error, or no progress bar for a second after the prediction
        // (a matrix-free run never shows the full J's marks).
        if (error || (idleSince !== null && now - idleSince >= 1000)) {
          resolve({ seen, error: error?.textContent ?? null, total: ((idleSince ?? now) - t0) / 1000, ready: t0 });
        } else setTimeout(tick, 20);
      };
      tick();
    }),
  MARKS,
);
// performance.now() counts from the navigation: "ready" is the model's load.
const loadS = run.ready / 1000;
const backendLabel = await page.textContent('[data-testid="backend-label"]').catch(() => null);
const engineBuild = await page.getAttribute('[data-testid="backend-label"]', "data-build").catch(() => null);
// The run's own reconstruction error: says which precision really ran.
const reconstruction = await page
  .getAttribute('[data-testid="recon-error-detached"]', "data-value")
  .then((v) => (v === null ? null : Number(v)))
  .catch(() => null);
if (run.error) {
  console.error(`the page's run failed: ${run.error}`);
  process.exit(1);
}
// The Report's own stage times (the J alone, without what came before it).
const [download] = await Promise.all([page.waitForEvent("download"), page.click('[data-testid="export-json"]')]);
const report = JSON.parse(readFileSync(await download.path(), "utf8"));
let live = null;
if (typing) {
  live = { s: await typeAndWaitShares(page, LIVE_WORD, cliLive.tokens.length, 60), tokens: cliLive.tokens.length };
}
// The kernel's peak in this browser: as many workers as the pool's, each
// timing its micro-kernel on data in cache at once (Request::Peaks), for
// each build; their sum is what the J's products could reach here.
const poolWorkers = workers; // before the peaks' own workers
const peaks = typing ? await page.evaluate(
  ({ n, budget }) => Promise.all(["worker", "worker_fma"].map((build) => Promise.all(Array.from({ length: n }, () =>
    new Promise((resolve) => {
      const w = new Worker(`./${build}_loader.js`);
      w.onmessage = (e) => {
        if (e.data?.type === "started") w.postMessage({ type: "peaks", job: 1, budget_ms: budget });
        else if (e.data?.type === "peaks") { w.terminate(); resolve(e.data.peaks); }
      };
      w.onerror = (e) => { e.preventDefault(); w.terminate(); resolve(null); };
    }))))),
  { n: Math.max(1, poolWorkers), budget: 400 },
) : null;
await context.close();
return { run, loadS, backendLabel, engineBuild, reconstruction, report, live, workers: poolWorkers, peaks };
}

// The typed prompt's prediction and shares by the CLI (the same extent).
const cliLive = cli(["analyze", "--model", opts.model, "--prompt", opts.prompt + LIVE_WORD, "--precision", opts.precision,
  "--extent", "shares", "--json", "-"]);
const main = await visit({ typing: true });
const single = opts.backend === "cpu" ? await visit({ cores: 1 }) : null;
// The same run on the SIMD128 build (no fused multiply-add).
const simd128 = opts.backend === "cpu" && main.engineBuild === "fma" ? await visit({ build: "simd128" }) : null;
await browser.close();
const { run, loadS, backendLabel, engineBuild, reconstruction, report, live, workers, peaks } = main;
// Summed over the pool's workers (each timed at once with the others).
const sum = (list, key) => (list && list.every((p) => p && p[key] != null) ? list.reduce((a, p) => a + p[key], 0) : null);
const [plainPeaks, fmaPeaks] = peaks ?? [null, null];
const browserPeak = {
  workers: plainPeaks?.length ?? null,
  f64_fma_gflops: sum(fmaPeaks, "f64_fma"),
  f64_plain_gflops: sum(plainPeaks, "f64_plain"),
  f32_fma_gflops: sum(fmaPeaks, "f32_fma"),
  f32_plain_gflops: sum(plainPeaks, "f32_plain"),
};

// The CLI on the same work, in the same run: every stage, and the full J alone.
const analyze = cli(["analyze", "--model", opts.model, "--prompt", opts.prompt, "--precision", opts.precision, "--json", "-",
  ...(opts.svd === "krylov" ? ["--matrix-free"] : [])]);
const bench = cli(["bench", "--model", opts.model, "--prompt", opts.prompt, "--precision", opts.precision, "--threads", opts.threads]);
const cliJ = bench.jacobian_ms / 1000;
const pageJ = report.timings_ms.jacobian / 1000;
const oneJ = single ? single.report.timings_ms.jacobian / 1000 : null;
const ratio = (s) => (s === undefined ? null : Number((s / cliJ).toFixed(2)));
const round = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v.toFixed(2))]));

console.log(JSON.stringify({
  model: opts.model,
  prompt: opts.prompt,
  tokens: analyze.tokens.length,
  backend: opts.backend,
  backend_label: backendLabel,
  precision: opts.precision,
  svd: opts.svd,
  reconstruction,
  workers,
  model_load_s: Number(loadS.toFixed(2)),
  page_s: round({ ...run.seen, idle: run.total }),
  report_ms: { forward: report.timings_ms.forward, shares: report.timings_ms.shares,
    contributions: report.timings_ms.contributions, jacobian: report.timings_ms.jacobian },
  live: live && {
    word: LIVE_WORD,
    tokens: live.tokens,
    after_last_key_s: Number(live.s.toFixed(2)),
    cli_ms: { forward: cliLive.timings_ms.forward, shares: cliLive.timings_ms.shares },
  },
  pool: single && {
    workers,
    one_worker_j_s: Number(oneJ.toFixed(2)),
    pool_j_s: Number(pageJ.toFixed(2)),
    speedup: Number((oneJ / pageJ).toFixed(2)),
  },
  engine_build: engineBuild,
  simd128_build: simd128 && {
    j_s: Number((simd128.report.timings_ms.jacobian / 1000).toFixed(2)),
    fma_speedup: Number((simd128.report.timings_ms.jacobian / 1000 / pageJ).toFixed(2)),
    reconstruction: simd128.reconstruction,
  },
  roofline: {
    jacobian_gflop: Number(bench.jacobian_gflop.toFixed(2)),
    page_gflops: Number((bench.jacobian_gflop / pageJ).toFixed(2)),
    browser_peak: Object.fromEntries(Object.entries(browserPeak).map(([k, v]) => [k, v === null ? null : Number(v.toFixed(2))])),
    page_of_peak: (() => {
      const peak = browserPeak[`${opts.precision}_${engineBuild === "fma" ? "fma" : "plain"}_gflops`];
      return peak ? Number((bench.jacobian_gflop / pageJ / peak).toFixed(2)) : null;
    })(),
    page_one_worker_gflops: oneJ && Number((bench.jacobian_gflop / oneJ).toFixed(2)),
    cli_gflops: Number(bench.jacobian_gflops.toFixed(2)),
    cli_gemm_peak_gflops: Number(bench.gemm_gflops.toFixed(2)),
  },
  cli: {
    binary: bin,
    profile: "release",
    threads: bench.threads,
    full_j_s: Number(cliJ.toFixed(2)),
    analyze_ms: analyze.timings_ms,
  },
  vs_cli_full_j: {
    decoded_spectrum: ratio(run.seen.decoded_spectrum),
    full_j: ratio(run.seen.full_j),
    j_alone: ratio(pageJ),
    ordinary_after_full_j: run.seen.ordinary_error !== undefined && run.seen.full_j !== undefined
      ? ratio(run.seen.ordinary_error - run.seen.full_j) : null,
  },
}, null, 2));
