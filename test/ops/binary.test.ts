/**
 * The compiled binary (`npm run build`), as it is deployed: `serve` from the
 * binary on ephemeral ports, and every CLI subcommand of the same binary
 * against it, as real processes in a temp directory (the approach of
 * test/cli/cli.test.ts, which runs the sources).
 *
 * Where strace works, the server runs under it (as an unprivileged user with
 * no-new-privs when the tests run as root, as the systemd unit runs it), and
 * two more checks use the trace: every syscall it made is allowed by the
 * unit's SystemCallFilter, and it opened no file of the source tree (the
 * binary is self-contained).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../helpers/harness.ts";
import { buildBinary, CliProcess, CLEAN_ENV, runCli, startBinaryServer, type BinaryServer, type CliResult } from "../helpers/binary.ts";
import { need } from "../helpers/need.ts";

// A bound on waiting for builds and subprocesses, not a timing assertion.
setDefaultTimeout(120_000);

const UNIT = join(ROOT, "systemd/switchboard.service");
const isRoot = process.getuid?.() === 0;
/** The unprivileged identity the traced server runs as when the tests run as root (nobody). */
const NOBODY = 65534;

/** strace works here (ptrace may be forbidden in a container); as root, also through setpriv as nobody. */
function straceWorks(): boolean {
  if (!Bun.which("strace")) return false;
  const pre = isRoot ? (Bun.which("setpriv") ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--no-new-privs"] : null) : [];
  if (pre === null) return false;
  return Bun.spawnSync([...pre, "strace", "-f", "-qq", "-o", "/dev/null", "true"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
}
const TRACE = straceWorks();

let bin: string;
let srv: BinaryServer;
let cwd: string;
let dataDir: string;
let traceDir: string;
const running = new Set<CliProcess>();

beforeAll(async () => {
  bin = await buildBinary();
  cwd = mkdtempSync(join(tmpdir(), "sb-bin-cli-"));
  dataDir = mkdtempSync(join(tmpdir(), "sb-bin-data-"));
  traceDir = mkdtempSync(join(tmpdir(), "sb-bin-trace-"));
  let wrap: string[] = [];
  if (TRACE) {
    wrap = ["strace", "-f", "-qq", "-o", join(traceDir, "trace")];
    if (isRoot) {
      for (const d of [dataDir, traceDir]) chownSync(d, NOBODY, NOBODY);
      wrap = ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--no-new-privs", ...wrap];
    }
  }
  srv = await startBinaryServer(bin, { dataDir, wrap, args: ["--log-level", "info"] });
});

afterAll(() => {
  for (const p of running) p.kill();
  try {
    if (srv) process.kill(srv.pid, "SIGKILL");
  } catch {}
  for (const d of [cwd, dataDir, traceDir]) if (d) rmSync(d, { recursive: true, force: true });
});

const sb = (args: string[], stdin?: string): Promise<CliResult> => runCli(bin, args, stdin === undefined ? { cwd } : { cwd, stdin });
const start = (args: string[]): CliProcess => {
  const p = new CliProcess(bin, args, { cwd });
  running.add(p);
  return p;
};
const tcp = () => ["--port", String(srv.tcp)];
const tls = () => ["--tls", "--port", String(srv.tls), "--data-dir", dataDir];
const jsonLines = (s: string) => s.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

describe("the compiled binary", () => {
  test("is built by package.json's build script into one executable file", () => {
    const st = statSync(bin);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o111).not.toBe(0);
    // The build does not leave the native msgpack helper reachable (it would be loaded from
    // the build machine's node_modules at run time): the script disables it at build time.
    expect(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts.build).toContain("MSGPACKR_NATIVE_ACCELERATION_DISABLED");
  });

  test("--help, and an unknown command exits 2", async () => {
    const help = await sb(["--help"]);
    expect(help.code).toBe(0);
    for (const c of ["serve", "config", "user add", "user code", "device enroll", "device link", "device list", "device revoke", "send", "listen", "chat"]) {
      expect(help.stdout).toContain(c);
    }
    const bad = await sb(["frobnicate"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("unknown command");
  });

  test("config lists the settings; config --check reads a TOML file, the environment and flags", async () => {
    const table = await sb(["config"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain("| `queue.durability` | `--queue-durability` | `SWITCHBOARD_QUEUE_DURABILITY` |");
    const file = join(cwd, "sb.toml");
    writeFileSync(file, 'data_dir = "/var/lib/switchboard"\n[tcp]\nport = 6222\n[log]\nlevel = "warn"\n');
    const r = await runCli(bin, ["config", "--check", "--config", file, "--log-level", "debug"], { cwd, env: { ...CLEAN_ENV, SWITCHBOARD_TLS_PORT: "6223" } });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`# effective configuration (file ${file})`);
    expect(r.stdout).toContain(`data_dir = "/var/lib/switchboard"  # from ${file}`);
    expect(r.stdout).toContain(`port = 6222  # from ${file}`);
    expect(r.stdout).toContain("port = 6223  # from SWITCHBOARD_TLS_PORT");
    expect(r.stdout).toContain('level = "debug"  # from --log-level');
    writeFileSync(file, "[tcp]\nprot = 1\n");
    const typo = await sb(["config", "--check", "--config", file]);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain("unknown key tcp.prot (did you mean tcp.port?)");
  });

  test("serve: listening on ephemeral ports, /healthz and /metrics answer", async () => {
    expect(srv.tcp).toBeGreaterThan(0);
    expect(srv.tls).toBeGreaterThan(0);
    const health = await fetch(`http://127.0.0.1:${srv.http}/healthz`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${srv.http}/metrics`)).text();
    expect(metrics).toMatch(/^switchboard_process_resident_bytes \d+$/m);
    expect(existsSync(join(dataDir, "tls", "dev-cert.pem"))).toBe(true);
    // The web client, built by npm run build and embedded (tools/build-app.ts): the binary runs here in a
    // directory with no web/ and no dist/, so the page and its script come from inside it.
    const page = await fetch(`http://127.0.0.1:${srv.http}/app/`);
    expect({ status: page.status, type: page.headers.get("content-type") }).toEqual({ status: 200, type: "text/html; charset=utf-8" });
    expect(await page.text()).toBe(readFileSync(join(ROOT, "web/app/index.html"), "utf8"));
    const script = await fetch(`http://127.0.0.1:${srv.http}/app/app.js`);
    expect({ status: script.status, type: script.headers.get("content-type") }).toEqual({ status: 200, type: "text/javascript; charset=utf-8" });
    const js = await script.text();
    expect(js).toContain("switchboard-app"); // the page's IndexedDB name: main.ts bundled, not an empty file
    expect(js).not.toContain("node:"); // built for the browser
    expect((await fetch(`http://127.0.0.1:${srv.http}/app/style.css`)).status).toBe(200);
    expect(await (await fetch(`http://127.0.0.1:${srv.http}/app/config.json`)).json()).toEqual({ ws: "/ws" });
  });
});

describe("every subcommand against the binary's server", () => {
  test("user add and user code print enrollment codes", async () => {
    const a = await sb(["user", "add", "alice", "--data-dir", dataDir]);
    expect(a.stderr).toBe("");
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/enrollment code \(one use, valid 24 h\): \S+/);
    const b = await sb(["user", "add", "bob", "--json", "--data-dir", dataDir]);
    expect(b.code).toBe(0);
    expect(JSON.parse(b.stdout)).toMatchObject({ account: "bob", expires_in_s: 86400 });
    const dup = await sb(["user", "add", "alice", "--data-dir", dataDir]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain("account alice already exists");
    const c = await sb(["user", "code", "alice", "--json", "--data-dir", dataDir]);
    expect(c.code).toBe(0);
    expect(typeof JSON.parse(c.stdout).code).toBe("string");
  });

  test("device enroll over TCP and over TLS (trusting the dev certificate under --data-dir)", async () => {
    const alice = JSON.parse((await sb(["user", "code", "alice", "--json", "--data-dir", dataDir])).stdout).code;
    const a = await sb(["device", "enroll", "--user", "alice", "--code", alice, "--name", "phone", ...tcp()]);
    expect(a.stderr).toBe("");
    expect(a.code).toBe(0);
    expect(a.stdout).toBe("enrolled alice device 1; key written to alice.key\n");
    expect(statSync(join(cwd, "alice.key")).mode & 0o777).toBe(0o600);
    const bob = JSON.parse((await sb(["user", "code", "bob", "--json", "--data-dir", dataDir])).stdout).code;
    const b = await sb(["device", "enroll", "--user", "bob", "--code", bob, "--json", ...tls()]);
    expect(b.stderr).toBe("");
    expect(b.code).toBe(0);
    expect(JSON.parse(b.stdout)).toEqual({ account: "bob", device: 1, key: "bob.key" });
    expect(JSON.parse(readFileSync(join(cwd, "bob.key"), "utf8")).server).toMatchObject({ port: srv.tls, tls: true });
  });

  test("device link on a new device, approved with device link --approve", async () => {
    const link = start(["device", "link", "--user", "alice", "--key", "alice-laptop.key", "--name", "laptop", "--json", ...tcp()]);
    const { code } = await link.event("linkcode");
    const approve = await sb(["device", "link", "--approve", code, "--key", "alice.key"]);
    expect(approve.stderr).toBe("");
    expect(approve.code).toBe(0);
    expect(approve.stdout).toBe("approved: alice has a new device 2\n");
    expect(await link.event("linked")).toEqual({ event: "linked", account: "alice", device: 2, key: "alice-laptop.key" });
    expect(await link.proc.exited).toBe(0);
  });

  test("device list", async () => {
    const r = await sb(["device", "list", "--key", "alice.key"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(2);
    expect(lines[0]).toMatch(/^alice device 1 "phone", since .*\(this one\)$/);
    expect(lines[1]).toMatch(/^alice device 2 "laptop", since /);
  });

  test("send (arguments and stdin lines), then listen over TLS gets them in order and live ones too", async () => {
    const one = await sb(["send", "--key", "alice.key", "--to", "bob", "hello", "bob"]);
    expect(one.stderr).toBe("");
    expect(one.code).toBe(0);
    const [first] = jsonLines(one.stdout);
    expect(first).toMatchObject({ event: "sent", to: "bob" });
    const many = await sb(["send", "--key", "alice.key", "--to", "bob"], "line one\nline two\n");
    expect(many.code).toBe(0);
    expect(jsonLines(many.stdout).map((s) => s.seq)).toEqual([first.seq + 1, first.seq + 2]);

    const listen = start(["listen", "--key", "bob.key"]); // TLS, from the key file
    expect(await listen.event("ready")).toEqual({ event: "ready", account: "bob", device: 1 });
    const queued = await listen.event("message", (m) => m.text === "line two");
    expect(queued).toMatchObject({ from: "alice", to: "bob", seq: first.seq + 2 });
    expect(listen.lines.filter((l) => l.includes('"event":"message"')).map((l) => JSON.parse(l).text)).toEqual(["hello bob", "line one", "line two"]);
    const live = jsonLines((await sb(["send", "--key", "alice.key", "--to", "bob", "live one"])).stdout)[0];
    expect(await listen.event("message", (m) => m.text === "live one")).toMatchObject({ seq: live.seq, id: live.id });
    expect(await listen.signal("SIGTERM")).toBe(0);
    expect(listen.stderr).toBe("");
  });

  test("serve --queue-committer worker: the binary's commit Worker loads, commits a send (sent comes after it) and closes at SIGTERM", async () => {
    // The Worker's module is a second entrypoint of the build: without it, the binary could not start the thread.
    const d = mkdtempSync(join(tmpdir(), "sb-bin-worker-"));
    try {
      const w = await startBinaryServer(bin, { dataDir: d, args: ["--queue-committer", "worker"] });
      for (const u of ["erin", "finn"]) {
        const code = JSON.parse((await sb(["user", "add", u, "--json", "--data-dir", d])).stdout).code;
        expect((await sb(["device", "enroll", "--user", u, "--code", code, "--port", String(w.tcp)])).code).toBe(0);
      }
      const sent = await sb(["send", "--key", "erin.key", "--to", "finn", "through the worker"]);
      expect(sent.stderr).toBe("");
      expect(jsonLines(sent.stdout)[0]).toMatchObject({ event: "sent", to: "finn" });
      const exit = await w.stop();
      expect(w.stderr()).not.toContain("commit worker");
      expect(exit).toBe(0);
      expect(w.stderr()).not.toContain("commit worker");
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("chat with piped stdin: sends each line, shows receipts and incoming messages", async () => {
    const bob = start(["listen", "--key", "bob.key"]);
    await bob.event("ready");
    const chat = start(["chat", "--key", "alice.key", "--to", "bob"]);
    expect(await chat.line((l) => l.startsWith("chatting with"))).toBe("chatting with bob as alice (device 1); one message per input line");
    chat.write("hi from the binary\n");
    const got = await bob.event("message", (m) => m.text === "hi from the binary");
    expect(await chat.line((l) => l.includes("delivered"))).toBe(`  ✓✓ delivered #${got.seq}`);
    expect(await bob.signal("SIGTERM")).toBe(0);
    await sb(["send", "--key", "bob.key", "--to", "alice", "answer from bob"]);
    expect(await chat.line((l) => l.includes("answer from bob"))).toBe("bob: answer from bob");
    expect(await chat.end()).toBe(0);
    expect(chat.stderr).toBe("");
  });

  test("device revoke: the revoked key is refused afterwards", async () => {
    const r = await sb(["device", "revoke", "--key", "alice.key", "--device", "2"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("revoked alice device 2\n");
    const refused = await sb(["device", "list", "--key", "alice-laptop.key"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("auth_failed");
  });

  test("SIGTERM: the server drains and exits 0", async () => {
    expect(await srv.stop()).toBe(0);
    expect(srv.stderr()).toContain('"msg":"stopping"');
  });
});

/** Syscall names in an `strace -f` log (one line per call: `PID  name(...`). */
function syscallsIn(trace: string): Set<string> {
  const out = new Set<string>();
  for (const m of trace.matchAll(/^\d+\s+([a-z_0-9]+)\(/gm)) out.add(m[1]!);
  return out;
}

/** Expands a syscall group (`@system-service`) or name into syscall names, through systemd-analyze. */
function expandFilter(items: string[]): Set<string> {
  const text = Bun.spawnSync(["systemd-analyze", "syscall-filter"], { stdout: "pipe", stderr: "ignore" }).stdout.toString();
  const groups = new Map<string, string[]>();
  let cur: string[] | undefined;
  for (const line of text.split("\n")) {
    if (line.startsWith("@")) groups.set(line.split(/\s/)[0]!, (cur = []));
    else if (cur && line.trim() && !line.trim().startsWith("#")) cur.push(line.trim().split(/\s/)[0]!);
  }
  const out = new Set<string>();
  const add = (item: string) => {
    if (!item.startsWith("@")) return void out.add(item);
    const members = groups.get(item);
    if (!members) throw new Error(`systemd-analyze syscall-filter knows no group ${item}`);
    members.forEach(add);
  };
  items.forEach(add);
  return out;
}

describe.skipIf(!TRACE)("what the server did, from strace", () => {
  test("every syscall it made is allowed by the unit's SystemCallFilter", () => {
    need("systemd-analyze", "systemd");
    const used = syscallsIn(readFileSync(join(traceDir, "trace"), "utf8"));
    expect(used.has("epoll_ctl") || used.has("epoll_wait") || used.has("epoll_pwait2")).toBe(true); // the parse found calls
    // systemd's rules: the first line without ~ is an allow list; a ~ line removes from it.
    const lines = readFileSync(UNIT, "utf8").split("\n").filter((l) => l.startsWith("SystemCallFilter=")).map((l) => l.slice("SystemCallFilter=".length).trim());
    expect(lines[0]!.startsWith("~")).toBe(false);
    const allowed = expandFilter(lines.filter((l) => !l.startsWith("~")).flatMap((l) => l.split(/\s+/)));
    for (const d of expandFilter(lines.filter((l) => l.startsWith("~")).flatMap((l) => l.slice(1).trim().split(/\s+/)))) allowed.delete(d);
    // execve is systemd's own (it is always allowed to start the process).
    const refused = [...used].filter((s) => !allowed.has(s) && s !== "execve");
    expect(refused).toEqual([]);
  });

  test("it opened no file of the source tree: the binary carries everything it runs", () => {
    const trace = readFileSync(join(traceDir, "trace"), "utf8");
    const opened = [...trace.matchAll(/^\d+\s+(?:openat|open|stat|newfstatat|statx|access|readlink)\((?:AT_FDCWD, )?"([^"]+)"/gm)].map((m) => m[1]!);
    expect(opened.length).toBeGreaterThan(0);
    expect(opened.filter((p) => p.startsWith(ROOT + "/"))).toEqual([]);
  });
});
