// Linear Lens's service worker: the app's own files (html, js, wasm, css)
// kept in a versioned cache, so that a page that loaded once reloads with no
// network (a classroom with bad Wi-Fi). The model files are the engine
// worker's own cache (Cache Storage "linear-lens-models-v1"), not touched
// here, nor is anything from another origin.
//
// Files whose names carry trunk's content hash never change: the cache
// first. The rest (the page, the worker's files) from the network first, so
// a new site version is seen at once, else from the cache. Each build stamps
// VERSION with a hash of its files (tools/finish-build.py, trunk's
// post_build hook): a new version installs a fresh cache and deletes the old
// ones when it takes over.
const VERSION = "dev";
const PREFIX = "linear-lens-app-";
const CACHE = PREFIX + VERSION;
const HASHED = /-[0-9a-f]{16}(_bg)?\.(js|wasm|css)$/;

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      const page = await fetch("./", { cache: "no-cache" });
      const html = await page.clone().text();
      await cache.put("./", page);
      // What index.html names (trunk's hashed files) and the engine worker's
      // two builds (the page starts the one this browser validates).
      const files = new Set(["worker", "worker_fma"].flatMap((w) => [`./${w}_loader.js`, `./${w}.js`, `./${w}_bg.wasm`]));
      for (const m of html.matchAll(/["'](\.\/[A-Za-z0-9_.-]+\.(?:js|wasm|css))["']/g)) files.add(m[1]);
      await cache.addAll([...files]);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) {
        if (key.startsWith(PREFIX) && key !== CACHE) await caches.delete(key);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (req.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  if (url.pathname.startsWith(scope.pathname + "models/")) return;
  const navigate = req.mode === "navigate";
  // The page under one key, whatever the link's query.
  const key = navigate ? new URL("./", scope).href : req;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      if (!navigate && HASHED.test(url.pathname)) {
        const hit = await cache.match(key);
        if (hit) return hit;
      }
      try {
        const resp = await fetch(req);
        if (resp.ok) await cache.put(key, resp.clone());
        return resp;
      } catch (e) {
        const hit = await cache.match(key, { ignoreSearch: navigate });
        if (hit) return hit;
        throw e;
      }
    })(),
  );
});
