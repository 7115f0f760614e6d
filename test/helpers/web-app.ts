/**
 * Driving the web client (web/app/, served at /app) in headless Chromium as a
 * person would, for the test/app/ files: a fresh browser profile on the page,
 * waits for what the page shows (never a sleep), the CLI and SDK devices it
 * talks to. `webApp(srv, browser)` binds them to one test server.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { writeKeyFile, type KeyFile } from "../../src/client/keys.ts";
import { SecureClient } from "../../src/client/secure.ts";
import { MAIN, waitFor, type TestServer } from "./harness.ts";
import { CLEAN_ENV } from "./line-process.ts";

export type AppTab = { tab: Page; logs: string[]; close(): Promise<void>; another(): Promise<Page> };
export type SdkDevice = { c: SwitchboardClient; s: SecureClient; kf: KeyFile; events: Record<string, any[]> };

export function webApp(srv: TestServer, browser: Browser) {
  const app = `http://127.0.0.1:${srv.http}/app/`;

  /** A fresh browser profile (its own IndexedDB) on /app, with the page's console and errors kept for failure messages. */
  async function openApp(): Promise<AppTab> {
    const ctx = await browser.newContext();
    const logs: string[] = [];
    const open = async () => {
      const tab = await ctx.newPage();
      tab.on("console", (m) => logs.push(m.text()));
      tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
      await tab.goto(app);
      return tab;
    };
    return { tab: await open(), logs, close: () => ctx.close(), another: open };
  }

  /**
   * Runs the CLI in `cwd` against the test server's TCP port; its stdout, or a throw with what it said. Anything
   * on stderr fails it unless `warning` matches it (the CLI warns, e.g., of a device without end-to-end keys).
   */
  async function cli(cwd: string, args: string[], warning?: RegExp): Promise<string> {
    const p = Bun.spawn([process.execPath, MAIN, ...args, "--port", String(srv.tcp)], { cwd, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
    const [out, err, exit] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (exit !== 0 || (err !== "" && !warning?.test(err))) throw new Error(`switchboard ${args.join(" ")}: exit ${exit}\n${out}\n${err}`);
    return out;
  }

  /** `switchboard device link --approve CODE` with the CLI on the existing device `kf`. */
  async function approveWithCli(kf: KeyFile, code: string): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), "sb-applink-"));
    try {
      writeKeyFile(join(dir, "old.key"), kf);
      return await cli(dir, ["device", "link", "--approve", code, "--key", join(dir, "old.key")]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /**
   * A new browser linked to `account` (its device 1, `first`, made here with the device name "test", approves
   * with the CLI); resolves once the page says it is end-to-end ready.
   */
  async function linkedBrowser(account: string): Promise<AppTab & { first: KeyFile }> {
    const first = await srv.newDevice(account);
    const b = await openApp();
    await b.tab.fill("#account", account);
    await b.tab.click("#link");
    await b.tab.waitForSelector("#link-code", { timeout: 20_000 });
    await approveWithCli(first, (await b.tab.textContent("#link-code"))!.trim());
    await statusSays(b.tab, b.logs, `signed in as ${account} · device 2 · end-to-end encrypted`);
    return { ...b, first };
  }

  /** An SDK device with end-to-end encryption, as an app on Bun would run it (TCP), its keys published; `kf` an existing device's key, else a new account's. */
  async function secureDevice(account: string, kf?: KeyFile): Promise<SdkDevice> {
    kf ??= await srv.newDevice(account);
    const dir = mkdtempSync(join(tmpdir(), "sb-appsdk-"));
    const events: Record<string, any[]> = { message: [], attachment: [], typing: [], receipt: [], presence: [], close: [] };
    let s!: SecureClient;
    const c = await srv.client(kf, {
      setup: async (c) => {
        s = await SecureClient.open(c, { statePath: join(dir, `${account}.${kf.device}.key.e2e`), fsync: false });
        s.on("message", (m) => events.message!.push(m));
        s.on("attachment", (a) => events.attachment!.push(a));
        c.on("typing", (t) => events.typing!.push(t));
        c.on("receipt", (r) => events.receipt!.push(r));
        c.on("presence", (v) => events.presence!.push(v));
        c.on("close", (x) => events.close!.push(x));
      },
    });
    await s.whenPublished();
    return { c, s, kf, events };
  }

  return { app, openApp, cli, approveWithCli, linkedBrowser, secureDevice };
}

/** Waits for the status line to say `text`; on failure, says what it said and what the page logged. */
export async function statusSays(tab: Page, logs: string[], text: string): Promise<void> {
  try {
    // Runs in the page (the test's own tsconfig has no DOM types).
    await tab.waitForFunction((t) => (globalThis as any).document.getElementById("status")?.textContent?.includes(t) ?? false, text, { timeout: 20_000 });
  } catch {
    throw new Error(`the status line did not say ${JSON.stringify(text)}: it says ${JSON.stringify(await tab.textContent("#status"))}\n${logs.join("\n")}`);
  }
}

/**
 * Waits until the text of the page's element `selector` is `text` (or, with a RegExp, matches it; "" for an
 * empty or absent element); on failure, says what it was and what the page logged.
 */
export async function textBecomes(tab: Page, logs: string[], selector: string, text: string | RegExp): Promise<void> {
  const want = typeof text === "string" ? { s: text } : { re: text.source };
  try {
    await tab.waitForFunction(
      ([sel, w]) => {
        const t = (globalThis as any).document.querySelector(sel)?.textContent ?? "";
        return w.re !== undefined ? new RegExp(w.re).test(t) : t === w.s;
      },
      [selector, want] as const,
      { timeout: 20_000 },
    );
  } catch {
    const now = await tab.evaluate((sel) => (globalThis as any).document.querySelector(sel)?.textContent ?? null, selector);
    throw new Error(`${selector} says ${JSON.stringify(now)}, not ${String(typeof text === "string" ? JSON.stringify(text) : text)}\n${logs.join("\n")}`);
  }
}

/**
 * Waits until the page's IndexedDB holds the record `key` (committed: a readonly transaction sees nothing else).
 * The SDK writes its resumption ticket there after the ready, without holding the ready back for it (the "signed
 * in" status comes first), and a reload aborts a write the browser has not committed: the next login then signs.
 */
export async function storedInPage(tab: Page, key: string): Promise<void> {
  const has = () =>
    tab.evaluate((k) => new Promise<boolean>((resolve, reject) => {
      const open = (globalThis as any).indexedDB.open("switchboard-app"); // web/app/main.ts's, store "state" (storage-idb.ts)
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const db = open.result;
        const get = db.transaction("state", "readonly").objectStore("state").get(k);
        get.onsuccess = () => (db.close(), resolve(get.result !== undefined));
        get.onerror = () => (db.close(), reject(get.error));
      };
    }), key);
  await waitFor(has, `the page's IndexedDB holds ${key}`);
}

/** The mark shown on our message with `text` in the open chat. */
export const markOf = (tab: Page, text: string) =>
  tab.evaluate((t) => {
    const doc = (globalThis as any).document;
    const li = [...doc.querySelectorAll("#messages li.mine")].find((x: any) => x.querySelector(".text")?.textContent === t) as any;
    return li?.querySelector(".mark")?.dataset.mark ?? null;
  }, text);

export async function markBecomes(tab: Page, logs: string[], text: string, mark: string): Promise<void> {
  try {
    await tab.waitForFunction(
      ([t, m]) => {
        const doc = (globalThis as any).document;
        const li = [...doc.querySelectorAll("#messages li.mine")].find((x: any) => x.querySelector(".text")?.textContent === t) as any;
        return li?.querySelector(".mark")?.dataset.mark === m;
      },
      [text, mark] as const,
      { timeout: 20_000 },
    );
  } catch {
    throw new Error(`${JSON.stringify(text)} is marked ${await markOf(tab, text)}, not ${mark}\n${logs.join("\n")}`);
  }
}

export async function sendFromPage(tab: Page, text: string): Promise<void> {
  await tab.fill("#text", text);
  await tab.press("#text", "Enter");
}

/** A message from someone else with this text shows in the open chat. */
export async function shows(tab: Page, logs: string[], text: string): Promise<void> {
  try {
    await tab.waitForFunction((t) => [...(globalThis as any).document.querySelectorAll("#messages li.msg:not(.mine) .text")].some((x: any) => x.textContent === t), text, { timeout: 20_000 });
  } catch {
    throw new Error(`the chat does not show ${JSON.stringify(text)}: ${await tab.textContent("#messages")}\n${logs.join("\n")}`);
  }
}
