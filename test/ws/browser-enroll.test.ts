/**
 * A device made in the browser: headless Chromium generates an Ed25519 key
 * with WebCrypto, enrolls it over WebSocket with a one-time code
 * (enrollDevice with the key's own signer) or links it by approval from the
 * CLI on an existing device (linkDevice; `device link --approve`), keeps its key file in IndexedDB
 * (StateStorage, src/client/storage-idb.ts), and after a reload of the page
 * logs in from what IndexedDB kept and messages a TCP device. The page's
 * script is src/client/browser.ts's API, bundled for the browser.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeKeyFile } from "../../src/client/keys.ts";
import type { Browser } from "playwright-core";
import { launchChromium, openTab, servePageOf } from "../helpers/chromium.ts";
import { MAIN, ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";
import { collect, dec } from "../wire/util.ts";

let srv: TestServer;
let browser: Browser;
let page: ReturnType<typeof Bun.serve>;

beforeAll(async () => {
  browser = await launchChromium();
  srv = await startServer();
  page = await servePageOf(
    `import { SwitchboardClient, enrollDevice, linkDevice as enrollLink, generateWebDeviceKey, webKeyFile, keyFileSigner, indexedDbStorage } from ${JSON.stringify(join(ROOT, "src/client/browser.ts"))};
const store = indexedDbStorage("enroll-test");
(globalThis as any).enroll = async (url: string, account: string, code: string) => {
  const key = await generateWebDeviceKey();
  const r = await enrollDevice({ url, host: "", port: 0, account, code, key, name: "chromium" });
  await store.save(account + ".key", new TextEncoder().encode(JSON.stringify(webKeyFile(key, r.account, r.device))));
  return r;
};
(globalThis as any).linkCode = null;
(globalThis as any).link = async (url: string, account: string) => {
  const key = await generateWebDeviceKey();
  const r = await enrollLink({ url, host: "", port: 0, account, key, name: "chromium", onCode: (code: string) => ((globalThis as any).linkCode = code) });
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
  const { tab, logs, reload } = await openTab(browser, `http://127.0.0.1:${page.port}/`, "enroll");
  const url = `ws://127.0.0.1:${srv.ws}/`;
  let enrolled: { account: string; device: number };
  let sent: { seq: number; device: number };
  try {
    enrolled = await tab.evaluate(([u, c]) => (globalThis as any).enroll(u, "webenroll", c), [url, code] as const);
    await reload(); // nothing in memory now: the key comes from IndexedDB
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

test("Chromium links a new device by approval from the CLI on an existing device (device link --approve), then sends from it", async () => {
  const kOld = await srv.newDevice("weblink"); // device 1, the CLI's
  const kt = await srv.newDevice("weblinkfriend");
  const t = await srv.client(kt);
  const ct = collect(t);
  const { tab, logs } = await openTab(browser, `http://127.0.0.1:${page.port}/`, "link");
  const url = `ws://127.0.0.1:${srv.ws}/`;
  const linked = tab.evaluate(([u]) => (globalThis as any).link(u, "weblink"), [url] as const);
  linked.catch(() => {}); // awaited below
  await tab.waitForFunction(() => typeof (globalThis as any).linkCode === "string", undefined, { timeout: 10_000 });
  const code: string = await tab.evaluate(() => (globalThis as any).linkCode);
  // The existing device approves with the CLI, as a user would.
  const dir = mkdtempSync(join(tmpdir(), "sb-weblink-"));
  try {
    writeKeyFile(join(dir, "weblink.key"), kOld);
    const p = Bun.spawn([process.execPath, MAIN, "device", "link", "--approve", code, "--key", join(dir, "weblink.key"), "--port", String(srv.tcp)], { cwd: dir, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
    const [out, err, exit] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    expect({ exit, err }).toEqual({ exit: 0, err: "" });
    expect(out).toBe("approved: weblink has a new device 2\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  let sent: { seq: number; device: number };
  try {
    expect(await linked).toEqual({ account: "weblink", device: 2 });
    sent = await tab.evaluate(([u]) => (globalThis as any).sendAs(u, "weblink", "weblinkfriend", "linked in Chromium"), [url] as const);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${logs.join("\n")}`);
  }
  await waitFor(() => ct.messages.length === 1, "the TCP device gets the linked browser's message");
  expect(ct.messages[0]).toMatchObject({ from: "weblink", fromDevice: 2, seq: sent.seq });
  expect(dec(ct.messages[0]!.payload)).toBe("linked in Chromium");
  await t.close();
});
