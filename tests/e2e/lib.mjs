// Shared by the browser end-to-end tests: Debian's headless Chromium driven
// by playwright-core, a check log, and waiting for the model.

import { chromium } from "playwright-core";

export const MODEL_TIMEOUT = 300_000;
export const RUN_TIMEOUT = 600_000;

export const failures = [];
export const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};
export const relClose = (a, b, tol) => Math.abs(a - b) <= tol * Math.abs(b);
export const t = (ms) => `${(ms / 1000).toFixed(1)} s`;

/// `webgpu: true` adds `--enable-unsafe-webgpu`, without which headless
/// Chromium offers no WebGPU adapter (with it: SwiftShader, on the CPU).
export function launch({ webgpu = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", ...(webgpu ? ["--enable-unsafe-webgpu"] : [])],
  });
}

export async function open(context, target, size = { width: 1280, height: 1000 }) {
  const page = await context.newPage();
  await page.setViewportSize(size);
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") console.log(`console.error: ${m.text()}`);
  });
  await page.goto(target);
  return page;
}

export async function waitReady(page) {
  await page.waitForFunction(
    () =>
      document.querySelector('[data-testid="model-status"]')?.textContent.startsWith("ready") ||
      document.querySelector('[data-testid="error-message"]'),
    null,
    { timeout: MODEL_TIMEOUT },
  );
  const err = await page.$('[data-testid="error-message"]');
  if (err) throw new Error(`the model did not load: ${await err.textContent()}`);
  return page.textContent('[data-testid="model-status"]');
}

/// Waits until nothing runs (no progress bar) and the run's last stage is in.
export async function waitIdle(page, testid) {
  await page.waitForFunction(
    (id) => (document.querySelector(`[data-testid="${id}"]`) || document.querySelector('[data-testid="error-message"]')) &&
      !document.querySelector('[data-testid="progress"]'),
    testid,
    { timeout: RUN_TIMEOUT },
  );
  const err = await page.$('[data-testid="error-message"]');
  if (err) throw new Error(`${testid}: ${await err.textContent()}`);
}

export function finish() {
  if (failures.length) {
    console.log(`browser: ${failures.length} check(s) failed`);
    process.exit(1);
  }
  console.log("browser: all checks passed");
}
