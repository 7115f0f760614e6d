/**
 * Hot reload of handler modules (src/core/loader.ts): a server started with
 * --modules-dir on a temp copy of src/modules, SDK clients connected, module
 * files changed on disk, then SIGHUP or `switchboard reload`. The same
 * connections (no close, no second `ready`) see the new behaviour; queued
 * messages and module state (save/restore) survive; a module that fails to
 * import or to start leaves its running version in place, and the reload
 * says why. Then the same with the compiled binary.
 *
 * Waiting for a SIGHUP reload polls a metric (switchboard_module_info or
 * switchboard_module_reloads_total): a bound on waiting, not a timing assertion.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Subprocess } from "bun";
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { BUN, MAIN, ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec, type Collected } from "./util.ts";
import { enrollDevice, ServerError, SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { HOST_FILES, scanModules } from "../../src/core/loader.ts";
import { DEFAULT_MODULES, MODULE_ORDER } from "../../src/modules/index.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";
import { buildBinary } from "../helpers/binary.ts";

// Bounds on waiting for subprocesses and a binary build, not timing assertions.
setDefaultTimeout(120_000);

const ENV = CLEAN_ENV;
const tmp = mkdtempSync(join(tmpdir(), "sb-reload-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A modules dir: a copy of src/modules plus the test's own `probe` module. */
function modulesCopy(name: string): string {
  const dir = join(tmp, name, "modules");
  cpSync(join(ROOT, "src/modules"), dir, { recursive: true });
  writeProbe(dir, "1", "one");
  return dir;
}

/**
 * The probe module: iq `probe` answers its version, a counter and a word from a
 * file of its own folder (re-imported with it). The counter lives in the module
 * instance and crosses a reload only through save()/restore(). `{fail: true}`
 * answers an error code imported by value from the server (protocol/errors.ts).
 */
function writeProbe(dir: string, version: string, word: string, startBody = ""): void {
  mkdirSync(join(dir, "probe"), { recursive: true });
  writeFileSync(join(dir, "probe", "word.ts"), `export const word = ${JSON.stringify(word)};\n`);
  writeFileSync(
    join(dir, "probe", "index.ts"),
    `import type { Module, Registration } from "../../core/module.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { word } from "./word.ts";

let n = 0;
const probe: Module = {
  name: "probe",
  version: ${JSON.stringify(version)},
  start(ctx): Registration[] {
    n = 0; // state is made by start(): only restore() brings it back
    ${startBody}
    return [{ iq: "probe", handle: (_conn, a) => a.fail ? { ok: false, e: ErrorCode.BAD_FIELD, m: "asked to fail" } : { ok: true, r: { v: ${JSON.stringify(version)}, n: ++n, word } } }];
  },
  save: () => ({ n }),
  restore(s) { n = (s as { n: number }).n; },
};
export default probe;
`,
  );
}

/** Changes of two real modules, appended so that they do not depend on the modules' insides. */
function bumpPresence(dir: string): void {
  appendFileSync(
    join(dir, "presence", "index.ts"),
    `
// Appended by test/wire/reload.test.ts: a new version whose presence answers carry hot: true.
presence.version = "9.9.9";
{
  const start = presence.start;
  presence.start = (ctx) => start(ctx).map((r) => ("iq" in r && r.iq === "presence" ? { iq: "presence", handle: async (conn, a) => { const x = await r.handle(conn, a); return x.ok ? { ok: true, r: { ...(x.r as object), hot: true } } : x; } } : r));
}
`,
  );
}
function bumpMessaging(dir: string): void {
  appendFileSync(join(dir, "messaging", "index.ts"), `\nmessaging.version = "1.0.1-reloaded"; // appended by test/wire/reload.test.ts\n`);
}

interface Report {
  ok: boolean;
  dir: string | null;
  modules: { module: string; result: string; version?: string; from?: string; to?: string; stage?: string; error?: string; note?: string }[];
}

/** `switchboard reload` as a subprocess (from source, or the binary given). */
async function reloadCli(httpPort: number, extra: string[] = [], cmd: string[] = [BUN, MAIN]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([...cmd, "reload", "--http-port", String(httpPort), ...extra], { cwd: tmp, env: ENV, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

const resultOf = (r: Report, name: string) => r.modules.find((m) => m.module === name);

async function metricOr(srv: { metric(n: string, l?: string): Promise<number> }, name: string, labels: string, dflt: number): Promise<number> {
  try {
    return await srv.metric(name, labels);
  } catch {
    return dflt;
  }
}

function noClose(col: Collected): void {
  expect(col.closes).toEqual([]);
  expect(col.readies).toBe(1);
}

describe("modules of src/modules", () => {
  test("every folder of src/modules is a built-in module, in the order of DEFAULT_MODULES (the binary embeds what source loads)", () => {
    expect(scanModules(join(ROOT, "src/modules"), MODULE_ORDER)).toEqual(DEFAULT_MODULES.map((m) => m.name));
  });

  test("every server file a module imports by value is in the loader's HOST_FILES (all a compiled binary can give it), written with its extension", () => {
    const src = join(ROOT, "src");
    const t = new Bun.Transpiler({ loader: "ts" });
    const missing: string[] = [];
    const walk = (d: string, folder: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p, folder);
        else if (/\.[jt]s$/.test(e.name)) {
          // scanImports leaves out `import type`, which is erased before anything is resolved.
          for (const imp of t.scanImports(readFileSync(p, "utf8"))) {
            if (!imp.path.startsWith(".")) continue;
            // Bun resolves extension-less specifiers without asking the loader's plugin: never reloaded, not found in the binary.
            if (!/\.[jt]s$/.test(imp.path)) missing.push(`${relative(ROOT, p)} imports ${imp.path}: write the file's extension`);
            const target = resolve(dirname(p), imp.path);
            if (!relative(folder, target).startsWith("..")) continue; // the module's own file
            const key = relative(src, target).split("\\").join("/");
            if (!(key in HOST_FILES)) missing.push(`${relative(ROOT, p)} imports ${imp.path}: add "${key}" to HOST_FILES in src/core/module-imports.ts`);
          }
        }
      }
    };
    for (const name of scanModules(join(src, "modules"))) walk(join(src, "modules", name), join(src, "modules", name));
    expect(missing).toEqual([]);
  });
});

describe("reload from source (--modules-dir)", () => {
  let srv: TestServer;
  let mods: string;
  beforeAll(async () => {
    mods = modulesCopy("source");
    srv = await startServer({ args: ["--modules-dir", mods] });
  });
  afterAll(() => srv?.cleanup());

  test("SIGHUP: connected clients see the new presence and messaging code; queued messages, receipts and dedup carry on", async () => {
    let colA!: Collected, colB!: Collected;
    // confirmSent: false: the resend of an answered id below is what dedup across the reload is checked with, and a
    // confirming client gives its record up once it holds the sent (PROTOCOL.md §6.2; it never resends such an id).
    const alice = await srv.client(await srv.newDevice("alice"), { confirmSent: false, setup: (c) => (colA = collect(c)) });
    const bob = await srv.client(await srv.newDevice("bob"), { setup: (c) => (colB = collect(c)) });
    const bob2kf = await srv.newDevice("bob"); // offline: its copies wait in the queue across the reload

    // Online means in use and visible to contacts (docs/PROTOCOL.md §6.10): bob is active, and they are each other's.
    await alice.addContacts(["bob"]);
    await bob.addContacts(["alice"]);
    await bob.setPresence("active");
    expect(await srv.metric("switchboard_module_info", '{module="presence",version="2.0.0"}')).toBe(1);
    expect(await srv.metric("switchboard_module_info", '{module="probe",version="1"}')).toBe(1);
    const before = await alice.request("presence", { u: "bob" });
    expect(before.online).toBe(true);
    expect(before.hot).toBeUndefined();

    const got = (n: number) => waitFor(() => colB.messages.length >= n, `bob's message ${n}`);
    const early = await alice.send("bob", "before the reload");
    await got(1);

    bumpPresence(mods);
    bumpMessaging(mods);
    srv.proc.kill("SIGHUP");
    await waitFor(async () => (await metricOr(srv, "switchboard_module_info", '{module="presence",version="9.9.9"}', 0)) === 1, "presence 9.9.9 to load");
    await waitFor(async () => (await metricOr(srv, "switchboard_module_info", '{module="messaging",version="1.0.1-reloaded"}', 0)) === 1, "messaging to reload");
    // One series per module: the old version is no longer reported as running.
    await expect(srv.metric("switchboard_module_info", '{module="presence",version="2.0.0"}')).rejects.toThrow("not found");

    // The same connection, the new code.
    const after = await alice.request("presence", { u: "bob" });
    expect(after).toMatchObject({ online: true, hot: true });

    // A message accepted by the old messaging reaches the device that was offline, and its ack,
    // handled by the new messaging's delivery:acked hook, becomes a `dlv` receipt for alice.
    let col2!: Collected;
    const bob2 = await srv.client(bob2kf, { setup: (c) => (col2 = collect(c)) });
    await waitFor(() => col2.messages.some((m) => m.id === early.id), "bob2 to get the message queued before the reload");
    await waitFor(() => colA.receipts.some((r) => r.kind === "dlv" && r.device === bob2kf.device && r.seq === early.seq), "alice's dlv receipt from bob2");

    // New messages flow on the same connections; a resend of the old id gets its original answer.
    const late = await alice.send("bob", "after the reload");
    expect(late.seq).toBe(early.seq + 1);
    await got(2);
    expect(dec(colB.messages[1]!.payload)).toBe("after the reload");
    const again = await alice.send("bob", "before the reload", { id: early.id });
    expect(again).toEqual(early);

    noClose(colA);
    noClose(colB);
    await alice.close();
    await bob.close();
    await bob2.close();
  });

  test("switchboard reload: new code and state (save/restore) on the same connection; a broken module keeps its running version and the report says why", async () => {
    let col!: Collected;
    const carol = await srv.client(await srv.newDevice("carol"), { setup: (c) => (col = collect(c)) });
    const probe = () => carol.request("probe");
    expect(await probe()).toEqual({ v: "1", n: 1, word: "one" });
    expect(await probe()).toMatchObject({ v: "1", n: 2 });

    // A new version, and a new file of its folder: reloaded, and its counter goes on from 2.
    writeProbe(mods, "2", "two");
    let r = await reloadCli(srv.http);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^probe\s+reloaded\s+1 -> 2$/m);
    expect(r.stdout).toMatch(/^messaging\s+kept\s+1\.0\.1-reloaded$/m);
    expect(await probe()).toEqual({ v: "2", n: 3, word: "two" });
    // A value the module imported from the server is the server's own.
    await expect(carol.request("probe", { fail: true })).rejects.toMatchObject({ code: "bad_field" });

    // A syntax error: the import fails, nothing changes, the report names the file.
    writeFileSync(join(mods, "probe", "index.ts"), `export default { name: "probe", version: "3", start( { return [] } };\n`);
    r = await reloadCli(srv.http);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^probe\s+failed\s+import: .*probe\/index\.ts:1:\d+: /m);
    expect(r.stdout).toMatch(/still running 2$/m);
    expect(await probe()).toEqual({ v: "2", n: 4, word: "two" });

    // start() throws (by SIGHUP this time): rolled back to version 2, restarted with its state.
    const failedBefore = await srv.metric("switchboard_module_reloads_total", '{result="failed"}');
    writeProbe(mods, "4", "four", `throw new Error("probe 4 refuses to start");`);
    srv.proc.kill("SIGHUP");
    await waitFor(async () => (await srv.metric("switchboard_module_reloads_total", '{result="failed"}')) > failedBefore, "the failed reload");
    expect(await probe()).toEqual({ v: "2", n: 5, word: "two" });
    expect(await srv.metric("switchboard_module_info", '{module="probe",version="2"}')).toBe(1);
    // The report says why (the same files, so the same failure).
    r = await reloadCli(srv.http, ["--json"]);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout) as Report;
    expect(rep.ok).toBe(false);
    expect(resultOf(rep, "probe")).toMatchObject({ result: "failed", stage: "start", version: "2" });
    expect(resultOf(rep, "probe")!.error).toContain("probe 4 refuses to start");
    expect(resultOf(rep, "presence")).toEqual({ module: "presence", result: "kept", version: "9.9.9" });

    // An import of a server file that does not exist: refused with the fix, still version 2.
    writeFileSync(join(mods, "probe", "index.ts"), readFileSync(join(mods, "probe", "index.ts"), "utf8").replace('"./word.ts"', '"../../store/nowhere.ts"').replace("probe 4 refuses", "x"));
    r = await reloadCli(srv.http, ["--json"]);
    expect(resultOf(JSON.parse(r.stdout), "probe")).toMatchObject({ result: "failed", stage: "import", version: "2" });
    expect(resultOf(JSON.parse(r.stdout), "probe")!.error).toContain("store/nowhere.ts");

    // Fixed: it loads, with the state carried through the failed attempts.
    writeProbe(mods, "5", "five");
    r = await reloadCli(srv.http);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^probe\s+reloaded\s+2 -> 5$/m);
    expect(await probe()).toEqual({ v: "5", n: 6, word: "five" });
    expect(await srv.metric("switchboard_module_info", '{module="probe",version="5"}')).toBe(1);

    noClose(col);
    await carol.close();
  });

  test("POST /admin/reload only; a new module folder is loaded; a module's name must be its folder's", async () => {
    const get = await srv.http_get("/admin/reload");
    expect(get.status).toBe(405);

    const dave = await srv.client(await srv.newDevice("dave"));
    await expect(dave.request("echo2")).rejects.toMatchObject({ code: "unknown_op" });
    mkdirSync(join(mods, "echo2"));
    writeFileSync(
      join(mods, "echo2", "index.ts"),
      `export default { name: "echo2", version: "0.1", start: () => [{ iq: "echo2", handle: (_c, a) => ({ ok: true, r: a }) }] };\n`,
    );
    mkdirSync(join(mods, "misnamed"));
    writeFileSync(join(mods, "misnamed", "index.ts"), `export default { name: "other", version: "1", start: () => [] };\n`);
    const res = await fetch(`http://127.0.0.1:${srv.http}/admin/reload`, { method: "POST" });
    expect(res.status).toBe(200);
    const rep = (await res.json()) as Report;
    expect(resultOf(rep, "echo2")).toEqual({ module: "echo2", result: "loaded", version: "0.1" });
    expect(resultOf(rep, "misnamed")).toMatchObject({ result: "failed", stage: "import", version: null });
    expect(resultOf(rep, "misnamed")!.error).toContain("named \"other\"");
    expect(await dave.request("echo2", { x: 1 })).toEqual({ x: 1 });
    await dave.close();
  });
});

describe("compiled binary", () => {
  let bin: string;
  const procs: Subprocess[] = [];
  beforeAll(async () => {
    // The project's own build (package.json): it also bundles the commit Worker's module (queue.committer = worker).
    bin = await buildBinary();
  });
  afterAll(() => {
    for (const p of procs) p.kill("SIGKILL");
  });

  /** The binary's server on ephemeral ports, and a way to connect a new device of an account. */
  async function serveBinary(args: string[]) {
    const dataDir = mkdtempSync(join(tmp, "bindata-"));
    const proc = Bun.spawn([bin, "serve", "--data-dir", dataDir, "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0", "--log-level", "warn", ...args], {
      cwd: tmp, env: ENV, stdout: "pipe", stderr: "inherit",
    });
    procs.push(proc);
    const reader = proc.stdout.getReader();
    let buf = "";
    while (!buf.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the binary exited before listening (exit ${await proc.exited})`);
      buf += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    const where = JSON.parse(buf.split("\n")[0]!) as { tcp: number; http: number };
    const metric = async (name: string, labels = "") => {
      const text = await (await fetch(`http://127.0.0.1:${where.http}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
      if (!line) throw new Error(`metric ${name}${labels} not found`);
      return Number(line.split(" ").pop());
    };
    const connect = async (account: string, setup: (c: SwitchboardClient) => void): Promise<SwitchboardClient> => {
      const store = new SqliteAccountStore(dataDir);
      let code: string;
      try {
        const r = store.createAccount(account, 3600);
        if (!r.ok) throw new Error(r.message);
        code = r.value.code;
      } finally {
        store.close();
      }
      const key = generateDeviceKey();
      const e = await enrollDevice({ host: "127.0.0.1", port: where.tcp, account, code, key });
      const kf: KeyFile = keyToFile(key, e.account, e.device);
      const c = new SwitchboardClient({ host: "127.0.0.1", port: where.tcp, key: kf });
      setup(c);
      await c.connect();
      return c;
    };
    return { proc, http: where.http, metric, connect };
  }

  test("with a modules dir on disk: module files change, `switchboard reload` of the binary, the same connection sees the new code", async () => {
    const mods = modulesCopy("binary");
    const s = await serveBinary(["--modules-dir", mods]);
    // Every module of the copy started in the binary, where server files come from HOST_FILES.
    for (const name of [...MODULE_ORDER, "probe"]) expect(await s.metric("switchboard_module_info", `{module="${name}",version="${name === "probe" ? "1" : DEFAULT_MODULES.find((m) => m.name === name)!.version}"}`)).toBe(1);
    let col!: Collected;
    const erin = await s.connect("erin", (c) => (col = collect(c)));
    expect(await erin.request("probe")).toEqual({ v: "1", n: 1, word: "one" });
    await erin.setPresence("active"); // online means in use (docs/PROTOCOL.md §6.10)

    writeProbe(mods, "2", "two");
    bumpPresence(mods);
    let r = await reloadCli(s.http, [], [bin]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^probe\s+reloaded\s+1 -> 2$/m);
    expect(r.stdout).toMatch(/^presence\s+reloaded\s+2\.0\.0 -> 9\.9\.9$/m);
    expect(await erin.request("probe")).toEqual({ v: "2", n: 2, word: "two" });
    await expect(erin.request("probe", { fail: true })).rejects.toBeInstanceOf(ServerError);
    expect(await erin.request("presence", { u: "erin" })).toMatchObject({ online: true, hot: true });

    writeFileSync(join(mods, "probe", "index.ts"), "export default {{{\n");
    r = await reloadCli(s.http, [], [bin]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^probe\s+failed\s+import: .*probe\/index\.ts:1:\d+: /m);
    expect(await erin.request("probe")).toEqual({ v: "2", n: 3, word: "two" });

    noClose(col);
    await erin.close();
    s.proc.kill("SIGTERM");
    await s.proc.exited;
  });

  test("without a modules dir: the built-in modules run, and a reload keeps them and says why", async () => {
    const s = await serveBinary([]);
    for (const m of DEFAULT_MODULES) expect(await s.metric("switchboard_module_info", `{module="${m.name}",version="${m.version}"}`)).toBe(1);
    const r = await reloadCli(s.http, ["--json"], [bin]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.stdout) as Report;
    expect(rep.dir).toBeNull();
    expect(rep.modules.map((m) => m.module)).toEqual(MODULE_ORDER as string[]);
    for (const m of rep.modules) expect(m).toMatchObject({ result: "kept", note: expect.stringContaining("built into the binary") });
    s.proc.kill("SIGTERM");
    await s.proc.exited;
  });
});
