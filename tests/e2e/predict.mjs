// Browser end-to-end test of the page: load the default model, predict the
// next token after "The capital of France is", check the answer.
//
//   node tests/e2e/predict.mjs http://127.0.0.1:8080/ [screenshot.png]
//
// Needs Debian's /usr/bin/chromium (or $CHROMIUM) and playwright-core
// (`npm ci --prefix tests/e2e`). Prints what it saw; exits non-zero on failure.

import { chromium } from "playwright-core";

const url = process.argv[2];
const screenshot = process.argv[3] ?? process.env.SCREENSHOT;
if (!url) {
  console.error("usage: node tests/e2e/predict.mjs URL [screenshot.png]");
  process.exit(2);
}

const PROMPT = "The capital of France is";
// The CLI in f32: ' the' 0.191, ' a' 0.111, ' Paris' 0.084.
const EXPECTED = { " the": 0.191, " Paris": 0.084 };
const PROB_TOL = 0.01;
const LOAD_TIMEOUT_MS = 240_000;
const PREDICT_TIMEOUT_MS = 240_000;

const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--headless=new",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

let page;
try {
  page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") console.log(`console.${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));

  const t0 = Date.now();
  await page.goto(url);
  check((await page.title()) === "Linear Lens", "page title is Linear Lens");
  check(await page.evaluate(() => self.crossOriginIsolated === true), "page is cross-origin isolated (COOP/COEP)");

  // Model load: the progress bar ends in state "ready" (or an error shows).
  await page.waitForSelector('[data-testid="load-progress"][data-state="ready"], [data-testid="error"]', {
    timeout: LOAD_TIMEOUT_MS,
  });
  const loadError = await page.$('[data-testid="error"]');
  if (loadError) {
    check(false, `model loads (error: ${await loadError.innerText()})`);
    throw new Error("model did not load");
  }
  const loadMs = Number(await page.getAttribute('[data-testid="load-progress"]', "data-ms"));
  console.log(`model loaded: ${(loadMs / 1000).toFixed(2)} s in the page (${((Date.now() - t0) / 1000).toFixed(2)} s since navigation)`);
  console.log(`status: ${await page.innerText(".load-label")}`);

  const input = page.getByTestId("prompt-input");
  check((await input.inputValue()) === PROMPT, `prompt input defaults to "${PROMPT}"`);
  await input.fill(PROMPT);
  const button = page.getByTestId("predict-button");
  check(await button.isEnabled(), "Predict is enabled once the model is ready");

  // The "computing" state must reach a frame before the engine blocks the
  // main thread: record, in the page, an animation frame that had it.
  await page.evaluate(() => {
    const seen = (window.__lensComputing = { inDom: false, inFrame: false });
    const sel = '[data-testid="computing"]';
    new MutationObserver(() => {
      if (!seen.inDom && document.querySelector(sel)) {
        seen.inDom = true;
        requestAnimationFrame(() => (seen.inFrame = document.querySelector(sel) !== null));
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
  const t1 = Date.now();
  await button.click();
  await page.waitForSelector('[data-testid="prediction"], [data-testid="error"]', { timeout: PREDICT_TIMEOUT_MS });
  const predictError = await page.$('[data-testid="error"]');
  if (predictError) {
    check(false, `prediction succeeds (error: ${await predictError.innerText()})`);
    throw new Error("prediction failed");
  }
  const computing = await page.evaluate(() => window.__lensComputing);
  check(computing.inDom && computing.inFrame, `the computing state paints first (${JSON.stringify(computing)})`);
  const predictMs = Number(await page.getAttribute('[data-testid="prediction"]', "data-ms"));
  console.log(`predicted: ${(predictMs / 1000).toFixed(2)} s in the engine (${((Date.now() - t1) / 1000).toFixed(2)} s click to result)`);

  const tokens = await page.$$eval('[data-testid="tokens"] [data-token]', (els) => els.map((e) => e.dataset.token));
  console.log(`tokens (${tokens.length}): ${JSON.stringify(tokens)}`);
  check(tokens.length >= 5 && tokens.join("").includes("France"), "prompt tokens are shown");

  const rows = await page.$$eval('[data-testid="prediction"] [data-token]', (els) =>
    els.map((e) => ({ token: e.dataset.token, prob: Number(e.dataset.prob) })),
  );
  for (const r of rows) console.log(`  ${JSON.stringify(r.token).padEnd(12)} ${r.prob.toFixed(4)}`);
  check(rows.length === 5, "five next tokens");
  check(
    rows.every((r, i) => i === 0 || rows[i - 1].prob >= r.prob) && rows.reduce((s, r) => s + r.prob, 0) <= 1 + 1e-9,
    "probabilities are sorted and sum to at most 1",
  );
  check(rows[0]?.token === " the", `top token is " the" (got ${JSON.stringify(rows[0]?.token)})`);
  for (const [token, p] of Object.entries(EXPECTED)) {
    const row = rows.find((r) => r.token === token);
    check(row !== undefined && Math.abs(row.prob - p) <= PROB_TOL, `${JSON.stringify(token)} has p ≈ ${p} (got ${row?.prob})`);
  }
} catch (e) {
  if (!failures.length) failures.push(String(e));
  console.log(`FAIL ${e.message ?? e}`);
} finally {
  if (screenshot && page) {
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`screenshot: ${screenshot}`);
  }
  await browser.close();
}

if (failures.length) {
  console.log(`browser: ${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("browser: all checks passed");
