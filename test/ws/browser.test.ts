/**
 * A real browser over the WebSocket transport: headless Chromium (Debian's `chromium`, driven by
 * playwright-core with the system browser) loads a page whose script is web/ws-probe.ts bundled with
 * Bun's bundler for the browser, logs in with WebCrypto's Ed25519, sends a message to an SDK client
 * on TCP and sees its delivered receipt. A screenshot is kept as a test artefact.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { bundleForBrowser, launchChromium, servePage } from "../helpers/chromium.ts";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec, freePort } from "../wire/util.ts";

/** Where the screenshot goes (kept after the run). */
const ARTEFACTS = join(ROOT, "test-artefacts");

let srv: TestServer;
let wsPort: number;
let page: ReturnType<typeof Bun.serve> | null = null;
let browser: Browser | null = null;

beforeAll(async () => {
  browser = await launchChromium();
  wsPort = await freePort();
  srv = await startServer({ args: ["--ws-port", String(wsPort)] });
  page = servePage(await bundleForBrowser(join(ROOT, "web/ws-probe.ts")), "ws probe");
});
afterAll(async () => {
  await browser?.close();
  page?.stop(true);
  srv?.cleanup();
});

test("Chromium logs in over WS with a WebCrypto-signed proof, messages a TCP device and gets the dlv receipt", async () => {
  const kb = await srv.newDevice("chromeuser");
  const kt = await srv.newDevice("tcpfriend");
  const t = await srv.client(kt);
  const ct = collect(t);
  const tab = await browser!.newPage();
  const logs: string[] = [];
  tab.on("console", (m) => logs.push(m.text()));
  tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await tab.goto(`http://127.0.0.1:${page!.port}/`);
  await tab.waitForFunction(() => typeof (globalThis as any).switchboardProbe === "function", undefined, { timeout: 10_000 }).catch((e) => {
    throw new Error(`the page's script did not load: ${e.message}\npage console:\n${logs.join("\n")}`);
  });
  const opts = { url: `ws://127.0.0.1:${wsPort}/`, account: kb.account, device: kb.device, pkcs8: kb.sk, to: "tcpfriend", toDevices: [kt.device], text: "hello from Chromium" };
  let r: { kinds: string[]; seq: number; delivered: { u: string; d: number; seq: number } };
  try {
    r = await tab.evaluate(async (o) => {
      const res = await (globalThis as any).switchboardProbe(o);
      (globalThis as any).document.getElementById("s").textContent = `delivered seq ${res.seq} to ${res.delivered.u}/${res.delivered.d}`;
      return res;
    }, opts);
  } catch (e) {
    throw new Error(`${(e as Error).message}\npage console:\n${logs.join("\n")}`);
  }
  expect(r.kinds.slice(0, 2)).toEqual(["hello", "ready"]);
  expect(r.delivered).toEqual({ u: "tcpfriend", d: kt.device, seq: r.seq });
  await waitFor(() => ct.messages.length === 1, "the TCP device gets the browser's message");
  expect(dec(ct.messages[0]!.payload)).toBe("hello from Chromium");
  expect(ct.messages[0]).toMatchObject({ from: "chromeuser", fromDevice: kb.device, seq: r.seq });
  mkdirSync(ARTEFACTS, { recursive: true });
  await tab.screenshot({ path: join(ARTEFACTS, "ws-browser.png") });
  await t.close();
});
