// Browser end-to-end test of the comparison (issue 29): on Gemma 3 270M in
// f64, a run pinned as A, one word changed and run as B; the page's shares,
// logit change and principal angles = the CLI's `compare --json` to 1e-9;
// screenshots at a projector's 1280×720 and a phone's 390×844 with nothing
// wider than the screen; then SmolLM2 picked while A stays pinned, B on it
// (two tokenizers, aligned by characters) = `compare --model-b`; that
// embed link (both prompts, both models, both snapshots) in a fresh profile
// inside another origin's iframe: A on Gemma, then B on SmolLM2, both
// snapshots confirmed; another target on a tiny model = `--target id:N`.
//
//   LINEAR_LENS_BIN=target/release/linear-lens \
//     node tests/e2e/compare.mjs http://127.0.0.1:8080/ [screenshot-dir]

import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { check, cliJson, finish, hubStandIn, launch, open, relClose, scenario, t, waitIdle, waitReady, RUN_TIMEOUT } from "./lib.mjs";

const url = process.argv[2];
const shots = process.argv[3] ?? process.env.SCREENSHOT_DIR ?? "";
const bin = process.env.LINEAR_LENS_BIN;
if (!url || !bin) {
  console.error("usage: LINEAR_LENS_BIN=… node tests/e2e/compare.mjs URL [screenshot-dir]");
  process.exit(2);
}
if (shots) mkdirSync(shots, { recursive: true });

const MODEL = "gemma-3-270m";
// Two tokens each (BOS + the word): a substitution, and each pass costs ∝ n.
const A = "Paris";
const B = "Rome";
const LAYERS = "3,6";
const PROJECTOR = { width: 1280, height: 720 };
const PHONE = { width: 390, height: 844 };

const MODEL_B = "smollm2-135m";
const cliCompare = (extra) => cliJson(bin, ["compare", "--model", MODEL, "--prompt", A, "--precision", "f64", "--layers", LAYERS, ...extra, "--json", "-"]).comparison;
// One model, one word changed; two models, one sentence.
const oneModel = cliCompare(["--prompt-b", B]);
const twoModels = cliCompare(["--prompt-b", A, "--model-b", MODEL_B]);

/// The comparison as the page shows it.
async function shown(target) {
  const view = await target.waitForSelector('[data-testid="view-compare"][data-sum-rel-error]', { timeout: RUN_TIMEOUT });
  const rows = await target.$$eval('[data-testid="compare-row"]', (els) => els.map((e) => ({
    op: e.dataset.op, a: e.dataset.a, b: e.dataset.b,
    shareA: e.dataset.shareA === "" ? null : Number(e.dataset.shareA),
    shareB: e.dataset.shareB === "" ? null : Number(e.dataset.shareB),
    change: Number(e.dataset.change),
  })));
  const angles = JSON.parse((await view.getAttribute("data-angles")) || "null");
  return {
    rows, angles,
    logitChange: Number(await view.getAttribute("data-logit-change")),
    sumRelError: Number(await view.getAttribute("data-sum-rel-error")),
    shared: JSON.parse(await target.getAttribute('[data-testid="compare-words"]', "data-shared")),
  };
}

/// The page's comparison against the CLI's (`want`).
function sameAsCli(p, want, where) {
  const close = (x, y) => (x === null && y === null) || (x !== null && y !== null && Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y)));
  const ops = want.alignment.map((r) => r.op);
  check(p.rows.length === want.shares.length && p.rows.every((r, i) => r.op === ops[i]),
    `${where}: the alignment = the CLI's (${p.rows.map((r) => `${r.op}:${JSON.stringify(r.a)}→${JSON.stringify(r.b)}`).join(", ")})`);
  check(p.rows.every((r, i) => close(r.shareA, want.shares[i].share_a) && close(r.shareB, want.shares[i].share_b) && close(r.change, want.shares[i].change)),
    `${where}: every aligned token's share in A and in B = the CLI's to 1e-9`);
  check(relClose(p.logitChange, want.logit_change, 1e-9) && p.sumRelError <= 1e-10,
    `${where}: the logit's change ${p.logitChange.toFixed(6)} = the CLI's, the shares' changes sum to it (${p.sumRelError.toExponential(1)} ≤ 1e-10)`);
  if (want.principal_angles === null) {
    check(p.angles === null, `${where}: two models, no principal angles (as the CLI)`);
  } else {
    check(Array.isArray(p.angles) && p.angles.length === want.principal_angles.length && p.angles.every((a, k) => Math.abs(a - want.principal_angles[k]) <= 1e-9),
      `${where}: ${p.angles?.length} principal angles = the CLI's to 1e-9 (${p.angles?.map((a) => (a * 180 / Math.PI).toFixed(1)).join("°, ")}°)`);
  }
  check(JSON.stringify(p.shared) === JSON.stringify(want.shared_words), `${where}: the shared words = the CLI's (${p.shared.slice(0, 5).join(" ")})`);
}

const browser = await launch();
let embedLink = "";

await scenario("pin A, change one word, run B: the comparison = the CLI's", async () => {
  const ctx = await browser.newContext({ acceptDownloads: true });
  const t0 = Date.now();
  const page = await open(ctx, `${url}#model=${MODEL}&prompt=${encodeURIComponent(A)}&precision=f64&layers=${LAYERS}`, PROJECTOR);
  await waitReady(page);
  await waitIdle(page, "layer-point");
  await page.click('[data-testid="compare-button"]');
  await page.waitForFunction(() => document.querySelector('[data-testid="compare-hint"]')?.textContent.startsWith("A is pinned"), null, { timeout: 30_000 });
  const hint = await page.textContent('[data-testid="compare-hint"]');
  check(hint.includes(A) && (await page.textContent('[data-testid="run-button"]')).includes("Run B") && page.url().includes("a_prompt="),
    `A pinned: the page says so, Run becomes "Run B", the link carries A (${JSON.stringify(hint.slice(0, 60))})`);
  await page.fill('[data-testid="prompt-input"]', B);
  const tb = Date.now();
  await page.click('[data-testid="run-button"]');
  const p = await shown(page);
  await waitIdle(page, "view-compare");
  console.log(`A and its layers in ${t(tb - t0)}; B and the comparison in ${t(Date.now() - tb)}`);
  sameAsCli(p, oneModel, "page");
  const flipped = await page.getAttribute('[data-testid="compare-prediction"]', "data-flipped");
  check(flipped === String(oneModel.prediction.flipped), `the prediction's flip = the CLI's (${flipped})`);
  const curves = await page.$$eval('[data-testid="compare-layers"] circle', (els) => els.length);
  check(curves === oneModel.layers.a.length + oneModel.layers.b.length, `both layer curves drawn on the depth axis (${curves} points)`);

  for (const [name, size] of [["projector", PROJECTOR], ["phone", PHONE]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(300);
    const fit = await page.evaluate(() => {
      const v = document.querySelector('[data-testid="view-compare"]').getBoundingClientRect();
      return { right: v.right, width: innerWidth, page: document.documentElement.scrollWidth };
    });
    check(fit.right <= fit.width + 1 && fit.page <= fit.width + 1, `${name} ${size.width}×${size.height}: the comparison fits the screen's width (${JSON.stringify(fit)})`);
    if (shots) await (await page.$("#view-compare")).screenshot({ path: join(shots, `compare-${name}.png`) });
  }
  await page.setViewportSize(PROJECTOR);

  // The exports of the compare view: the CLI's JSON document, and a CSV.
  await page.click('[data-testid="view-tab-compare"]');
  const saved = async (testid) => {
    const [d] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click(`[data-testid="${testid}"]`)]);
    return [d.suggestedFilename(), readFileSync(await d.path(), "utf8")];
  };
  const [jsonName, jsonText] = await saved("export-json");
  const doc = JSON.parse(jsonText);
  const [csvName, csvText] = await saved("export-csv");
  const csvRows = csvText.trim().split("\n");
  check(jsonName === "linear-lens-comparison.json" && doc.a?.tokens && doc.b?.tokens &&
    doc.comparison.shares.every((r, i) => Math.abs(r.change - oneModel.shares[i].change) <= 1e-12 * Math.max(1, Math.abs(r.change))) &&
    csvName === "linear-lens-compare.csv" && csvRows.length === 1 + oneModel.shares.length && csvRows[0].startsWith("a_token,b_token,op"),
    `export: ${jsonName} is {a, b, comparison} as the CLI writes it; ${csvName} has a row per aligned token`);

  // Two models on one sentence: another model picked while A is pinned;
  // B runs there, aligned by characters, its layers at A's depths.
  await page.selectOption('[data-testid="model-select"]', MODEL_B);
  await page.waitForFunction(() => /^ready: SmolLM2/.test(document.querySelector('[data-testid="model-status"]')?.textContent ?? ""), null, { timeout: RUN_TIMEOUT });
  check(page.url().includes("a_model=gemma-3-270m") && !!(await page.$('[data-testid="compare-hint"]')),
    "another model picked: A stays pinned, the link names A's model");
  await page.fill('[data-testid="prompt-input"]', A);
  await page.click('[data-testid="run-button"]');
  await page.waitForSelector('[data-testid="view-compare"][data-same-model="false"]', { timeout: RUN_TIMEOUT });
  const two = await shown(page);
  await waitIdle(page, "view-compare");
  sameAsCli(two, twoModels, "two models");
  const layersB = await page.$$eval('[data-testid="compare-layers"] circle', (els) => els.length);
  check(layersB === twoModels.layers.a.length + twoModels.layers.b.length, `two models: both layer curves on the depth axis (${layersB} points)`);
  if (shots) await (await page.$("#view-compare")).screenshot({ path: join(shots, "compare-two-models.png") });
  await page.click('[data-testid="view-tab-compare"]');
  embedLink = await page.getAttribute('[data-testid="embed-link"]', "href");
  check(/[#&]a_prompt=/.test(embedLink) && /[#&]a_model=/.test(embedLink) && /[#&]a_snap=/.test(embedLink) && /[#&]snap=/.test(embedLink) && embedLink.includes("embed=compare"),
    `the embed link carries both prompts, both models and both snapshots (${embedLink.length} characters)`);

  // Clear A: one analysis again, the link without A.
  await page.click('[data-testid="compare-clear"]');
  await page.waitForSelector('[data-testid="compare-button"]', { timeout: 5000 });
  check(!page.url().includes("a_prompt="), "Clear A: the page and its link hold one analysis again");
  await ctx.close();
});

await scenario("the two-model embed link in a fresh profile, in another origin's iframe", async () => {
  const dir = mkdtempSync(join(tmpdir(), "compare-post-"));
  const post = join(dir, "post.html");
  writeFileSync(post, `<!doctype html><title>slides</title><iframe src="${embedLink}" width="1000" height="700"></iframe>`);
  const other = await hubStandIn(null, { "/post.html": post });
  const ctx = await browser.newContext();
  const page = await open(ctx, `${other.base}/post.html`, PROJECTOR);
  const frame = page.frameLocator("iframe");
  await frame.locator('[data-testid="compare-snapshot-a"]').waitFor({ timeout: 60_000 });
  const f = page.frames().find((x) => x.url().startsWith(url));
  await f.waitForSelector('[data-testid="view-compare"][data-same-model="false"]', { timeout: RUN_TIMEOUT });
  const p = await shown(f);
  sameAsCli(p, twoModels, "embed");
  await f.waitForFunction(() => document.querySelector('[data-testid="snapshot"]')?.dataset.state !== "pending", null, { timeout: RUN_TIMEOUT });
  const [stateA, stateB] = [await f.getAttribute('[data-testid="compare-snapshot-a"]', "data-state"), await f.getAttribute('[data-testid="snapshot"]', "data-state")];
  check(stateA === "confirmed" && stateB === "confirmed" && !(await f.$('[data-testid="prompt-input"]')),
    `embed: the comparison alone in ${other.base}'s iframe, A's and B's snapshots confirmed (${stateA}, ${stateB})`);
  if (shots) await page.screenshot({ path: join(shots, "compare-embed.png") });
  other.close();
  await ctx.close();
});

await scenario("another target on a tiny Qwen 3: A and B run again for it, = the CLI's", async () => {
  // A comparison link on a tiny random Qwen 3 (the hub stand-in): A, then
  // B; then another of A's top tokens picked as the target: both sides
  // attribute it, as `compare --target id:N` does.
  const tinyDir = process.env.TINY_QWEN3_DIR;
  if (!tinyDir) return check(false, "TINY_QWEN3_DIR names the tiny model");
  const hub = await hubStandIn(tinyDir);
  const [ta, tb] = ["w5 w17 w42 w8", "w5 w17 w9 w8 w23"];
  const ctx = await browser.newContext();
  const page = await open(ctx, `${url}?hf_base=${encodeURIComponent(hub.base)}#model=hf%3Atiny%2Fqwen3&prompt=${encodeURIComponent(tb)}` +
    `&a_prompt=${encodeURIComponent(ta)}&precision=f64&view=compare`, PROJECTOR);
  await waitReady(page);
  const first = await shown(page);
  await waitIdle(page, "view-compare");
  const options = await page.$$eval('[data-testid="compare-target"] option', (os) => os.map((o) => [o.value, o.selected]));
  const other = options.find(([, selected]) => !selected)?.[0];
  await page.selectOption('[data-testid="compare-target"]', other);
  await page.waitForFunction((v) => document.querySelector('[data-testid="compare-target"]')?.value === v &&
    document.querySelector('[data-testid="view-compare"][data-sum-rel-error]'), other, { timeout: RUN_TIMEOUT });
  const p = await shown(page);
  const cliT = cliJson(bin, ["compare", "--model", tinyDir, "--prompt", ta, "--prompt-b", tb, "--precision", "f64", "--target", `id:${other}`, "--json", "-"]).comparison;
  const ops = cliT.alignment.map((r) => r.op);
  check(first.rows.some((r) => r.op === "insert") && p.rows.every((r, i) => r.op === ops[i]) && cliT.target.id === Number(other) &&
    p.rows.every((r, i) => Math.abs(r.change - cliT.shares[i].change) <= 1e-9 * Math.max(1, Math.abs(cliT.shares[i].change))) &&
    relClose(p.logitChange, cliT.logit_change, 1e-9) && page.url().includes(`target=id%3A${other}`),
    `another target (id ${other}): the page's shares and logit change ${p.logitChange.toFixed(4)} = compare --target id:${other}'s, the link names it`);
  hub.close();
  await ctx.close();
});

await browser.close();
finish();
