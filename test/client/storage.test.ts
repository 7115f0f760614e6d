/**
 * The StateStorage contract (test/client/storage-contract.ts) on files in Bun
 * (src/client/storage-file.ts) and on IndexedDB in headless Chromium
 * (src/client/storage-idb.ts, bundled for the browser), plus what only each
 * can show: the file's mode and the absence of a temporary file; IndexedDB's
 * values surviving a reload of the page.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { fileStorage } from "../../src/client/storage-file.ts";
import { failures } from "../helpers/cases.ts";
import { launchChromium, openTab, servePageOf } from "../helpers/chromium.ts";
import { ROOT } from "../helpers/harness.ts";
import { storageContract, type Outcome } from "./storage-contract.ts";


describe("fileStorage", () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), "sb-storage-"))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("the contract, on files", async () => {
    const outcomes = await storageContract(fileStorage(join(dir, "state")));
    expect(outcomes.length).toBeGreaterThanOrEqual(7);
    expect(failures(outcomes)).toEqual([]);
  });

  test("files are mode 0600, one per key, no temporary file left", async () => {
    const s = fileStorage(join(dir, "modes"));
    await s.save("alice.key.e2e", Uint8Array.of(1, 2));
    expect(statSync(join(dir, "modes", "alice.key.e2e")).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, "modes"))).toEqual(["alice.key.e2e"]);
    expect(existsSync(join(dir, "modes", "alice.key.e2e.tmp"))).toBe(false);
  });
});

describe("indexedDbStorage in Chromium", () => {
  let browser: Browser | null = null;
  let page: ReturnType<typeof Bun.serve> | null = null;
  beforeAll(async () => {
    browser = await launchChromium();
    page = await servePageOf(
      `import { indexedDbStorage } from ${JSON.stringify(join(ROOT, "src/client/storage-idb.ts"))};
import { storageContract } from ${JSON.stringify(join(ROOT, "test/client/storage-contract.ts"))};
(globalThis as any).contract = () => storageContract(indexedDbStorage("contract"));
(globalThis as any).put = (v: number[]) => indexedDbStorage("reload").save("k", Uint8Array.from(v));
(globalThis as any).get = async () => { const b = await indexedDbStorage("reload").load("k"); return b && [...b]; };
`,
      "storage",
    );
  });
  afterAll(async () => {
    await browser?.close();
    page?.stop(true);
  });

  test("the contract, on IndexedDB; a saved value is there after the page reloads", async () => {
    const { tab, logs, reload } = await openTab(browser!, `http://127.0.0.1:${page!.port}/`, "contract");
    const outcomes: Outcome[] = await tab.evaluate(() => (globalThis as any).contract());
    expect(outcomes.length).toBeGreaterThanOrEqual(7);
    expect(failures(outcomes)).toEqual([]);
    await tab.evaluate(() => (globalThis as any).put([4, 5, 6]));
    await reload();
    expect(await tab.evaluate(() => (globalThis as any).get())).toEqual([4, 5, 6]);
    expect(logs.filter((l) => l.startsWith("pageerror"))).toEqual([]);
    await tab.close();
  });
});
