// Browser end-to-end tests of the WebGPU backend, in Debian's headless
// Chromium with `--enable-unsafe-webgpu` (its adapter is SwiftShader: WebGPU
// emulated on the CPU, slow but exact enough to check):
//
//   LINEAR_LENS_BIN=target/release/linear-lens TINY_QWEN3_DIR=/tmp/tiny \
//     node tests/e2e/webgpu.mjs http://127.0.0.1:8080/ [screenshot-dir]
//
// 1. Gemma 3 270M with `backend=webgpu`: the footer says WebGPU, the run is
//    f32, the predicted token = the CLI's (f32), the reconstruction from the
//    GPU's contributions ≤ 1e-5, and the GPU-vs-f64 certificate ≤ 1e-4.
// 2. A tiny Qwen 3 (through the Hugging Face URL layout, from a local
//    server) on WebGPU: the full J arrives (σ of J_cat), reconstruction
//    ≤ 1e-5, σ1 = the CLI's (f64), the certificate in the Report export;
//    the J's GPU work (dispatches, passes, …) in the export and the footer.
// 3. `backend=cpu`: the footer says CPU, f64 exact, no certificate.
// 4. A browser without WebGPU (no flag): auto falls back to the CPU and says
//    why; `backend=webgpu` fails with a clear message.
// 5. The GPU device lost in the middle of a run: the run is done again on
//    the CPU, the page says why, the next run gets a new device.

import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { check, cliAnalyze, failures, finish, hubStandIn, launch, open, relClose, scenario, t, waitIdle, waitReady, MODEL_TIMEOUT, RUN_TIMEOUT } from "./lib.mjs";

const url = process.argv[2];
const shots = process.argv[3] ?? process.env.SCREENSHOT_DIR ?? "";
const bin = process.env.LINEAR_LENS_BIN;
const tinyDir = process.env.TINY_QWEN3_DIR;
if (!url || !bin || !tinyDir) {
  console.error("usage: LINEAR_LENS_BIN=… TINY_QWEN3_DIR=… node tests/e2e/webgpu.mjs URL [screenshot-dir]");
  process.exit(2);
}
if (shots) mkdirSync(shots, { recursive: true });

const MODEL = "gemma-3-270m";
// Two tokens (<bos> Paris): every check holds, and each pass on lavapipe
// (the CPU behind this machine's "GPU") costs ∝ n.
const PROMPT = "Paris";
const TINY = "hf%3Atiny%2Fqwen3";
const TINY_PROMPT = "w5 w17 w42 w8 w23";

const analyze = (model, prompt, precision) => cliAnalyze(bin, model, prompt, precision, ["--no-ordinary"]);
const attr = (page, testid, name) => page.getAttribute(`[data-testid="${testid}"]`, name);
const num = async (page, testid, name = "data-value") => Number(await attr(page, testid, name));
const label = (page) => page.textContent('[data-testid="backend-label"]');

// A stand-in for huggingface.co serving the tiny model (lib.mjs).
const hub = await hubStandIn(tinyDir);
const tinyLink = (extra) =>
  `${url}?hf_base=${encodeURIComponent(hub.base)}#model=${TINY}&prompt=${encodeURIComponent(TINY_PROMPT)}${extra}`;

/// Waits for the whole run (σ shown, nothing running) and reads what the
/// checks need.
async function runResults(page) {
  await waitReady(page);
  await waitIdle(page, "singular-values");
  const cert = await page.$('[data-testid="certificate"]');
  return {
    backend: await label(page),
    adapter: await attr(page, "backend-label", "data-adapter"),
    predicted: await page.textContent('[data-testid="predicted-token"]'),
    detached: await num(page, "recon-error-detached"),
    sigma: JSON.parse(await attr(page, "singular-values", "data-values")),
    cert: cert && {
      maxRel: Number(await cert.getAttribute("data-max-rel-error")),
      probes: Number(await cert.getAttribute("data-probes")),
      text: await cert.textContent(),
    },
  };
}

const gpu = await launch({ webgpu: true });
const plain = await launch();
await scenario("Gemma 3 270M on WebGPU", async () => {
  // 1. Gemma 3 270M on WebGPU.
  const cli = analyze(MODEL, PROMPT, "f32");
  // Its own browser: closing it ends the GPU process, and with it the
  // J's remaining work, which would otherwise queue ahead of the next case.
  const gpuG = await launch({ webgpu: true });
  const ctx = await gpuG.newContext();
  const t0 = Date.now();
  let page = await open(ctx, `${url}#model=${MODEL}&backend=webgpu&prompt=${encodeURIComponent(PROMPT)}`);
  check(await page.evaluate(async () => !!(await navigator.gpu?.requestAdapter())), "the browser offers a WebGPU adapter");
  // The subgroup variant of RMSNorm as a browser would get it (with the
  // `enable` directive naga lacks natively): Tint must compile it where the
  // adapter offers subgroups. wgpu 30's web backend does not pass the
  // feature on yet, so the page itself runs the plain kernel.
  const rmsSubgroups = readFileSync(new URL("../../crates/lens-gpu/src/shaders/rms_subgroups.wgsl", import.meta.url), "utf8");
  const tint = await page.evaluate(async (src) => {
    const a = await navigator.gpu.requestAdapter();
    if (!a.features.has("subgroups")) return null;
    const d = await a.requestDevice({ requiredFeatures: ["subgroups"] });
    const m = d.createShaderModule({ code: "enable subgroups;\n" + src });
    return (await m.getCompilationInfo()).messages.map((x) => `${x.type}: ${x.message}`);
  }, rmsSubgroups);
  if (tint === null) console.log("this adapter offers no subgroups: the subgroup RMSNorm is not compiled here");
  else check(tint.length === 0, `Tint compiles the subgroup RMSNorm with 'enable subgroups' (${JSON.stringify(tint)})`);
  check((await page.inputValue('[data-testid="backend-select"]')) === "webgpu", "backend select: webgpu from the link");
  check((await page.inputValue('[data-testid="precision-select"]')) === "f32" && (await page.isDisabled('[data-testid="precision-select"]')) &&
    !!(await page.$('[data-testid="backend-precision-note"]')), "WebGPU: the precision is f32, fixed, and the page says so");
  // The full J of Gemma on SwiftShader (~340 GFLOP at ~1 GFLOP/s) would
  // take minutes: the checks use what comes before it, the prediction, the
  // contributions' reconstruction and the certificate from the GPU's
  // transpose pass on random probes.
  await waitReady(page);
  await page.waitForFunction(
    () => (document.querySelector('[data-testid="certificate"]') &&
      document.querySelector('[data-testid="recon-error-contributions"]')?.getAttribute("data-value")) ||
      document.querySelector('[data-testid="error-message"]'),
    null, { timeout: RUN_TIMEOUT });
  const err = await page.$('[data-testid="error-message"]');
  if (err) throw new Error(`Gemma on WebGPU: ${await err.textContent()}`);
  const cert = await page.$('[data-testid="certificate"]');
  let r = {
    backend: await label(page),
    adapter: await attr(page, "backend-label", "data-adapter"),
    predicted: await page.textContent('[data-testid="predicted-token"]'),
    contributions: await num(page, "recon-error-contributions"),
    cert: { maxRel: Number(await cert.getAttribute("data-max-rel-error")), probes: Number(await cert.getAttribute("data-probes")), text: await cert.textContent() },
  };
  console.log(`Gemma 3 270M on WebGPU: prediction, contributions and certificate in ${t(Date.now() - t0)} (adapter ${JSON.stringify(r.adapter)})`);
  check(r.backend === "WebGPU", `footer: backend-label ${JSON.stringify(r.backend)} = "WebGPU"`);
  check((await page.textContent("footer")).includes("WebGPU") && !(await page.textContent("footer")).includes("WebAssembly"),
    "footer: says WebGPU, not WebAssembly");
  check(r.predicted === cli.top[0].token, `predicted ${JSON.stringify(r.predicted)} = CLI (f32) ${JSON.stringify(cli.top[0].token)}`);
  check(r.contributions <= 1e-5, `reconstruction Σ J_i x_i (GPU contributions, f32) ${r.contributions.toExponential(2)} ≤ 1e-5`);
  check(r.cert.probes > 0 && r.cert.maxRel <= 1e-4,
    `certificate: ${r.cert.probes} probes, max relative error ${r.cert.maxRel.toExponential(2)} ≤ 1e-4 (${JSON.stringify(r.cert.text)})`);
  check(!(await page.$('[data-testid="backend-fallback"]')), "no fallback note");
  const share = await attr(page, "share-link", "href");
  check(share.includes("backend=webgpu"), `share link keeps the backend: ${share}`);
  if (shots) await page.screenshot({ path: join(shots, "webgpu-gemma.png"), fullPage: true });
  await ctx.close();
  await gpuG.close();
});

await scenario("a tiny Qwen 3 on WebGPU, then on the CPU", async () => {
  // 2. A tiny Qwen 3 on WebGPU: the full J.
  const cliTiny = analyze(tinyDir, TINY_PROMPT, "f64");
  const ctxT = await gpu.newContext({ acceptDownloads: true });
  let page = await open(ctxT, tinyLink("&backend=webgpu"));
  let r = await runResults(page);
  check(r.backend === "WebGPU", `tiny Qwen 3: backend-label ${JSON.stringify(r.backend)} = "WebGPU"`);
  // A random model's top two logits can be all but tied: then f32 may pick
  // either.
  const [a, b] = cliTiny.top;
  const tied = b && Math.abs(a.logit - b.logit) <= 1e-4 * Math.abs(a.logit);
  check(r.predicted === a.token || (tied && r.predicted === b.token),
    `tiny Qwen 3: predicted ${JSON.stringify(r.predicted)} = CLI ${JSON.stringify(a.token)}${tied ? ` (or ${JSON.stringify(b.token)}, tied)` : ""}`);
  check(r.sigma.length > 0 && relClose(r.sigma[0], cliTiny.svd.concat.singular_values[0], 1e-4),
    `tiny Qwen 3: the full J arrives, ${r.sigma.length} σ, σ1 ${r.sigma[0]?.toFixed(6)} = CLI's (f64) to 1e-4`);
  check(r.detached <= 1e-5, `tiny Qwen 3: detached reconstruction ${r.detached.toExponential(2)} ≤ 1e-5`);
  check(!!r.cert && r.cert.maxRel <= 1e-4, `tiny Qwen 3: certificate ${r.cert?.maxRel.toExponential(2)} ≤ 1e-4`);
  const [d] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click('[data-testid="export-json"]')]);
  const rep = JSON.parse(readFileSync(await d.path(), "utf8"));
  const rc = rep.reconstruction?.certificate;
  check(rep.precision === "f32" && !!rc && rc.max_rel_error === r.cert?.maxRel && rc.probes === r.cert?.probes,
    `export: the Report (${rep.precision}) carries the certificate (${JSON.stringify(rc)})`);
  // The engine details: what forming J asked of the GPU, as the Report has it.
  const work = rep.gpu_work;
  const shown = await page.$$eval('[data-testid="gpu-work"] tr', (rows) =>
    Object.fromEntries(rows.map((tr) => [tr.dataset.what, tr.querySelector("td").textContent])));
  check(!!work && work.dispatches > 0 && work.submits > 0 && work.compute_passes > 0 && work.bytes_read_back > 0,
    `export: the J's GPU work ${JSON.stringify(work)}`);
  check(shown.dispatches === String(work?.dispatches) && shown["buffers created"] === String(work?.buffers_created) &&
    shown["bind groups created"] === String(work?.bind_groups_created),
    `footer: the GPU work for J as exported (${JSON.stringify(shown)})`);
  check(work.compute_passes <= work.submits + 1 && work.dispatches >= 4 * work.compute_passes,
    `one compute pass holds a run of dispatches (${work.dispatches} dispatches in ${work.compute_passes} passes)`);
  if (shots) await page.screenshot({ path: join(shots, "webgpu-tiny-qwen3.png"), fullPage: true });
  await page.close();

  // 3. backend=cpu in the same browser: the CPU, f64 exact, no certificate.
  page = await open(ctxT, tinyLink("&backend=cpu&precision=f64"));
  r = await runResults(page);
  check(r.backend === "CPU", `backend=cpu: backend-label ${JSON.stringify(r.backend)} = "CPU"`);
  check((await page.textContent("footer")).includes("WebAssembly"), "backend=cpu: the footer says WebAssembly");
  check(r.detached <= 1e-13 && !r.cert, `backend=cpu: f64 reconstruction ${r.detached.toExponential(2)} ≤ 1e-13, no certificate`);
  check(await page.isEnabled('[data-testid="precision-select"]'), "backend=cpu: the precision select is enabled");
  await ctxT.close();
});

await scenario("the GPU lost in the middle of a run", async () => {
  // 5. The device lost mid-run: the worker's script is served with a few
  // lines in front that destroy its GPUDevice at the run's second readback
  // (after the prediction is on screen), as a driver reset or a GPU process
  // crash would. The run is done again on the CPU, the page says why, and
  // the next run asks for a new device and gets the GPU back.
  const cliTiny = analyze(tinyDir, TINY_PROMPT, "f64");
  // No service worker: it would answer for the worker's script itself.
  const ctxL = await gpu.newContext({ serviceWorkers: "block" });
  const PATCH = `(() => {
    let device = null, reads = 0;
    const request = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (...a) { device = await request.apply(this, a); return device; };
    const map = GPUBuffer.prototype.mapAsync;
    GPUBuffer.prototype.mapAsync = function (...a) {
      if (++reads === 2 && device) { console.log("test: destroying the GPU device"); device.destroy(); }
      return map.apply(this, a);
    };
  })();\n`;
  let patched = 0;
  await ctxL.route(/\/worker(_fma)?\.js(\?.*)?$/, async (route) => {
    const resp = await route.fetch();
    patched++;
    await route.fulfill({ response: resp, body: PATCH + (await resp.text()) });
  });
  const page = await open(ctxL, tinyLink("&backend=webgpu"));
  const r = await runResults(page);
  check(patched >= 1, `the worker's script was served with the patch (${patched}×)`);
  const fallback = (await page.$('[data-testid="backend-fallback"]')) ? await page.textContent('[data-testid="backend-fallback"]') : "";
  check(r.backend === "CPU" && /GPU device was destroyed in the middle of the run/.test(fallback),
    `the run finished on the CPU and says why: ${r.backend}, ${JSON.stringify(fallback)}`);
  const note = (await page.textContent('[data-testid="load-note"]').catch(() => "")) ?? "";
  check(note.includes("done again on the CPU"), `a notice while it happens: ${JSON.stringify(note)}`);
  check(!(await page.$('[data-testid="error-message"]')), "no error shown");
  // backend=webgpu asks for f32: the CPU computes the run in f32 too.
  check(relClose(r.sigma[0], cliTiny.svd.concat.singular_values[0], 1e-4) && r.detached <= 1e-5,
    `the CPU's f32 numbers: σ1 ${r.sigma[0]?.toFixed(6)} = CLI's (f64) to 1e-4, reconstruction ${r.detached.toExponential(1)}`);
  // The next run gets a new device.
  await page.fill('[data-testid="prompt-input"]', "w5 w17 w42");
  await page.click('[data-testid="run-button"]');
  await page.waitForFunction(() => document.querySelector('[data-testid="backend-label"]')?.textContent === "WebGPU", null, { timeout: RUN_TIMEOUT });
  const again = await runResults(page);
  check(again.backend === "WebGPU", `the next run is on the GPU again (${again.backend})`);
  await ctxL.close();
});

await scenario("no WebGPU in the browser", async () => {
  // 4. No WebGPU in the browser: auto falls back and says why; webgpu fails
  // with a message.
  const ctxP = await plain.newContext();
  let page = await open(ctxP, tinyLink("&precision=f64"));
  const r = await runResults(page);
  const note = await page.$('[data-testid="backend-fallback"]');
  const noteText = note ? await note.$eval(".message-text", (e) => e.textContent) : "";
  const noteDetails = note ? await note.$eval("details", (e) => e.textContent).catch(() => "") : "";
  check(r.backend === "CPU" && noteText.includes("computes on the processor") && noteDetails.includes("WebGPU unavailable"),
    `no WebGPU, auto: on the CPU, and the page says so, the reason in its details (${JSON.stringify(noteText)})`);
  check(!!(await attr(page, "backend-label", "title")), "no WebGPU, auto: the label's title gives the reason");
  await page.close();
  page = await open(ctxP, tinyLink("&backend=webgpu"));
  // The model loads, then the run fails: wait for the message alone.
  await page.waitForSelector('[data-testid="error-message"]', { timeout: MODEL_TIMEOUT + RUN_TIMEOUT });
  const msg = await page.textContent('[data-testid="error-message"]');
  check(/webgpu/i.test(msg), `no WebGPU, backend=webgpu: the run fails with a message (${JSON.stringify(msg)})`);
  await ctxP.close();
});

await gpu.close();
await plain.close();
hub.close();
finish();
