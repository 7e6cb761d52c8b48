// Where each thread's time goes while the page forms a full J (issue 30):
// a Chromium trace (the browser's own tracing, every thread of the tab: the
// main thread, the engine worker, the pool's helpers) from "ready" until the
// J's exactness figure is on screen, summed per thread: the busy share of
// the window, and the trace events that took the most time. Prints JSON.
//
//   node tools/trace-page.mjs URL [--model gemma-3-270m] [--prompt "…"] [--precision f64] [--out trace.json]
//
// Serve the built page first: linear-lens serve --port 0 --dist dist (it prints the URL).

import { writeFileSync } from "node:fs";
import { launch, options } from "../tests/e2e/lib.mjs";

const url = process.argv[2];
if (!url) {
  console.error('usage: node tools/trace-page.mjs URL [--model M] [--prompt P] [--precision f64|f32] [--out FILE]');
  process.exit(2);
}
const opts = options({ model: "gemma-3-270m", prompt: "The bridge out of Marin is the", precision: "f64", out: null });

const browser = await launch();
const context = await browser.newContext();
const page = await context.newPage();
// Loaded first, the run started by a click: the trace holds the run alone.
await page.goto(`${url}#model=${encodeURIComponent(opts.model)}&prompt=${encodeURIComponent(opts.prompt)}&backend=cpu&precision=${opts.precision}`);
await page.waitForFunction(() => document.querySelector('[data-testid="model-status"]')?.textContent.startsWith("ready"),
  null, { timeout: 300_000 });
// The link's own run first (the workers' code warmed up, the pool's model loaded).
await page.waitForSelector('[data-testid="recon-error-detached"][data-value]', { timeout: 600_000 });
await page.waitForFunction(() => !document.querySelector('[data-testid="progress"]'), null, { timeout: 600_000 });
await page.waitForTimeout(1000);
const categories = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "v8", "v8.execute",
  "blink", "ipc", "disabled-by-default-v8.gc"];
await browser.startTracing(page, { categories });
const t0 = await page.evaluate(() => performance.now());
await page.evaluate(() => document.querySelector('[data-testid="recon-error-detached"]').removeAttribute("data-value"));
await page.click('[data-testid="run-button"]');
await page.waitForSelector('[data-testid="recon-error-detached"][data-value]', { timeout: 600_000 });
const jS = (await page.evaluate(() => performance.now()) - t0) / 1000;
const buffer = await browser.stopTracing();
await browser.close();
if (opts.out) writeFileSync(opts.out, buffer);

const { traceEvents } = JSON.parse(buffer.toString("utf8"));
const names = new Map(); // "pid:tid" → thread name
for (const e of traceEvents) {
  if (e.ph === "M" && e.name === "thread_name") names.set(`${e.pid}:${e.tid}`, e.args.name);
}
// Each thread's complete events ('X'), nested ones counted once: a thread's
// busy time is the union of its top-level events; self time per name.
const threads = new Map();
for (const e of traceEvents) {
  if (e.ph !== "X" || !e.dur) continue;
  const key = `${e.pid}:${e.tid}`;
  if (!threads.has(key)) threads.set(key, []);
  threads.get(key).push(e);
}
let start = Infinity, end = -Infinity;
for (const list of threads.values()) for (const e of list) { start = Math.min(start, e.ts); end = Math.max(end, e.ts + e.dur); }
const windowUs = end - start;
const report = [];
for (const [key, list] of threads) {
  list.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
  let busy = 0, reach = -Infinity;
  const self = new Map();
  const stack = [];
  for (const e of list) {
    if (e.ts >= reach) { busy += e.dur; reach = e.ts + e.dur; } else if (e.ts + e.dur > reach) { busy += e.ts + e.dur - reach; reach = e.ts + e.dur; }
    while (stack.length && stack[stack.length - 1].ts + stack[stack.length - 1].dur <= e.ts) stack.pop();
    if (stack.length) {
      const parent = stack[stack.length - 1];
      self.set(parent.name, (self.get(parent.name) ?? 0) - Math.min(e.dur, parent.ts + parent.dur - e.ts));
    }
    self.set(e.name, (self.get(e.name) ?? 0) + e.dur);
    stack.push(e);
  }
  if (busy < 0.01 * windowUs) continue;
  report.push({
    thread: names.get(key) ?? key,
    busy_s: Number((busy / 1e6).toFixed(2)),
    busy_share: Number((busy / windowUs).toFixed(3)),
    top: [...self].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([n, us]) => [n, Number((us / 1e6).toFixed(2))]),
  });
}
report.sort((a, b) => b.busy_s - a.busy_s);
console.log(JSON.stringify({ model: opts.model, prompt: opts.prompt, precision: opts.precision, run_to_full_j_s: Number(jS.toFixed(2)),
  trace_window_s: Number((windowUs / 1e6).toFixed(2)), threads: report }, null, 1));
