/**
 * Headless Chromium for browser tests: Debian's `chromium` (never a downloaded
 * browser) driven by playwright-core, and a page served from one bundled
 * script. Missing, it fails naming the package (.ci/run installs it).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install the Debian package chromium (apt-get install -y chromium); .ci/run does`);
  return chromium.launch({
    executablePath: CHROMIUM,
    // Without the background-networking flags Chromium keeps dialling out, and this machine refuses it.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Bundles `entry` for the browser; throws with the bundler's messages. */
export async function bundleForBrowser(entry: string): Promise<string> {
  const built = await Bun.build({ entrypoints: [entry], target: "browser" });
  if (!built.success) throw new Error(`bun build --target browser ${entry}: ${built.logs.join("\n")}`);
  return built.outputs[0]!.text();
}

/** Serves `js` as /app.js under a page with a `<p id="s">` status line (on 127.0.0.1: a secure context for WebCrypto). */
export function servePage(js: string, title: string): ReturnType<typeof Bun.serve> {
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) =>
      new URL(req.url).pathname === "/app.js"
        ? new Response(js, { headers: { "content-type": "text/javascript" } })
        : new Response(`<!doctype html><title>${title}</title><p id="s">loading</p><script type="module" src="/app.js"></script>`, { headers: { "content-type": "text/html" } }),
  });
}

/**
 * A page whose script is `source` (TypeScript, importing by absolute path), bundled from a
 * temporary directory so that nothing is written into the tree.
 */
export async function servePageOf(source: string, title: string): Promise<ReturnType<typeof Bun.serve>> {
  const tmp = mkdtempSync(join(tmpdir(), "sb-page-"));
  try {
    await Bun.write(join(tmp, "page.ts"), source);
    return servePage(await bundleForBrowser(join(tmp, "page.ts")), title);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * A new tab on `url` whose script has defined the global function `ready`; `logs` collects the
 * page's console and uncaught errors, for failure messages.
 */
export async function openTab(browser: Browser, url: string, ready: string): Promise<{ tab: Page; logs: string[]; reload(): Promise<void> }> {
  const tab = await browser.newPage();
  const logs: string[] = [];
  tab.on("console", (m) => logs.push(m.text()));
  tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const loaded = async () => {
    try {
      await tab.waitForFunction((f) => typeof (globalThis as Record<string, unknown>)[f] === "function", ready, { timeout: 10_000 });
    } catch (e) {
      throw new Error(`the page's script did not define ${ready}(): ${(e as Error).message}\n${logs.join("\n")}`);
    }
  };
  await tab.goto(url);
  await loaded();
  return { tab, logs, reload: async () => (await tab.reload(), await loaded()) };
}
