/**
 * `switchboard/client` as an app developer gets it (issue 18): `npm pack` of
 * this repository (its prepack writes the declarations, dist/types/), the
 * tarball installed into a temporary app with npm, and a tiny app importing
 * `switchboard/client`, never `src/`:
 * - type-checked by tsc with the app's own tsconfig (the `types` condition);
 * - run in Bun against a real server, over TCP with its key file and over
 *   WebSocket with a WebCrypto signer (`keyFileSigner`);
 * - bundled for the browser with `bun build --target browser` (the `browser`
 *   condition: src/client/browser.ts) and run in headless Chromium, where the
 *   SDK's SwitchboardClient logs in over WS, messages a TCP device and gets its
 *   ✓✓ (dlv) and read receipts, and receives its reply (not end-to-end
 *   encrypted yet: SecureClient's crypto is not in the browser entry).
 * - and the installed package's own server (its src/cli/main.ts) serves the
 *   web client at /app, bundled from the package's web/app at the first request.
 * A TCP client of the test receives each message. Screenshot:
 * test-artefacts/package-browser.png. npm fetches the package's dependencies
 * (--prefer-offline: from npm's cache when it has them).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleForBrowser, launchChromium, servePage } from "../helpers/chromium.ts";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";
import { collect, dec } from "../wire/util.ts";

const ARTEFACTS = join(ROOT, "test-artefacts");
const TSC = join(ROOT, "node_modules/.bin/tsc");
let srv: TestServer;
let dir: string;
let app: string;

async function run(cmd: string[], cwd: string, env: Record<string, string> = {}): Promise<string> {
  const p = Bun.spawn(cmd, { cwd, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} (in ${cwd}) exited ${code}:\n${out}\n${err}`);
  return out;
}

beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sb-pack-"));
  await run(["npm", "pack", "--pack-destination", dir, "--silent"], ROOT);
  const tgz = readdirSync(dir).find((f) => f.endsWith(".tgz"));
  if (!tgz) throw new Error(`npm pack wrote no tarball into ${dir}`);
  app = join(dir, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "tiny-app", private: true, type: "module", dependencies: { switchboard: `file:../${tgz}` } }));
  // --ignore-scripts: the app runs on this Bun; --omit=optional: no platform binaries it does not need.
  await run(["npm", "install", "--prefer-offline", "--ignore-scripts", "--omit=optional", "--no-audit", "--no-fund"], app);
}, 120_000);
afterAll(() => {
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const APP = `import { SwitchboardClient, keyFileSigner, type KeyFile, type Sent } from "switchboard/client";
declare const process: { env: Record<string, string | undefined> };
const kf: KeyFile = JSON.parse(process.env.SB_KEY!);
const ws = process.env.SB_WS;
const c = new SwitchboardClient(ws ? { url: ws, host: "", port: 0, key: kf, sign: await keyFileSigner(kf) } : { host: "127.0.0.1", port: Number(process.env.SB_PORT), key: kf });
await c.connect();
const s: Sent = await c.send(process.env.SB_TO!, ws ? "packaged, over ws" : "packaged, over tcp");
console.log(JSON.stringify({ seq: s.seq }));
await c.close();
`;

const TSCONFIG = { compilerOptions: { target: "ESNext", module: "Preserve", moduleResolution: "bundler", lib: ["ESNext", "DOM"], types: [], strict: true, noEmit: true, skipLibCheck: true } };

test("the packed SDK type-checks in an app and runs in Bun over TCP and over WS (WebCrypto signer)", async () => {
  writeFileSync(join(app, "app.ts"), APP);
  writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ ...TSCONFIG, include: ["app.ts"] }));
  await run([TSC, "-p", "."], app);
  // The declarations are real types, not `any`: a wrong use is an error.
  writeFileSync(join(app, "wrong.ts"), `import { SwitchboardClient } from "switchboard/client";\nexport const n: number = SwitchboardClient;\n`);
  writeFileSync(join(app, "tsconfig.wrong.json"), JSON.stringify({ ...TSCONFIG, include: ["wrong.ts"] }));
  await expect(run([TSC, "-p", "tsconfig.wrong.json"], app)).rejects.toThrow(/TS2322/);

  const ka = await srv.newDevice("pkgapp");
  const kb = await srv.newDevice("pkgfriend");
  const b = await srv.client(kb);
  const cb = collect(b);
  const tcp = JSON.parse(await run([process.execPath, "app.ts"], app, { SB_KEY: JSON.stringify(ka), SB_TO: "pkgfriend", SB_PORT: String(srv.tcp) }));
  const ws = JSON.parse(await run([process.execPath, "app.ts"], app, { SB_KEY: JSON.stringify(ka), SB_TO: "pkgfriend", SB_WS: `ws://127.0.0.1:${srv.ws}/` }));
  await waitFor(() => cb.messages.length === 2, "both messages from the packaged app");
  expect(cb.messages.map((m) => [dec(m.payload), m.seq])).toEqual([["packaged, over tcp", tcp.seq], ["packaged, over ws", ws.seq]]);
  expect(cb.messages.every((m) => m.from === "pkgapp")).toBe(true);
  await b.close();
}, 60_000);

test("bundled for the browser from the package, the SDK's client in Chromium messages a TCP device both ways and sees ✓✓ and read", async () => {
  writeFileSync(
    join(app, "web.ts"),
    `import { SwitchboardClient, keyFileSigner, type KeyFile, type Message, type Receipt } from "switchboard/client";
const got: { messages: { from: string; text: string; seq: number }[]; receipts: { kind: string; seq: number }[] } = { messages: [], receipts: [] };
let c: SwitchboardClient | null = null;
const show = () => ((globalThis as any).document.getElementById("s").textContent = JSON.stringify(got));
(globalThis as any).got = got;
(globalThis as any).start = async (url: string, kf: KeyFile) => {
  c = new SwitchboardClient({ url, host: "", port: 0, key: kf, sign: await keyFileSigner(kf), reconnect: false });
  c.on("message", (m: Message) => (got.messages.push({ from: m.from, text: new TextDecoder().decode(m.payload), seq: m.seq }), show()));
  c.on("receipt", (r: Receipt) => (got.receipts.push({ kind: r.kind, seq: r.seq }), show()));
  await c.connect();
};
(globalThis as any).send = async (to: string, text: string) => (await c!.send(to, text)).seq;
(globalThis as any).stop = () => c!.close();
`,
  );
  // The browser condition of switchboard/client's exports (src/client/browser.ts) is what the bundler takes here.
  const page = servePage(await bundleForBrowser(join(app, "web.ts")), "packaged SDK");
  const browser = await launchChromium();
  try {
    const kw = await srv.newDevice("pkgweb");
    const kt = await srv.newDevice("pkgweb-friend");
    const t = await srv.client(kt);
    const ct = collect(t);
    await t.addContacts(["pkgweb"]); // a contact: its receipts go to the page (docs/PROTOCOL.md §6.11)
    const tab = await browser.newPage();
    const logs: string[] = [];
    tab.on("console", (m) => logs.push(m.text()));
    tab.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    const inPage = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
      try {
        return await f();
      } catch (e) {
        throw new Error(`${what}: ${(e as Error).message}\npage console:\n${logs.join("\n")}`);
      }
    };
    await tab.goto(`http://127.0.0.1:${page.port}/`);
    await inPage("the page's script", () => tab.waitForFunction(() => typeof (globalThis as any).start === "function", undefined, { timeout: 10_000 }));
    await inPage("login over WS", () => tab.evaluate(([url, kf]) => (globalThis as any).start(url, kf), [`ws://127.0.0.1:${srv.ws}/`, kw] as const));
    const seq = await inPage("send", () => tab.evaluate(() => (globalThis as any).send("pkgweb-friend", "from the packaged SDK in Chromium")));
    await waitFor(() => ct.messages.length === 1, "the TCP device gets the page's message");
    expect(ct.messages[0]).toMatchObject({ from: "pkgweb", fromDevice: kw.device, seq });
    expect(dec(ct.messages[0]!.payload)).toBe("from the packaged SDK in Chromium");
    // ✓✓: the TCP device acknowledged it; read: it marks it read.
    await inPage("the dlv receipt in the page", () => tab.waitForFunction((s) => (globalThis as any).got.receipts.some((r: any) => r.kind === "dlv" && r.seq === s), seq, { timeout: 15_000 }));
    t.markRead("pkgweb", seq);
    await inPage("the read receipt in the page", () => tab.waitForFunction((s) => (globalThis as any).got.receipts.some((r: any) => r.kind === "read" && r.seq === s), seq, { timeout: 15_000 }));
    const back = await t.send("pkgweb", "and back to the browser");
    await inPage("the reply in the page", () => tab.waitForFunction((s) => (globalThis as any).got.messages.some((m: any) => m.seq === s), back.seq, { timeout: 15_000 }));
    expect(await tab.evaluate(() => (globalThis as any).got.messages)).toEqual([{ from: "pkgweb-friend", text: "and back to the browser", seq: back.seq }]);
    await waitFor(() => ct.receipts.some((r) => r.kind === "dlv" && r.seq === back.seq), "the page's dlv receipt at the TCP device");
    mkdirSync(ARTEFACTS, { recursive: true });
    await tab.screenshot({ path: join(ARTEFACTS, "package-browser.png") });
    await tab.evaluate(() => (globalThis as any).stop());
    await t.close();
  } finally {
    await browser.close();
    page.stop(true);
  }
}, 60_000);

test("the installed package's own server serves the web client at /app, built from the package's files", async () => {
  const data = mkdtempSync(join(tmpdir(), "sb-pack-data-"));
  // What the package's `switchboard serve` runs (bin/switchboard.cjs starts its src/cli/main.ts on Bun), on this Bun.
  const main = join(app, "node_modules", "switchboard", "src", "cli", "main.ts");
  const p = Bun.spawn([process.execPath, main, "serve", "--data-dir", data, "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0", "--ws-http-path", "/ws", "--log-level", "warn"], {
    cwd: app, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe",
  });
  try {
    const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the packaged server exited (${await p.exited}): ${await new Response(p.stderr).text()}`);
      line += new TextDecoder().decode(value);
    }
    const { http } = JSON.parse(line.split("\n")[0]!) as { http: number };
    const base = `http://127.0.0.1:${http}/app/`;
    expect(await (await fetch(`${base}config.json`)).json()).toEqual({ ws: "/ws" });
    const js = await fetch(`${base}app.js`);
    const body = await js.text();
    expect({ status: js.status, bundled: body.length > 10_000 }).toEqual({ status: 200, bundled: true });
    expect(body).toContain("switchboard-app"); // the page's IndexedDB name: web/app/main.ts, from the package
  } finally {
    p.kill();
    await p.exited;
    rmSync(data, { recursive: true, force: true });
  }
});
