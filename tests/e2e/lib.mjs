// Shared by the browser end-to-end tests: Debian's headless Chromium driven
// by playwright-core, a check log, waiting for the model, the CLI whose
// numbers the page must match, and a stand-in for the Hugging Face hub.

import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
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
export function launch({ webgpu = false, args = [] } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", ...(webgpu ? ["--enable-unsafe-webgpu"] : []), ...args],
  });
}

export async function open(context, target, size = { width: 1280, height: 1000 }, before = null) {
  const page = await context.newPage();
  await page.setViewportSize(size);
  // Something to set on the fresh page before it loads (a CDP override).
  if (before) await before(page);
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    console.log(`console.error: ${m.text()}`);
    if (/Content Security Policy/i.test(m.text())) cspRefusals.push(m.text());
  });
  await page.goto(target);
  return page;
}

/// What the page's Content-Security-Policy refused, in every page `open`ed:
/// the suite fails at `finish` if anything was (the policy and the page
/// disagree).
const cspRefusals = [];

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

/// Types `word` after the prompt in the box, a key every `delay` ms, and
/// waits (no Run) until the strip shows `tokens` tokens, each with its
/// share, and a prediction: the seconds from the last key.
export async function typeAndWaitShares(page, word, tokens, delay = 40) {
  await page.click('[data-testid="prompt-input"]');
  await page.keyboard.press("End");
  await page.keyboard.type(word, { delay });
  const t0 = Date.now();
  await page.waitForFunction((n) => {
    const chips = [...document.querySelectorAll('[data-testid="tokens"] .strip-token')];
    return chips.length === n && chips.every((c) => c.dataset.attribution !== undefined) &&
      document.querySelector('[data-testid="predicted-token"]');
  }, tokens, { timeout: 120_000, polling: 10 });
  return (Date.now() - t0) / 1000;
}

/// A tool's `--key value` options after its URL (`process.argv[3..]`), over
/// `defaults` (the keys it knows); an unknown key or a missing value exits 2.
export function options(defaults) {
  const opts = { ...defaults };
  for (let i = 3; i < process.argv.length; i += 2) {
    const key = process.argv[i].replace(/^--/, "");
    if (!(key in opts) || process.argv[i + 1] === undefined) {
      console.error(`unknown option or missing value: ${process.argv[i]}`);
      process.exit(2);
    }
    opts[key] = process.argv[i + 1];
  }
  return opts;
}

export function finish() {
  check(cspRefusals.length === 0,
    `the Content-Security-Policy refused nothing the page does (${cspRefusals.length}: ${JSON.stringify(cspRefusals.slice(0, 2))})`);
  if (failures.length) {
    console.log(`browser: ${failures.length} check(s) failed`);
    process.exit(1);
  }
  console.log("browser: all checks passed");
}

/// What the CLI prints for `args`, parsed as JSON (the caller asks for
/// JSON: `predict … --json`, `analyze … --json -`).
export function cliJson(bin, args) {
  return JSON.parse(execFileSync(bin, args, { encoding: "utf8", maxBuffer: 1 << 28 }));
}

/// The CLI's analysis of `prompt` without the parts the page's checks do
/// not read (decoding, columns, attention; `extra` adds flags).
export function cliAnalyze(bin, model, prompt, precision, extra = []) {
  return cliJson(bin, ["analyze", "--model", model, "--prompt", prompt, "--precision", precision, "--decode", "0",
    "--columns", "0", "--no-attention", ...extra, "--json", "-"]);
}

/// A stand-in for huggingface.co on loopback: `/{owner}/{repo}/resolve/{revision}/{file}`
/// with the CORS headers the real one sends and byte ranges (`Range:
/// bytes=a-b` → 206), serving the files of `tinyDir` for `tiny/qwen3`, and
/// two broken repositories besides: `tiny/cut` drops the connection halfway
/// through the weights, `tiny/corrupt` serves garbage as the weights.
/// `extra` maps more paths (`/{owner}/{repo}/resolve/{revision}/{file}`) to
/// files on disk (real models; an `.html` file is served as a page), read
/// at each request. `faults[path]` queues faults for the next GETs of an
/// `extra` path, one each: `{ after: bytes, kind: "drop" | "stall" }` sends
/// that many bytes of the answer, then drops the connection or goes silent
/// with it open. Resolves to `{ base, requests, ranges, faults, close }`
/// (`ranges`: each request's path and Range header).
export async function hubStandIn(tinyDir, extra = {}) {
  const requests = [];
  const ranges = [];
  const faults = {};
  const server = createServer((req, res) => {
    requests.push(req.url);
    ranges.push({ url: req.url, range: req.headers.range ?? null });
    const headers = { "Access-Control-Allow-Origin": "*", "Cross-Origin-Resource-Policy": "cross-origin",
      "Access-Control-Expose-Headers": "Content-Length, Content-Range, ETag", "Accept-Ranges": "bytes" };
    if (extra[req.url]) {
      const size = statSync(extra[req.url]).size;
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      const [start, end] = range ? [Number(range[1]), range[2] ? Number(range[2]) : size - 1] : [0, size - 1];
      if (start > end || end >= size) {
        res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}` });
        return res.end();
      }
      const type = extra[req.url].endsWith(".html") ? "text/html; charset=utf-8" : "application/octet-stream";
      res.writeHead(range ? 206 : 200, { ...headers, "Content-Length": end - start + 1, "Content-Type": type,
        ...(range ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}) });
      if (req.method === "HEAD") return res.end();
      const stream = createReadStream(extra[req.url], { start, end });
      const fault = faults[req.url]?.shift();
      if (!fault) return stream.pipe(res);
      let sent = 0;
      stream.on("data", (chunk) => {
        const part = chunk.subarray(0, Math.max(0, fault.after - sent));
        sent += part.length;
        if (part.length < chunk.length) {
          stream.destroy();
          // Everything up to `after` reaches the client, then the fault.
          res.write(part, () => {
            if (fault.kind === "drop") res.socket.destroy();
            else setTimeout(() => res.destroy(), 300_000).unref();
          });
        } else if (!res.write(part)) {
          stream.pause();
          res.once("drain", () => stream.resume());
        }
      });
      return;
    }
    const m = req.url.match(/^\/tiny\/(qwen3|cut|corrupt)\/resolve\/main\/([A-Za-z0-9_.-]+)$/);
    const file = m && tinyDir && join(tinyDir, m[2]);
    if (!file || !existsSync(file)) {
      res.writeHead(404, headers);
      return res.end("not found");
    }
    let body = readFileSync(file);
    const weights = m[2] === "model.safetensors";
    if (weights && m[1] === "corrupt") body = Buffer.alloc(body.length, 0x7b);
    res.writeHead(200, { ...headers, "Content-Length": body.length, "Content-Type": "application/octet-stream" });
    if (weights && m[1] === "cut") {
      res.write(body.subarray(0, body.length >> 1));
      return setTimeout(() => res.destroy(), 100);
    }
    res.end(body);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { base: `http://127.0.0.1:${server.address().port}`, requests, ranges, faults,
    close: () => { server.closeAllConnections?.(); server.close(); } };
}

/// Runs one scenario of a suite: an exception fails it (recorded with its
/// name) and the suite goes on with the next.
/// One scenario, timed; `SCENARIO=text` runs only those whose name has it
/// (a developer's loop; CI runs them all).
export async function scenario(name, body) {
  if (process.env.SCENARIO && !name.includes(process.env.SCENARIO)) return;
  console.log(`\n-- ${name}`);
  const t0 = Date.now();
  try {
    await body();
  } catch (e) {
    failures.push(`${name}: ${e.message ?? e}`);
    console.log(`FAIL ${name}: ${e.message ?? e}`);
  }
  console.log(`   (${t(Date.now() - t0)})`);
}
