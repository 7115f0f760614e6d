/**
 * End-to-end encryption in the browser: headless Chromium runs SecureClient
 * (the browser entry, src/client/browser.ts, bundled for the browser: WebCrypto,
 * its state in IndexedDB) over WebSocket, and a Bun SDK SecureClient
 * (node:crypto, state in a file) runs over TCP. They exchange encrypted 1:1 and
 * group messages both ways, agree on the safety number, and send each other an
 * attachment both ways: the page's in memory (media-web.ts, AES-256-CBC +
 * HMAC-SHA256 on WebCrypto), Bun's from and to a file (media.ts streaming).
 *
 * The page is served from a second origin (its own port), so its WebSocket is
 * let through by ws.origins and its tus uploads and ranged downloads of the
 * server's /media are cross-origin fetches, allowed by the server's CORS
 * (ws.origins again; docs/MEDIA.md). Screenshot:
 * test-artefacts/browser-e2e.png.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { bundleForBrowser, launchChromium, openTab } from "../helpers/chromium.ts";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { SecureClient, type SecureAttachment, type SecureMessage } from "../../src/client/secure.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";

const ARTEFACTS = join(ROOT, "test-artefacts");
const PAGE = `import { SwitchboardClient, SecureClient, enrollDevice, generateWebDeviceKey, webKeyFile, keyFileSigner, indexedDbStorage } from ${JSON.stringify(join(ROOT, "src/client/browser.ts"))};
const got: unknown[] = [];
const files: unknown[] = [];
const errors: string[] = [];
let s: SecureClient;
const g = globalThis as any;
g.start = async (url: string, account: string, code: string) => {
  const key = await generateWebDeviceKey();
  const r = await enrollDevice({ url, host: "", port: 0, account, code, key, name: "chromium" });
  const kf = webKeyFile(key, r.account, r.device);
  const c = new SwitchboardClient({ url, host: "", port: 0, key: kf, sign: await keyFileSigner(kf) });
  s = await SecureClient.open(c, { storage: indexedDbStorage("browser-e2e"), stateKey: account + ".e2e", otkTarget: 10 });
  s.on("message", (m) => got.push({ from: m.from, text: m.text, group: m.group, conversation: m.conversation }));
  s.on("attachment", async (a) => {
    try {
      const b = await s.fetchAttachment(a.attachment);
      files.push({ from: a.from, name: a.attachment.name, type: a.attachment.type, text: new TextDecoder().decode(b) });
    } catch (e) {
      errors.push(String(e));
    }
  });
  s.on("undecryptable", (u) => errors.push("undecryptable " + u.reason));
  s.on("error", (e) => errors.push(String(e)));
  await c.connect();
  await s.whenPublished();
  document.getElementById("s")!.textContent = "E2E as " + account + " device " + r.device;
  return r;
};
g.send = async (to: string, text: string) => (await s.send(to, text)).seq;
g.sendFile = async (to: string, name: string, text: string) => (await s.sendFile(to, new TextEncoder().encode(text), { name, type: "text/plain" })).attachment.id;
g.safety = (peer: string) => s.safetyNumber(peer);
g.state = () => ({ got, files, errors });
`;

let srv: TestServer;
let browser: Browser;
let page: ReturnType<typeof Bun.serve>;
let dir: string;
let js: string;

beforeAll(async () => {
  browser = await launchChromium();
  dir = mkdtempSync(join(tmpdir(), "sb-browser-e2e-"));
  writeFileSync(join(dir, "page.ts"), PAGE);
  js = await bundleForBrowser(join(dir, "page.ts"));
  page = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const url = new URL(req.url);
      if (url.pathname === "/app.js") return new Response(js, { headers: { "content-type": "text/javascript" } });
      return new Response(`<!doctype html><title>browser e2e</title><p id="s">loading</p><script type="module" src="/app.js"></script>`, { headers: { "content-type": "text/html" } });
    },
  });
  // media.public_url is the server's HTTP port: another origin than the page's, so the page's uploads
  // and downloads are cross-origin fetches that work by the server's CORS (src/core/media/cors.ts).
  srv = await startServer({ args: ["--media-disk-high-water", "100", "--ws-origins", `http://127.0.0.1:${page.port}`] });
});
afterAll(async () => {
  await browser?.close();
  page?.stop(true);
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the page's bundle (SecureClient and all) carries none of Bun's node:* stand-ins", () => {
  // Bun marks each bundled module with a `// <module>` line; a stand-in for node:crypto or node:buffer shows as `// node:crypto`.
  expect(js.match(/^\/\/ node:[\w/]+$/gm)).toBeNull();
  expect(js).toContain("// src/client/crypto/webcrypto.ts");
  expect(js).not.toContain("// src/client/crypto/node.ts");
});

test("a page's SecureClient over WS and a Bun SecureClient over TCP: 1:1, group, safety number and attachments, both ways", async () => {
  const code = srv.addUser("webe2e");
  const kb = await srv.newDevice("bune2e");
  const got: SecureMessage[] = [];
  const files: SecureAttachment[] = [];
  let bob!: SecureClient;
  const c: SwitchboardClient = await srv.client(kb, {
    setup: async (cl) => {
      bob = await SecureClient.open(cl, { statePath: join(dir, "bune2e.e2e"), otkTarget: 10 });
      bob.on("message", (m) => got.push(m));
      bob.on("attachment", (a) => files.push(a));
    },
  });
  const { tab, logs } = await openTab(browser, `http://127.0.0.1:${page.port}/`, "start");
  const state = () => tab.evaluate(() => (globalThis as any).state()) as Promise<{ got: { from: string; text: string; group: boolean; conversation: string }[]; files: { from: string; name: string; type: string; text: string }[]; errors: string[] }>;
  try {
    await bob.whenPublished();
    const r = await tab.evaluate(([u, c]) => (globalThis as any).start(u, "webe2e", c), [`ws://127.0.0.1:${srv.ws}/`, code] as const);
    expect(r).toMatchObject({ account: "webe2e" });

    // 1:1 both ways (the page's first one is a prekey message to Bun's bundle, and the other way round).
    await bob.send("webe2e", "hello, browser");
    await waitFor(async () => (await state()).got.some((m) => m.text === "hello, browser"), "the page decrypts Bun's message");
    await tab.evaluate(() => (globalThis as any).send("bune2e", "hello, Bun"));
    await waitFor(() => got.some((m) => m.text === "hello, Bun"), "Bun decrypts the page's message");
    expect(got.find((m) => m.text === "hello, Bun")).toMatchObject({ from: "webe2e", group: false });

    // A group: sender keys both ways, each handed over in the pairwise session.
    const { g } = await c.createGroup("web and bun", ["webe2e"]);
    await bob.sendGroup(g, "to the group, from Bun");
    await waitFor(async () => (await state()).got.some((m) => m.text === "to the group, from Bun"), "the page decrypts the group message");
    expect((await state()).got.find((m) => m.text === "to the group, from Bun")).toEqual({ from: "bune2e", text: "to the group, from Bun", group: true, conversation: g });
    await tab.evaluate((gg) => (globalThis as any).send(gg, "to the group, from the browser"), g);
    await waitFor(() => got.some((m) => m.text === "to the group, from the browser"), "Bun decrypts the page's group message");
    expect(got.find((m) => m.text === "to the group, from the browser")).toMatchObject({ from: "webe2e", group: true, conversation: g });

    // Both sides compute the same 60 digits (WebCrypto's SHA-512 in the page, node:crypto's in Bun).
    const theirs = await tab.evaluate(() => (globalThis as any).safety("bune2e"));
    expect(theirs).toMatch(/^\d{60}$/);
    expect(await bob.safetyNumber("webe2e")).toBe(theirs);

    // Attachments: the page uploads bytes (WebCrypto AES-CBC + HMAC), Bun downloads to a file; Bun uploads a file, the page fetches it.
    const note = `a note from the browser ${"x".repeat(3000)}`;
    await tab.evaluate(([t]) => (globalThis as any).sendFile("bune2e", "note.txt", t), [note] as const);
    await waitFor(() => files.length === 1, "Bun gets the page's attachment");
    expect(files[0]!.attachment).toMatchObject({ name: "note.txt", type: "text/plain", size: note.length });
    const saved = await bob.download(files[0]!.attachment, join(dir, "from-browser.txt"));
    expect(readFileSync(saved.path, "utf8")).toBe(note);
    const reply = `a reply from Bun ${"y".repeat(70_000)}`;
    writeFileSync(join(dir, "reply.txt"), reply);
    await bob.sendFile("webe2e", join(dir, "reply.txt"), { type: "text/plain" });
    await waitFor(async () => (await state()).files.length === 1, "the page fetches Bun's attachment");
    expect((await state()).files[0]).toEqual({ from: "bune2e", name: "reply.txt", type: "text/plain", text: reply });
    expect((await state()).errors).toEqual([]);
    mkdirSync(ARTEFACTS, { recursive: true });
    await tab.screenshot({ path: join(ARTEFACTS, "browser-e2e.png") });
  } catch (e) {
    throw new Error(`${(e as Error).message}\npage: ${JSON.stringify(await state().catch(() => null))}\n${logs.join("\n")}`);
  } finally {
    await c.close();
  }
});
