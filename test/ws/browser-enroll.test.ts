/**
 * A device made in the browser: headless Chromium generates an Ed25519 key
 * with WebCrypto, enrolls it over WebSocket with a one-time code
 * (enrollDevice with the key's own signer), keeps its key file in IndexedDB
 * (StateStorage, src/client/storage-idb.ts), and after a reload of the page
 * logs in from what IndexedDB kept and messages a TCP device. The page's
 * script is src/client/browser.ts's API, bundled for the browser.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { launchChromium, servePageOf } from "../helpers/chromium.ts";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec } from "../wire/util.ts";

let srv: TestServer;
let browser: Browser;
let page: ReturnType<typeof Bun.serve>;

beforeAll(async () => {
  browser = await launchChromium();
  srv = await startServer();
  page = await servePageOf(
    `import { SwitchboardClient, enrollDevice, generateWebDeviceKey, webKeyFile, keyFileSigner, indexedDbStorage } from ${JSON.stringify(join(ROOT, "src/client/browser.ts"))};
const store = indexedDbStorage("enroll-test");
(globalThis as any).enroll = async (url: string, account: string, code: string) => {
  const key = await generateWebDeviceKey();
  const r = await enrollDevice({ url, host: "", port: 0, account, code, key, name: "chromium" });
  await store.save(account + ".key", new TextEncoder().encode(JSON.stringify(webKeyFile(key, r.account, r.device))));
  return r;
};
(globalThis as any).sendAs = async (url: string, account: string, to: string, text: string) => {
  const b = await store.load(account + ".key");
  if (!b) throw new Error("no key file in IndexedDB for " + account);
  const kf = JSON.parse(new TextDecoder().decode(b));
  const c = new SwitchboardClient({ url, host: "", port: 0, key: kf, sign: await keyFileSigner(kf), reconnect: false });
  await c.connect();
  const s = await c.send(to, text);
  await c.close();
  return { seq: s.seq, device: kf.device };
};
`,
    "enroll",
  );
});
afterAll(async () => {
  await browser?.close();
  page?.stop(true);
  srv?.cleanup();
});

test("Chromium enrolls a WebCrypto key by code over WS, keeps it in IndexedDB, and after a reload logs in with it and sends", async () => {
  const code = srv.addUser("webenroll");
  const kt = await srv.newDevice("webenrollfriend");
  const t = await srv.client(kt);
  const ct = collect(t);
  const tab = await browser.newPage();
  const logs: string[] = [];
  tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const url = `ws://127.0.0.1:${srv.ws}/`;
  const ready = () => tab.waitForFunction(() => typeof (globalThis as any).enroll === "function", undefined, { timeout: 10_000 });
  let enrolled: { account: string; device: number };
  let sent: { seq: number; device: number };
  try {
    await tab.goto(`http://127.0.0.1:${page.port}/`);
    await ready();
    enrolled = await tab.evaluate(([u, c]) => (globalThis as any).enroll(u, "webenroll", c), [url, code] as const);
    await tab.reload(); // nothing in memory now: the key comes from IndexedDB
    await ready();
    sent = await tab.evaluate(([u]) => (globalThis as any).sendAs(u, "webenroll", "webenrollfriend", "enrolled in Chromium"), [url] as const);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${logs.join("\n")}`);
  }
  expect(enrolled).toEqual({ account: "webenroll", device: 1 });
  expect(sent.device).toBe(1);
  await waitFor(() => ct.messages.length === 1, "the TCP device gets the enrolled browser's message");
  expect(ct.messages[0]).toMatchObject({ from: "webenroll", fromDevice: 1, seq: sent.seq });
  expect(dec(ct.messages[0]!.payload)).toBe("enrolled in Chromium");
  // The code was used up: enrolling again with it is refused.
  const again = await tab.evaluate(([u, c]) => (globalThis as any).enroll(u, "webenroll", c).then(() => "enrolled", (e: Error) => e.message), [url, code] as const);
  expect(again).not.toBe("enrolled");
  await t.close();
});
