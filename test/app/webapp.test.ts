/**
 * src/core/webapp.ts on its own, on real files in a temporary directory: a
 * page whose script does not build is answered 500 with the bundler's
 * message, and built at the next request once fixed; without the page's
 * files (neither sources nor a built page), 404 saying so.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebApp } from "../../src/core/webapp.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-webapp-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const get = (app: WebApp, path: string) => app.request(new Request(`http://127.0.0.1${path}`), path);

test("a script that does not build is a 500 naming the problem, and is built at the next request once fixed", async () => {
  writeFileSync(join(dir, "index.html"), "<!doctype html><script type=module src=app.js></script>");
  writeFileSync(join(dir, "style.css"), "body { margin: 0 }");
  writeFileSync(join(dir, "main.ts"), 'import { nothing } from "./missing.ts";\nconsole.log(nothing);\n');
  const app = new WebApp("", "https://media.example.com/base", dir);
  const bad = await get(app, "/app/app.js");
  expect(bad.status).toBe(500);
  expect(await bad.text()).toContain('Could not resolve: "./missing.ts"');
  writeFileSync(join(dir, "main.ts"), 'const n: number = 41;\nconsole.log("built", n + 1);\n');
  const good = await get(app, "/app/app.js");
  expect(good.status).toBe(200);
  // Attachments elsewhere (media.public_url): the page may fetch from that origin too, and only that one.
  expect(good.headers.get("content-security-policy")).toContain("connect-src 'self' ws: wss: blob: https://media.example.com;");
  expect(await good.text()).toContain("built");
  // The WebSocket path turned off (ws.http_path empty): the page is told there is none (it then names the flag).
  expect(await (await get(app, "/app/config.json")).json()).toEqual({ ws: null });
});

test("without the page's files, /app says where they were looked for", async () => {
  const app = new WebApp("/ws", "", join(dir, "absent"));
  const r = await get(app, "/app/");
  expect(r.status).toBe(404);
  expect(await r.text()).toContain(join(dir, "absent"));
});

test("a built page (the compiled binary's, tools/build-app.ts) is served as it is, before the sources", async () => {
  const built = join(dir, "built");
  mkdirSync(built, { recursive: true });
  writeFileSync(join(built, "index.html"), "<!doctype html><title>built</title>");
  writeFileSync(join(built, "style.css"), "p { color: red }");
  writeFileSync(join(built, "app.js"), 'import "./not-bundled.ts"; // served verbatim: bundling it would fail\n');
  const app = new WebApp("/ws", "", join(dir, "absent"), built);
  expect(await (await get(app, "/app/")).text()).toBe("<!doctype html><title>built</title>");
  const js = await get(app, "/app/app.js");
  expect({ status: js.status, text: await js.text() }).toEqual({ status: 200, text: 'import "./not-bundled.ts"; // served verbatim: bundling it would fail\n' });
});
