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
import type { Subprocess } from "bun";
import type { Browser } from "playwright-core";
import { launchChromium } from "../helpers/chromium.ts";
import { MAIN, ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";
import { prng } from "../helpers/prng.ts";
import { markBecomes, markOf, sendFromPage, shows, statusSays, storedInPage, webApp } from "../helpers/web-app.ts";

const ARTEFACTS = join(ROOT, "test-artefacts");

let srv: TestServer;
let browser: Browser;
let app: string;
let kit: ReturnType<typeof webApp>;

beforeAll(async () => {
  browser = await launchChromium();
  srv = await startServer(); // the defaults: ws.http_path is /ws, so a fresh server's /app connects
  kit = webApp(srv, browser);
  app = kit.app;
  mkdirSync(ARTEFACTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  srv?.cleanup();
});

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
  const { tab, logs, close } = await kit.openApp();
  try {
    await tab.fill("#account", "appenroll");
    await tab.fill("#code", code);
    await tab.click("#enroll");
    await statusSays(tab, logs, "signed in as appenroll · device 1");
    const resumed = () => srv.metric("switchboard_logins_total", '{result="resumed"}');
    const before = await resumed();
    await storedInPage(tab, "appenroll.1.ticket"); // what a reload can resume with is there (not promised by the ready)
    await tab.reload(); // nothing in memory: the key comes from IndexedDB, and no setup form is shown
    await statusSays(tab, logs, "signed in as appenroll · device 1");
    // ... and so does the resumption ticket of the login before (ticketSlot on IndexedDB): the reload resumed.
    expect(await resumed()).toBe(before + 1);
    expect(await tab.$("#setup")).toBeNull();
    await tab.screenshot({ path: join(ARTEFACTS, "app-enrolled.png") });
  } finally {
    await close();
  }
});

test("a new browser links to an account by approval from the CLI on its existing device, and signs in", async () => {
  const old = await srv.newDevice("applink"); // device 1: the CLI's
  const { tab, logs, close } = await kit.openApp();
  try {
    await tab.fill("#account", "applink");
    await tab.click("#link");
    await tab.waitForSelector("#link-code", { timeout: 20_000 });
    const code = (await tab.textContent("#link-code"))!.trim();
    expect(await tab.textContent("#link-box")).toContain(`switchboard device link --approve ${code}`);
    await tab.screenshot({ path: join(ARTEFACTS, "app-link-code.png") });
    expect(await kit.approveWithCli(old, code)).toBe("approved: applink has a new device 2\n");
    await statusSays(tab, logs, "signed in as applink · device 2");
  } finally {
    await close();
  }
});

test("a wrong enrollment code is refused on the page, which stays on its form", async () => {
  srv.addUser("appwrong");
  const { tab, logs, close } = await kit.openApp();
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

// ---- chatting: the page against an SDK device (SecureClient) and the CLI ---------------------------------

test("the page and an SDK device chat end to end: ✓ then ✓✓ then read, both ways, typing both ways, the same safety number", async () => {
  const b = await kit.linkedBrowser("webcarol");
  const dave = await kit.secureDevice("webdave");
  const { tab, logs } = b;
  try {
    await tab.fill("#peer", "webdave");
    await tab.click("#start-chat");
    await sendFromPage(tab, "hello from the browser");
    await waitFor(() => dave.events.message!.length === 1, "the SDK device decrypts the page's message");
    const m = dave.events.message![0]!;
    expect({ from: m.from, fromDevice: m.fromDevice, text: m.text, group: m.group }).toEqual({ from: "webcarol", fromDevice: 2, text: "hello from the browser", group: false });
    await markBecomes(tab, logs, "hello from the browser", "delivered"); // ✓✓: dave's device has it
    await tab.screenshot({ path: join(ARTEFACTS, "app-delivered.png") });
    dave.c.markRead("webcarol", m.seq);
    await markBecomes(tab, logs, "hello from the browser", "read");

    // Typing: the page's keystrokes reach the SDK device, and the SDK device's typing shows in the page.
    await tab.type("#text", "abc");
    await waitFor(() => dave.events.typing!.some((t) => t.account === "webcarol" && t.device === 2 && t.state === "typing"), "the SDK device sees the page typing");
    await tab.press("#text", "Enter"); // sent: the page says paused (before the message), not left to expire
    await waitFor(() => dave.events.message!.some((x) => x.text === "abc"), "the SDK device gets the typed message");
    // Runs of one state folded: a machine slow enough to space keystrokes 3 s apart repeats `typing`, which is right too.
    const states = dave.events.typing!.filter((t) => t.account === "webcarol").map((t) => `${t.state}${t.expired ? " (expired)" : ""}`);
    expect(states.filter((x, i) => x !== states[i - 1])).toEqual(["typing", "paused"]);
    dave.c.typing("webcarol", "typing");
    await tab.waitForFunction(() => (globalThis as any).document.getElementById("typing")?.textContent === "typing…", undefined, { timeout: 20_000 });
    await tab.screenshot({ path: join(ARTEFACTS, "app-typing.png") });

    // The other way: the page shows the SDK's message and, the chat being open, marks it read.
    await tab.fill("#group-name", "half-typed"); // a field being filled in when a message comes
    const sent = await dave.s.send("webcarol", "hello from the SDK");
    await shows(tab, logs, "hello from the SDK");
    expect(await tab.inputValue("#group-name")).toBe("half-typed"); // the redraw kept it
    await waitFor(() => dave.events.receipt!.some((r) => r.kind === "read" && r.account === "webcarol" && r.seq >= sent.seq), "the SDK device gets the page's read receipt");

    // Safety number: the page's equals the SDK's.
    await tab.click("#safety-button");
    await tab.waitForSelector("#safety", { timeout: 20_000 });
    const shown = (await tab.textContent("#safety-digits"))!.replace(/[^\d]/g, "");
    expect(shown).toBe(await dave.s.safetyNumber("webcarol"));
    expect(shown.length).toBe(60);
    await tab.screenshot({ path: join(ARTEFACTS, "app-chat.png") });

    // A reload keeps it all: the chat's history (IndexedDB), its marks, and the end-to-end sessions (the next message decrypts).
    await tab.reload();
    await statusSays(tab, logs, "signed in as webcarol · device 2 · end-to-end encrypted");
    await tab.click('#chats li[data-chat="webdave"]');
    await shows(tab, logs, "hello from the SDK");
    expect(await markOf(tab, "hello from the browser")).toBe("read");
    await dave.s.send("webcarol", "after the reload");
    await shows(tab, logs, "after the reload");
  } finally {
    await dave.c.close();
    await b.close();
  }
});

test("attachments both ways: a file chosen in the page reaches the SDK device intact, and the SDK's file opens in the page", async () => {
  const b = await kit.linkedBrowser("webkim");
  const lee = await kit.secureDevice("weblee");
  const { tab, logs } = b;
  const seed = Math.floor(Math.random() * 2 ** 31);
  try {
    await tab.fill("#peer", "weblee");
    await tab.click("#start-chat");
    // Bytes from a seeded generator (the seed is printed on failure): every value of a byte, in no pattern a bug could hide in.
    const rnd = prng(seed);
    const bytes = new Uint8Array(200_000).map(() => Math.floor(rnd() * 256));
    await tab.setInputFiles("#file", { name: "notes.bin", mimeType: "application/octet-stream", buffer: Buffer.from(bytes) });
    await waitFor(() => lee.events.attachment!.length === 1, "the SDK device gets the page's attachment");
    const a = lee.events.attachment![0]!;
    expect({ from: a.from, fromDevice: a.fromDevice, name: a.attachment.name, size: a.attachment.size }).toEqual({ from: "webkim", fromDevice: 2, name: "notes.bin", size: bytes.length });
    const got = await lee.s.fetchAttachment(a.attachment);
    if (!Bun.deepEquals(got, bytes)) throw new Error(`the attachment's bytes differ (seed ${seed})`);
    await markBecomes(tab, logs, "", "delivered");

    const text = `a file from the SDK, seed ${seed}\n`;
    await lee.s.sendFile("webkim", new TextEncoder().encode(text), { name: "hello.txt", type: "text/plain" });
    const theirs = "#messages li.msg:not(.mine) .attachment";
    await tab.waitForSelector(`${theirs}[data-att]`, { timeout: 20_000 });
    expect(await tab.textContent(theirs)).toContain("hello.txt");
    await tab.click(theirs); // download: fetched, digest and MAC checked, decrypted in the page
    const opened$ = "#messages li.msg:not(.mine) a.attachment";
    await tab.waitForSelector(opened$, { timeout: 20_000 });
    // What the page decrypted, read back from its blob: URL.
    const opened = await tab.evaluate((sel) => fetch((globalThis as any).document.querySelector(sel).href).then((r: Response) => r.text()), opened$);
    expect(opened).toBe(text);
    expect(await tab.getAttribute(opened$, "download")).toBe("hello.txt");
    await tab.screenshot({ path: join(ARTEFACTS, "app-attachments.png") });
  } catch (e) {
    throw new Error(`${(e as Error).message} (seed ${seed})`);
  } finally {
    await lee.c.close();
    await b.close();
  }
});

test("a group chat made in the page: the SDK member reads the page's message (marks from group.state) and answers; a member added from the page gets the next one; the page leaves", async () => {
  const b = await kit.linkedBrowser("webgina");
  const hank = await kit.secureDevice("webhank");
  const { tab, logs } = b;
  try {
    await tab.fill("#group-name", "web team");
    await tab.fill("#group-members", "webhank");
    await tab.click("#create-group");
    await tab.waitForFunction(() => (globalThis as any).document.getElementById("chat-title")?.textContent?.includes("web team"), undefined, { timeout: 20_000 });
    const g = await tab.getAttribute("#chat", "data-chat");
    expect(g).toMatch(/^#/);
    await sendFromPage(tab, "hello, group");
    await waitFor(() => hank.events.message!.some((m) => m.group && m.to === g), "the SDK member decrypts the page's group message");
    const m = hank.events.message!.find((x) => x.group)!;
    expect({ from: m.from, text: m.text }).toEqual({ from: "webgina", text: "hello, group" });
    await markBecomes(tab, logs, "hello, group", "delivered");
    hank.c.markRead(g!, m.seq);
    await markBecomes(tab, logs, "hello, group", "read");
    const back = await hank.s.sendGroup(g!, "hello back, group");
    await shows(tab, logs, "hello back, group");
    // The open group chat marks what it shows read: the member gets the page's read receipt for its message.
    await waitFor(() => hank.events.receipt!.some((r) => r.kind === "read" && r.account === "webgina" && r.with === g && r.seq >= back.seq), "the SDK member gets the page's group read receipt");
    expect(await tab.textContent("#messages")).toContain("webhank");

    // A member added from the page gets the page's next message (our sender key goes to it first).
    const omar = await kit.secureDevice("webomar");
    try {
      await tab.fill("#add-members", "webomar");
      await tab.click("#add-member");
      await tab.waitForFunction(() => (globalThis as any).document.getElementById("messages")?.textContent?.includes("webgina added webomar"), undefined, { timeout: 20_000 });
      await sendFromPage(tab, "welcome, omar");
      await waitFor(() => omar.events.message!.some((m) => m.group && m.to === g && m.text === "welcome, omar"), "the new member decrypts the page's group message");
      await waitFor(() => hank.events.message!.some((m) => m.text === "welcome, omar"), "the first member too");
      await tab.screenshot({ path: join(ARTEFACTS, "app-group.png") });
      // Leaving: the members are told.
      await tab.click("#leave-group");
      await tab.waitForFunction(() => (globalThis as any).document.getElementById("messages")?.textContent?.includes("webgina left"), undefined, { timeout: 20_000 });
    } finally {
      await omar.c.close();
    }
  } finally {
    await hank.c.close();
    await b.close();
  }
});

test("the page and the CLI talk to each other: switchboard send reaches the page; the page's reply, ✓ while the CLI is away, reaches switchboard listen and turns ✓✓", async () => {
  const b = await kit.linkedBrowser("webivy");
  const { tab, logs } = b;
  const dir = mkdtempSync(join(tmpdir(), "sb-appcli-"));
  const running = new Set<Subprocess>();
  try {
    const code = srv.addUser("webjoe");
    await kit.cli(dir, ["device", "enroll", "--user", "webjoe", "--code", code, "--key", "joe.key"]); // publishes its keys
    // webivy's first device (the one that approved the page) never published end-to-end keys: the CLI says it got a notice.
    const sent = await kit.cli(dir, ["send", "--key", "joe.key", "--to", "webivy", "hello from the CLI"], /^switchboard: warning: webivy device 1 has no end-to-end keys/);
    expect(JSON.parse(sent)).toMatchObject({ event: "sent", to: "webivy", encrypted: true });
    await tab.waitForSelector('#chats li[data-chat="webjoe"]', { timeout: 20_000 });
    await tab.click('#chats li[data-chat="webjoe"]');
    await shows(tab, logs, "hello from the CLI");
    // webjoe has no device connected: the reply is sent (✓, durable on the server) and stays so until a device takes it.
    await sendFromPage(tab, "hello back, CLI");
    await markBecomes(tab, logs, "hello back, CLI", "sent");
    await tab.screenshot({ path: join(ARTEFACTS, "app-sent.png") });
    const listen = new LineProcess([process.execPath, MAIN, "listen", "--key", "joe.key", "--port", String(srv.tcp)], { cwd: dir, env: CLEAN_ENV, track: running });
    const got = await listen.event("message", (o) => o.text === "hello back, CLI");
    expect({ from: got.from, device: got.device, encrypted: got.encrypted }).toEqual({ from: "webivy", device: 2, encrypted: true });
    await markBecomes(tab, logs, "hello back, CLI", "delivered");
    // The page's safety number is the one `switchboard safety` prints on the other side.
    await tab.click("#safety-button");
    await tab.waitForSelector("#safety", { timeout: 20_000 });
    const onPage = (await tab.textContent("#safety-digits"))!.replace(/[^\d]/g, "");
    const rows = (await kit.cli(dir, ["safety", "webivy", "--key", "joe.key"])).split("\n").map((l) => l.match(/^\s+(\d{5} \d{5} \d{5} \d{5})$/)?.[1]).filter(Boolean);
    expect(rows.length).toBe(3);
    expect(onPage).toBe(rows.join("").replace(/ /g, ""));
    await tab.screenshot({ path: join(ARTEFACTS, "app-cli.png") });
  } finally {
    for (const p of running) p.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    await b.close();
  }
});

test("one tab per device: a second tab of the same browser waits; 'Use it here' moves the device there, with its sessions, and stops the first", async () => {
  const b = await kit.linkedBrowser("webmia");
  const nat = await kit.secureDevice("webnat");
  const { tab: first, logs } = b;
  try {
    await first.fill("#peer", "webnat");
    await first.click("#start-chat");
    await sendFromPage(first, "from the first tab");
    await waitFor(() => nat.events.message!.some((m) => m.text === "from the first tab"), "the SDK device gets the first tab's message");
    const second = await b.another();
    await statusSays(second, logs, "webmia's device 2 is open in another tab or window of this browser");
    expect(await second.$("#chats")).toBeNull(); // it did not sign in: two SecureClients would overwrite each other's state
    await second.click("#use-here");
    await statusSays(second, logs, "signed in as webmia · device 2 · end-to-end encrypted");
    await statusSays(first, logs, "is now used in another tab or window");
    expect(await first.isDisabled("#text")).toBe(true);
    await second.click('#chats li[data-chat="webnat"]');
    await sendFromPage(second, "from the second tab");
    // The second tab went on from the first one's ratchet state: the SDK device decrypts it.
    await waitFor(() => nat.events.message!.some((m) => m.text === "from the second tab"), "the SDK device decrypts the second tab's message");
    await nat.s.send("webmia", "to whichever tab has it");
    await shows(second, logs, "to whichever tab has it");
    await second.screenshot({ path: join(ARTEFACTS, "app-second-tab.png") });
  } finally {
    await nat.c.close();
    await b.close();
  }
});
