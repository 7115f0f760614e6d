/**
 * The web client at /app (web/app/, served by src/core/webapp.ts): a real
 * server process with the WebSocket transport on its HTTP port (/ws), and
 * headless Chromium (Debian's chromium) using the page as a person would:
 * typing into its fields and clicking its buttons. Screenshots go to
 * test-artefacts/app-*.png.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { writeKeyFile, type KeyFile } from "../../src/client/keys.ts";
import { launchChromium } from "../helpers/chromium.ts";
import { MAIN, ROOT, startServer, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";

const ARTEFACTS = join(ROOT, "test-artefacts");

let srv: TestServer;
let browser: Browser;
let app: string;

beforeAll(async () => {
  browser = await launchChromium();
  srv = await startServer({ args: ["--ws-http-path", "/ws"] });
  app = `http://127.0.0.1:${srv.http}/app/`;
  mkdirSync(ARTEFACTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  srv?.cleanup();
});

/** A fresh browser profile (its own IndexedDB) on /app, with the page's console and errors kept for failure messages. */
async function openApp(): Promise<{ tab: Page; logs: string[]; close(): Promise<void> }> {
  const ctx = await browser.newContext();
  const tab = await ctx.newPage();
  const logs: string[] = [];
  tab.on("console", (m) => logs.push(m.text()));
  tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await tab.goto(app);
  return { tab, logs, close: () => ctx.close() };
}

/** Waits for the status line to say `text`; on failure, says what it said and what the page logged. */
async function statusSays(tab: Page, logs: string[], text: string): Promise<void> {
  try {
    // Runs in the page (the test's own tsconfig has no DOM types).
    await tab.waitForFunction((t) => (globalThis as any).document.getElementById("status")?.textContent?.includes(t) ?? false, text, { timeout: 20_000 });
  } catch {
    throw new Error(`the status line did not say ${JSON.stringify(text)}: it says ${JSON.stringify(await tab.textContent("#status"))}\n${logs.join("\n")}`);
  }
}

/** `switchboard device link --approve CODE` with the CLI on the existing device `kf`. */
async function approveWithCli(kf: KeyFile, code: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "sb-applink-"));
  try {
    writeKeyFile(join(dir, "old.key"), kf);
    const p = Bun.spawn([process.execPath, MAIN, "device", "link", "--approve", code, "--key", join(dir, "old.key"), "--port", String(srv.tcp)], { cwd: dir, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
    const [out, err, exit] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    expect({ exit, err }).toEqual({ exit: 0, err: "" });
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("/app is served from the HTTP port: the page, its script, and where the WebSocket is", async () => {
  const r = await fetch(`http://127.0.0.1:${srv.http}/app`, { redirect: "manual" });
  expect({ status: r.status, location: r.headers.get("location") }).toEqual({ status: 301, location: "/app/" });
  const page = await fetch(app);
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
  expect(page.headers.get("content-security-policy")).toContain("default-src 'self'");
  expect(await page.text()).toContain(`<script type="module" src="app.js">`);
  expect(await (await fetch(`${app}config.json`)).json()).toEqual({ ws: "/ws" });
  const js = await fetch(`${app}app.js`);
  expect(js.status).toBe(200);
  expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
  // Bundled for the browser: the SDK without node:crypto (package.json imports, #node-keys).
  const body = await js.text();
  expect(body).not.toContain("node:crypto");
  expect((await fetch(`${app}nothing.js`)).status).toBe(404);
  expect((await fetch(app, { method: "POST" })).status).toBe(405);
});

test("a new browser enrolls with a one-time code typed into the page, and signs in again from IndexedDB after a reload", async () => {
  const code = srv.addUser("appenroll");
  const { tab, logs, close } = await openApp();
  try {
    await tab.fill("#account", "appenroll");
    await tab.fill("#code", code);
    await tab.click("#enroll");
    await statusSays(tab, logs, "signed in as appenroll · device 1");
    await tab.reload(); // nothing in memory: the key comes from IndexedDB, and no setup form is shown
    await statusSays(tab, logs, "signed in as appenroll · device 1");
    expect(await tab.$("#setup")).toBeNull();
    await tab.screenshot({ path: join(ARTEFACTS, "app-enrolled.png") });
  } finally {
    await close();
  }
});

test("a new browser links to an account by approval from the CLI on its existing device, and signs in", async () => {
  const old = await srv.newDevice("applink"); // device 1: the CLI's
  const { tab, logs, close } = await openApp();
  try {
    await tab.fill("#account", "applink");
    await tab.click("#link");
    await tab.waitForSelector("#link-code", { timeout: 20_000 });
    const code = (await tab.textContent("#link-code"))!.trim();
    expect(await tab.textContent("#link-box")).toContain(`switchboard device link --approve ${code}`);
    await tab.screenshot({ path: join(ARTEFACTS, "app-link-code.png") });
    expect(await approveWithCli(old, code)).toBe("approved: applink has a new device 2\n");
    await statusSays(tab, logs, "signed in as applink · device 2");
  } finally {
    await close();
  }
});

test("a wrong enrollment code is refused on the page, which stays on its form", async () => {
  srv.addUser("appwrong");
  const { tab, logs, close } = await openApp();
  try {
    await tab.fill("#account", "appwrong");
    await tab.fill("#code", "not-the-code");
    await tab.click("#enroll");
    await statusSays(tab, logs, "enrollment failed");
    expect(await tab.$("#setup")).not.toBeNull();
    expect(await tab.isEnabled("#enroll")).toBe(true);
  } finally {
    await close();
  }
});
