/**
 * The deploy files under systemd/: the units pass `systemd-analyze verify`
 * (on copies whose ExecStart points at the freshly built binary, since
 * verify refuses a unit whose binary is missing) and its security review;
 * the kernel accepts the sysctl values (applied in a private network
 * namespace, never on the host); install.sh installs everything into a
 * temporary root; the monitor unit's command runs on the compiled binary.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, waitFor } from "../helpers/harness.ts";
import { buildBinary, CLEAN_ENV, runCli, startBinaryServer } from "../helpers/binary.ts";
import { SETTINGS } from "../../src/core/config.ts";
import { need } from "../helpers/need.ts";

// A bound on waiting for the build and subprocesses, not a timing assertion.
setDefaultTimeout(120_000);

const DIR = join(ROOT, "systemd");
const UNITS = ["switchboard.service", "switchboard-mon.service", "switchboard-mon.timer"];
const INSTALLED_BIN = "/usr/local/bin/switchboard";
const INSTALLED_MON = "/usr/local/lib/switchboard/mon.ts";
const ANALYZE = Bun.which("systemd-analyze") !== null;
const isRoot = process.getuid?.() === 0;

let bin: string;
const temps: string[] = [];
const temp = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
};

beforeAll(async () => {
  bin = await buildBinary();
});
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const read = (name: string) => readFileSync(join(DIR, name), "utf8");

/** `Key=value` lines of a unit (the last one wins, as in systemd, except for lists we read whole). */
function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}
const one = (d: Map<string, string[]>, key: string) => d.get(key)?.at(-1);

/** Seconds from a systemd time span such as "45s", "2min", "1min 30s". */
function seconds(span: string): number {
  let total = 0;
  for (const m of span.matchAll(/(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?/g)) {
    const unit = m[2] ?? "s";
    total += Number(m[1]) * (unit === "ms" ? 0.001 : unit === "min" || unit === "m" ? 60 : unit === "h" ? 3600 : 1);
  }
  return total;
}

/**
 * Runs `systemd-analyze verify` on copies of unit files (name -> text) in a
 * temp directory. ok only if it exits 0 and prints nothing: verify reports a
 * misspelt key or a bad value as a warning ("ignoring") and still exits 0.
 */
async function verify(units: Record<string, string>): Promise<{ ok: boolean; output: string }> {
  const dir = temp("sb-verify-");
  for (const [name, text] of Object.entries(units)) writeFileSync(join(dir, name), text);
  const p = Bun.spawn(["systemd-analyze", "verify", "--man=no", ...Object.keys(units).map((n) => join(dir, n))], {
    cwd: dir,
    env: { ...CLEAN_ENV, SYSTEMD_LOG_COLOR: "0", SYSTEMD_PAGER: "" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const output = (out + err).trim();
  return { ok: code === 0 && output === "", output: `exit ${code}\n${output}` };
}

/** The repository's units with the installed binary's path replaced by the freshly built one. */
const sourceUnits = (): Record<string, string> => Object.fromEntries(UNITS.map((n) => [n, read(n).replaceAll(INSTALLED_BIN, bin)]));

describe("systemd-analyze", () => {
  beforeAll(() => need("systemd-analyze", "systemd"));
  test("verify accepts the units, with no warning", async () => {
    const r = await verify(sourceUnits());
    expect(r.output).toBe("exit 0\n");
    expect(r.ok).toBe(true);
  });

  test("verify catches a broken line: a misspelt key, a bad value, a missing binary", async () => {
    const good = sourceUnits();
    const broken: [string, (s: string) => string][] = [
      ["misspelt key", (s) => s.replace(/^LockPersonality=yes$/m, "LockPersonalty=yes")],
      ["bad value", (s) => s.replace(/^Type=exec$/m, "Type=exek")],
      ["missing binary", (s) => s.replaceAll(bin, "/nonexistent/switchboard")],
      ["bad time span", (s) => s.replace(/^TimeoutStopSec=.*$/m, "TimeoutStopSec=forty-five")],
    ];
    for (const [what, mutate] of broken) {
      const text = mutate(good["switchboard.service"]!);
      expect(text).not.toBe(good["switchboard.service"]); // the mutation applied
      const r = await verify({ ...good, "switchboard.service": text });
      if (r.ok) throw new Error(`verify accepted a unit with a ${what}`);
    }
  });

  test("the security review (offline) rates the server's sandbox at most 2.0 of 10", async () => {
    const dir = temp("sb-security-");
    writeFileSync(join(dir, "switchboard.service"), sourceUnits()["switchboard.service"]!);
    const p = Bun.spawn(["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", join(dir, "switchboard.service")], {
      env: { ...CLEAN_ENV, SYSTEMD_LOG_COLOR: "0" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    const score = Number(/Overall exposure level for switchboard\.service: ([\d.]+)/.exec(out)?.[1]);
    expect(score).toBeLessThanOrEqual(2);
    expect(code).toBe(0);
  });
});

describe("switchboard.service", () => {
  const d = directives(read("switchboard.service"));

  test("runs the binary as its own user with the config file, and reloads with SIGHUP", () => {
    expect(one(d, "ExecStart")).toBe(`${INSTALLED_BIN} serve --config /etc/switchboard/switchboard.toml`);
    expect(one(d, "ExecReload")).toBe("/bin/kill -HUP $MAINPID");
    expect(one(d, "User")).toBe("switchboard");
    expect(one(d, "Restart")).toBe("on-failure");
    // exec, not notify: nothing in the server sends READY=1 (Bun has no unix datagram socket).
    expect(one(d, "Type")).toBe("exec");
    expect(read("switchboard.sysusers")).toMatch(/^u switchboard - ".*" \/var\/lib\/switchboard \/usr\/sbin\/nologin$/m);
  });

  test("TimeoutStopSec outlasts the server's own drain bound", () => {
    const stop = seconds(one(d, "TimeoutStopSec")!);
    const def = SETTINGS.find((s) => s.key === "shutdown.timeout");
    expect(def).toBeDefined();
    expect(stop).toBeGreaterThan(def!.def as number);
    // The shipped config's drain bound, plus a margin for the final commit, fits as well.
    const shipped = Number(/^\[shutdown\][^[]*^timeout = (\d+)/m.exec(read("switchboard.toml"))?.[1]);
    expect(stop).toBeGreaterThanOrEqual(shipped + 15);
    expect(stop).toBeGreaterThanOrEqual(45); // covers the ≤ 30 s drain the server is designed for
  });

  test("LimitNOFILE is high and within the fs.nr_open the sysctl file sets; no MemoryDenyWriteExecute (the JIT needs it)", () => {
    const nofile = Number(one(d, "LimitNOFILE"));
    expect(nofile).toBeGreaterThanOrEqual(1048576);
    const nrOpen = Number(/^fs\.nr_open = (\d+)$/m.exec(read("99-switchboard.conf"))?.[1]);
    expect(nrOpen).toBeGreaterThanOrEqual(nofile);
    expect(one(d, "MemoryDenyWriteExecute")).toBe("no");
  });

  test("the shipped config passes `switchboard config --check` and keeps the data in the unit's StateDirectory", async () => {
    const state = one(d, "StateDirectory");
    expect(state).toBe("switchboard");
    const r = await runCli(bin, ["config", "--check", "--config", join(DIR, "switchboard.toml")], { cwd: tmpdir() });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`data_dir = "/var/lib/${state}"`);
    expect(one(d, "WorkingDirectory")).toBe(`/var/lib/${state}`);
  });
});

describe("switchboard-mon.service", () => {
  test("its command runs tools/mon.ts on the compiled binary's own Bun against a server from the binary", async () => {
    const d = directives(read("switchboard-mon.service"));
    const env = Object.fromEntries((d.get("Environment") ?? []).map((e) => e.split("=", 2) as [string, string]));
    expect(env.BUN_BE_BUN).toBe("1");
    const data = temp("sb-mon-unit-");
    const srv = await startBinaryServer(bin, { dataDir: join(data, "data"), args: ["--canary-interval", "1", "--log-level", "warn"] });
    try {
      // The server is ready once the canary made a round trip (a bound on waiting, not a timing check).
      await waitFor(async () => (await fetch(`http://127.0.0.1:${srv.http}/readyz`)).status === 200, "/readyz 200");
      const argv = one(d, "ExecStart")!
        .split(/\s+/)
        .map((a) => (a === INSTALLED_BIN ? bin : a === INSTALLED_MON ? join(ROOT, "tools/mon.ts") : a))
        .map((a) => a.replace("127.0.0.1:5280", `127.0.0.1:${srv.http}`).replace(/^\/var\/lib\/switchboard-mon\//, `${data}/`));
      expect(argv[0]).toBe(bin);
      const p = Bun.spawn(argv, { cwd: data, env: { ...CLEAN_ENV, ...env }, stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      expect(err).toBe("");
      expect(out).not.toContain("ALARM");
      expect(out).not.toContain("UNKNOWN"); // the server exposes every metric the monitor reads
      expect(code).toBe(0);
      expect(JSON.parse(readFileSync(join(data, "state.json"), "utf8"))).toEqual({ alarms: {} });
    } finally {
      await srv.stop();
    }
  });
});

describe("99-switchboard.conf", () => {
  const text = read("99-switchboard.conf");
  const settings = text
    .split("\n")
    .map((l, i) => ({ line: i, m: /^([a-z0-9_.-]+)\s*=\s*(.+)$/.exec(l) }))
    .filter((x) => x.m)
    .map((x) => ({ line: x.line, key: x.m![1]!, value: x.m![2]!.trim() }));

  test("every setting sits under a comment saying why, and names a kernel parameter", () => {
    expect(settings.length).toBeGreaterThanOrEqual(10);
    for (const k of ["fs.nr_open", "fs.file-max", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_keepalive_time"]) {
      expect(settings.map((s) => s.key)).toContain(k);
    }
    const lines = text.split("\n");
    for (const s of settings) {
      // Up through the settings of the same paragraph to its first line: a comment.
      let i = s.line;
      while (i > 0 && lines[i - 1]!.trim() !== "" && !lines[i - 1]!.startsWith("#")) i--;
      if (!(i > 0 && lines[i - 1]!.startsWith("#"))) throw new Error(`${s.key} (line ${s.line + 1}) has no comment above it`);
      if (existsSync("/proc/sys/net")) expect(existsSync(join("/proc/sys", s.key.replaceAll(".", "/")))).toBe(true);
    }
  });

  test("the fs limits never lower what this kernel has", () => {
    for (const key of ["fs.nr_open", "fs.file-max"]) {
      const want = BigInt(settings.find((s) => s.key === key)!.value);
      const path = join("/proc/sys", key.replaceAll(".", "/"));
      if (existsSync(path)) expect(want >= BigInt(readFileSync(path, "utf8").trim())).toBe(true);
    }
  });

  const canNetns = isRoot && Bun.which("unshare") !== null && Bun.which("sysctl") !== null && Bun.spawnSync(["unshare", "-n", "true"]).exitCode === 0;
  test.skipIf(!canNetns)("the kernel accepts every net.* value (set in a private network namespace, not on the host)", () => {
    const net = settings.filter((s) => s.key.startsWith("net."));
    const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
    const script = net.map((s) => `sysctl -q -w ${q(`${s.key}=${s.value}`)} && printf '%s\\n' "$(sysctl -n ${q(s.key)})"`).join(" && ");
    const hostBefore = readFileSync("/proc/sys/net/ipv4/tcp_keepalive_time", "utf8");
    const r = Bun.spawnSync(["unshare", "-n", "sh", "-c", `set -e; ${script}`], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const norm = (v: string) => v.trim().split(/[\s]+/).join(" ");
    expect(r.stdout.toString().trim().split("\n").map(norm)).toEqual(net.map((s) => norm(s.value)));
    expect(readFileSync("/proc/sys/net/ipv4/tcp_keepalive_time", "utf8")).toBe(hostBefore); // the host is untouched
  });
});

describe("install.sh", () => {
  const script = join(DIR, "install.sh");
  const install = async (args: string[], env: Record<string, string> = {}) => {
    const p = Bun.spawn(["sh", script, ...args], { cwd: tmpdir(), env: { ...CLEAN_ENV, ...env }, stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { stdout, stderr, code };
  };
  const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
  const files = (root: string): string[] => {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) (e.isDirectory() ? walk : (p: string) => out.push(p.slice(root.length)))(join(d, e.name));
    };
    walk(root);
    return out.sort();
  };

  test("installs the binary, units, sysctl file, sysusers file, default config and monitor into a temporary root", async () => {
    const root = temp("sb-install-");
    const r = await install(["--root", root, "--binary", bin]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(files(root)).toEqual([
      "/etc/switchboard/switchboard.toml",
      "/etc/sysctl.d/99-switchboard.conf",
      "/etc/systemd/system/switchboard-mon.service",
      "/etc/systemd/system/switchboard-mon.timer",
      "/etc/systemd/system/switchboard.service",
      "/etc/sysusers.d/switchboard.conf",
      "/usr/local/bin/switchboard",
      "/usr/local/lib/switchboard/mon.ts",
    ]);
    const mode = (p: string) => statSync(join(root, p)).mode & 0o777;
    expect(mode(INSTALLED_BIN)).toBe(0o755);
    expect(mode("/etc/switchboard/switchboard.toml")).toBe(0o644);
    expect(sha(join(root, INSTALLED_BIN))).toBe(sha(bin));
    for (const [src, dst] of [
      ["switchboard.service", "/etc/systemd/system/switchboard.service"],
      ["99-switchboard.conf", "/etc/sysctl.d/99-switchboard.conf"],
      ["switchboard.sysusers", "/etc/sysusers.d/switchboard.conf"],
      ["switchboard.toml", "/etc/switchboard/switchboard.toml"],
    ]) {
      expect(readFileSync(join(root, dst!), "utf8")).toBe(read(src!));
    }
    expect(readFileSync(join(root, INSTALLED_MON), "utf8")).toBe(readFileSync(join(ROOT, "tools/mon.ts"), "utf8"));
    expect(r.stdout).toContain("files only");
    // The installed binary runs, and the installed units verify against it.
    expect((await runCli(join(root, INSTALLED_BIN), ["--help"], { cwd: root })).code).toBe(0);
    if (ANALYZE) {
      const installed = Object.fromEntries(UNITS.map((n) => [n, readFileSync(join(root, "etc/systemd/system", n), "utf8").replaceAll(INSTALLED_BIN, join(root, INSTALLED_BIN))]));
      const v = await verify(installed);
      expect(v.output).toBe("exit 0\n");
    }

    // Again: everything is replaced but the configuration, which is the operator's by now.
    writeFileSync(join(root, "etc/switchboard/switchboard.toml"), 'data_dir = "/srv/switchboard"\n');
    const again = await install(["--root", root, "--binary", bin]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("kept");
    expect(readFileSync(join(root, "etc/switchboard/switchboard.toml"), "utf8")).toBe('data_dir = "/srv/switchboard"\n');
  });

  test("--nodes 3: the template unit and one settings file per node (own data dir, ports, node id, core), each accepted by the binary; ports reserved", async () => {
    const root = temp("sb-install-nodes-");
    const r = await install(["--root", root, "--binary", bin, "--nodes", "3", "--node-prefix", "h1", "--redis", "redis://10.0.0.5:6379", "--listen", "0.0.0.0", "--advertise", "10.0.0.7"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const all = files(root);
    for (const f of ["/etc/systemd/system/switchboard@.service", "/etc/switchboard/node-0.toml", "/etc/switchboard/node-1.toml", "/etc/switchboard/node-2.toml"]) expect(all).toContain(f);
    expect(all).not.toContain("/etc/switchboard/node-3.toml");
    expect(readFileSync(join(root, "etc/systemd/system/switchboard@.service"), "utf8")).toBe(read("switchboard@.service"));
    const seen = { data: new Set<string>(), ports: new Set<number>() };
    for (let i = 0; i < 3; i++) {
      // The binary reads each file as the unit will (its own check, with the cluster settings' rules).
      const c = await runCli(bin, ["config", "--check", "--config", join(root, `etc/switchboard/node-${i}.toml`), "--tls-cert", "", "--tls-key", ""], { cwd: root });
      if (c.code !== 0) console.error(c.stdout, c.stderr);
      expect(c.code).toBe(0);
      const val = (table: string, key: string) => new RegExp(`\\[${table}\\][^\\[]*?\\n${key} = ([^\\n]+)`).exec(c.stdout)?.[1]?.replace(/\s+#.*$/, "");
      expect(val("cluster", "node_id")).toBe(`"h1-${i}"`);
      expect(val("cluster", "nodes")).toBe('"h1-0,h1-1,h1-2"');
      expect(val("cluster", "redis")).toBe('"redis://10.0.0.5:6379"');
      expect(val("cluster", "advertise")).toBe(`"10.0.0.7:${5222 + 10 * i}"`);
      const data = /^data_dir = (.+)$/m.exec(c.stdout)?.[1]?.replace(/\s+#.*$/, "");
      expect(data).toBe(`"/var/lib/switchboard/node-${i}"`);
      seen.data.add(data!);
      for (const [t, k] of [["tcp", "port"], ["tls", "port"], ["http", "port"], ["cluster", "link_port"]] as const) seen.ports.add(Number(val(t, k)));
    }
    expect(seen.data.size).toBe(3);
    expect(seen.ports.size).toBe(12); // no two ports alike
    const sysctl = readFileSync(join(root, "etc/sysctl.d/99-switchboard.conf"), "utf8");
    expect(/^net\.ipv4\.ip_local_reserved_ports = (.*)$/m.exec(sysctl)?.[1]).toBe("5222-5223,5232-5233,5242-5243,5280-5281,5290-5291,5300-5301");
    if (ANALYZE) {
      // An instance of the template verifies (systemd expands %i, also in CPUAffinity: a non-number fails to parse).
      const unit = read("switchboard@.service").replaceAll(INSTALLED_BIN, bin);
      const v = await verify({ "switchboard@1.service": unit });
      expect(v.output).toBe("exit 0\n");
      const bad = await verify({ "switchboard@1.service": unit.replace(/^CPUAffinity=%i$/m, "CPUAffinity=%q") });
      expect(bad.ok).toBe(false);
    }
    // Kept when present, like the main configuration; a bad --nodes is refused.
    writeFileSync(join(root, "etc/switchboard/node-1.toml"), 'data_dir = "/srv/n1"\n');
    const again = await install(["--root", root, "--binary", bin, "--nodes", "3", "--node-prefix", "h1"]);
    expect(again.code).toBe(0);
    expect(readFileSync(join(root, "etc/switchboard/node-1.toml"), "utf8")).toBe('data_dir = "/srv/n1"\n');
    const refused = await install(["--root", root, "--binary", bin, "--nodes", "two"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("--nodes takes a number");
  });

  test("the sysctl file's reserved ports are the configured ones: changed ports and install.sh again, never stale", async () => {
    const root = temp("sb-install-ports-");
    mkdirSync(join(root, "etc/switchboard"), { recursive: true });
    writeFileSync(join(root, "etc/switchboard/switchboard.toml"), "[tcp]\nport = 6222\n[tls]\nport = 6223\n[http]\nport = 7280\n");
    const r = await install(["--root", root, "--binary", bin], { SWITCHBOARD_TCP_PORT: "9999" }); // the shell's variables do not count
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const sysctl = () => readFileSync(join(root, "etc/sysctl.d/99-switchboard.conf"), "utf8");
    expect(sysctl()).toContain("\nnet.ipv4.ip_local_reserved_ports = 6222-6223,7280\n");
    expect(sysctl().replace(/\nnet\.ipv4\.ip_local_reserved_ports = .*\n/, "\n")).toBe(read("99-switchboard.conf").replace(/\nnet\.ipv4\.ip_local_reserved_ports = .*\n/, "\n"));
    writeFileSync(join(root, "etc/switchboard/switchboard.toml"), "[tcp]\nport = -1\n[tls]\nport = 0\n[http]\nport = 8080\n");
    expect((await install(["--root", root, "--binary", bin])).code).toBe(0);
    expect(sysctl()).toContain("\nnet.ipv4.ip_local_reserved_ports = 8080\n");
  });

  test("--prefix moves the binary and rewrites the units' paths; DESTDIR= works as --root", async () => {
    const root = temp("sb-install-prefix-");
    const r = await install(["--prefix", "/opt/switchboard", "--binary", bin], { DESTDIR: root });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(existsSync(join(root, "opt/switchboard/bin/switchboard"))).toBe(true);
    expect(existsSync(join(root, "opt/switchboard/lib/switchboard/mon.ts"))).toBe(true);
    expect(existsSync(join(root, "usr"))).toBe(false);
    const unit = readFileSync(join(root, "etc/systemd/system/switchboard.service"), "utf8");
    expect(unit).toContain("ExecStart=/opt/switchboard/bin/switchboard serve --config /etc/switchboard/switchboard.toml");
    expect(unit).not.toContain("/usr/local/");
    const mon = readFileSync(join(root, "etc/systemd/system/switchboard-mon.service"), "utf8");
    expect(mon).toContain("ExecStart=/opt/switchboard/bin/switchboard /opt/switchboard/lib/switchboard/mon.ts ");
  });

  test("--dry-run prints the plan and writes nothing", async () => {
    const root = temp("sb-install-dry-");
    const r = await install(["--root", root, "--dry-run", "--binary", bin]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`+ install -D -m 0755 ${bin} ${root}${INSTALLED_BIN}`);
    expect(r.stdout).toContain(`${root}/etc/systemd/system/switchboard.service`);
    expect(readdirSync(root)).toEqual([]);
  });

  test("refuses a missing binary (exit 1, says how to build it) and an unknown argument (exit 2)", async () => {
    const root = temp("sb-install-bad-");
    const missing = await install(["--root", root, "--binary", join(root, "nope")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("npm run build");
    const unknown = await install(["--root", root, "--frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown argument --frobnicate");
    expect(readdirSync(root)).toEqual([]);
  });

  test.skipIf(!isRoot || !Bun.which("systemd-sysusers"))("the sysusers.d file creates the system user (systemd-sysusers into the temporary root)", async () => {
    const root = temp("sb-install-users-");
    expect((await install(["--root", root, "--binary", bin])).code).toBe(0);
    const r = Bun.spawnSync(["systemd-sysusers", `--root=${root}`], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    const passwd = readFileSync(join(root, "etc/passwd"), "utf8");
    expect(passwd).toMatch(/^switchboard:x:\d+:\d+:Switchboard relay server:\/var\/lib\/switchboard:\/usr\/sbin\/nologin$/m);
    expect(readFileSync(join(root, "etc/group"), "utf8")).toMatch(/^switchboard:x:\d+:$/m);
  });

  test("shellcheck finds nothing", () => {
    if (!Bun.which("shellcheck")) throw new Error("shellcheck is not installed: apt-get install -y shellcheck (Debian package shellcheck; .ci/run installs it)");
    const r = Bun.spawnSync(["shellcheck", script], { stdout: "pipe", stderr: "pipe" });
    expect(r.stdout.toString() + r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
  });
});
