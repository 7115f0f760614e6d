/**
 * Configuration: TOML file, environment and flags, with precedence
 * flag > environment > file > default, and an error that names the setting
 * and the source for every wrong value.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { effectiveToml, envName, flagName, loadConfig, resolveSettings, SETTINGS, settingsTable } from "../../src/core/config.ts";
import { renderReadme } from "../../tools/gen-config-doc.ts";
import { ROOT } from "../helpers/harness.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** Writes a TOML file and returns its path. */
function toml(text: string): string {
  const p = join(dir, `c${n++}.toml`);
  writeFileSync(p, text);
  return p;
}

/** The error message loadConfig throws for these inputs. */
function failure(opts: Parameters<typeof loadConfig>[0]): string {
  try {
    loadConfig(opts);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("loadConfig accepted what it should refuse");
}

describe("defaults", () => {
  test("with no file, environment or flags every setting has its default", () => {
    const c = loadConfig({ env: {}, flags: {} });
    expect(c.tcp).toEqual({ host: "127.0.0.1", port: 5222 });
    expect(c.tls).toEqual({ host: "127.0.0.1", port: 5223, cert: "", key: "", maxVersion: "1.3", groups: "" });
    expect(c.http).toEqual({ host: "127.0.0.1", port: 5280, tlsPort: -1, app: true });
    expect(c.limits).toMatchObject({ maxFrame: 65536, maxDevices: 8, outboundBytes: 1048576, window: 256, errorBudget: 100 });
    expect(c.timeouts).toMatchObject({ pingInterval: 30, idle: 90, auth: 10, sweep: 1, link: 300 });
    expect(c.auth).toMatchObject({ enrollCodeTtl: 86400, failPerIp: 30, failPerAccount: 10 });
    expect(c.queue).toMatchObject({ shards: 8, commitMs: 5, commitRows: 1000, durability: "process", retention: 2592000, expireEvery: 60, maxMessages: 10000, maxBytes: 67108864 });
    expect(c.log).toEqual({ level: "info" });
    expect(c.dataDir).toBe(resolve("./data"));
    // Every setting lands in the nested, camel-cased Config with its default.
    const camel = (k: string) => k.replace(/_([a-z])/g, (_, ch: string) => ch.toUpperCase());
    for (const s of SETTINGS) {
      if (s.key === "data_dir") continue;
      const v = s.key.split(".").reduce<any>((o, part) => o?.[camel(part)], c);
      expect([s.key, v]).toEqual([s.key, s.def]);
    }
    const r = resolveSettings({ env: {}, flags: {} });
    expect(Object.values(r.sources).every((s) => s === "default")).toBe(true);
    expect(r.file).toBeUndefined();
  });

  test("every setting has a key, flag and variable derived the same way, and a default its own rules accept", () => {
    for (const s of SETTINGS) {
      expect(flagName(s.key)).toBe("--" + s.key.replace(/[._]/g, "-"));
      expect(envName(s.key)).toBe("SWITCHBOARD_" + s.key.replace(/\./g, "_").toUpperCase());
      if (s.kind === "int") {
        expect(Number.isInteger(s.def)).toBe(true);
        if (s.min !== undefined) expect(s.def as number).toBeGreaterThanOrEqual(s.min);
        if (s.max !== undefined) expect(s.def as number).toBeLessThanOrEqual(s.max);
      }
      if (s.kind === "enum") expect(s.values).toContain(s.def as string);
      expect(s.doc.length).toBeGreaterThan(10);
    }
  });
});

describe("sources and precedence", () => {
  const file = toml(`
data_dir = "/srv/switchboard"
[tcp]
port = 6000
host = "0.0.0.0"
[limits]
window = 64
max_devices = 4
[queue]
durability = "power"
[log]
level = "debug"
`);

  test("a TOML file sets values, nested tables map to dotted keys", () => {
    const c = loadConfig({ file, env: {}, flags: {} });
    expect(c.dataDir).toBe("/srv/switchboard");
    expect(c.tcp).toEqual({ host: "0.0.0.0", port: 6000 });
    expect(c.limits.window).toBe(64);
    expect(c.limits.maxDevices).toBe(4);
    expect(c.queue.durability).toBe("power");
    expect(c.log.level).toBe("debug");
    expect(c.tls.port).toBe(5223); // not in the file: default
  });

  test("flag > environment > file > default, setting by setting", () => {
    const r = resolveSettings({
      file,
      env: { SWITCHBOARD_TCP_PORT: "7000", SWITCHBOARD_LIMITS_WINDOW: "32", SWITCHBOARD_HTTP_PORT: "8080" },
      flags: { "--tcp-port": "9000" },
    });
    expect(r.values["tcp.port"]).toBe(9000); // flag beats environment and file
    expect(r.sources["tcp.port"]).toBe("--tcp-port");
    expect(r.values["limits.window"]).toBe(32); // environment beats file
    expect(r.sources["limits.window"]).toBe("SWITCHBOARD_LIMITS_WINDOW");
    expect(r.values["http.port"]).toBe(8080); // environment beats default
    expect(r.values["limits.max_devices"]).toBe(4); // file beats default
    expect(r.sources["limits.max_devices"]).toBe(file);
    expect(r.values["tls.port"]).toBe(5223);
    expect(r.sources["tls.port"]).toBe("default");
    expect(r.file).toBe(file);
  });

  test("the file comes from --config, else SWITCHBOARD_CONFIG; --config wins", () => {
    const other = toml("[tcp]\nport = 6001\n");
    expect(loadConfig({ env: { SWITCHBOARD_CONFIG: file }, flags: {} }).tcp.port).toBe(6000);
    expect(loadConfig({ env: {}, flags: { "--config": other } }).tcp.port).toBe(6001);
    expect(loadConfig({ env: { SWITCHBOARD_CONFIG: file }, flags: { "--config": other } }).tcp.port).toBe(6001);
  });

  test("an empty environment variable counts as unset; an explicit flag value is used as given", () => {
    expect(loadConfig({ file, env: { SWITCHBOARD_TCP_PORT: "" }, flags: {} }).tcp.port).toBe(6000);
    expect(loadConfig({ env: { SWITCHBOARD_CONFIG: "" }, flags: {} }).tcp.port).toBe(5222);
    expect(loadConfig({ env: {}, flags: { "--tcp-host": "::1" } }).tcp.host).toBe("::1");
  });

  test("integers: 0 and -1 are valid ports, surrounding spaces in the environment are fine, TOML 5.0 is 5", () => {
    expect(loadConfig({ env: { SWITCHBOARD_TCP_PORT: " 0 " }, flags: { "--tls-port": "-1" } }).tls.port).toBe(-1);
    expect(loadConfig({ file: toml("[limits]\nwindow = 5.0\n"), env: {} }).limits.window).toBe(5);
  });

  test("relative data_dir is resolved against the working directory", () => {
    expect(loadConfig({ env: {}, flags: { "--data-dir": "rel/dir" } }).dataDir).toBe(resolve("rel/dir"));
  });

  test("`config --check` output is TOML that reproduces the same configuration", () => {
    const r = resolveSettings({ file, env: { SWITCHBOARD_LIMITS_WINDOW: "32" }, flags: { "--tcp-port": "9000" } });
    const text = effectiveToml(r);
    expect(text).toContain("port = 9000  # from --tcp-port");
    expect(text).toContain("window = 32  # from SWITCHBOARD_LIMITS_WINDOW");
    expect(text).toContain(`durability = "power"  # from ${file}`);
    const again = resolveSettings({ file: toml(text), env: {}, flags: {} });
    expect(again.values).toEqual(r.values);
  });
});

describe("errors name the setting and the source", () => {
  test("not an integer, from a flag, the environment and the file", () => {
    expect(failure({ env: {}, flags: { "--tcp-port": "abc" } })).toBe('config: tcp.port (from --tcp-port) must be an integer, got "abc"');
    expect(failure({ env: { SWITCHBOARD_LIMITS_WINDOW: "12x" }, flags: {} })).toBe(
      'config: limits.window (from SWITCHBOARD_LIMITS_WINDOW) must be an integer, got "12x"',
    );
    const f = toml('[limits]\nwindow = "many"\n');
    expect(failure({ file: f, env: {} })).toBe(`config: limits.window (from ${f}) must be an integer, got "many"`);
    expect(failure({ file: toml("[limits]\nwindow = 2.5\n"), env: {} })).toContain("limits.window");
    expect(failure({ env: {}, flags: { "--tcp-port": "1e3" } })).toContain("must be an integer");
  });

  test("out of range, below and above", () => {
    expect(failure({ env: {}, flags: { "--tcp-port": "70000" } })).toBe("config: tcp.port (from --tcp-port) must be at most 65535, got 70000");
    expect(failure({ env: { SWITCHBOARD_LIMITS_MAX_DEVICES: "0" }, flags: {} })).toBe(
      "config: limits.max_devices (from SWITCHBOARD_LIMITS_MAX_DEVICES) must be at least 1, got 0",
    );
    expect(failure({ env: {}, flags: { "--tls-port": "-2" } })).toBe("config: tls.port (from --tls-port) must be at least -1, got -2");
  });

  test("not one of the allowed values", () => {
    expect(failure({ env: {}, flags: { "--queue-durability": "disk" } })).toBe(
      'config: queue.durability (from --queue-durability) must be one of process, power, got "disk"',
    );
    const f = toml('[log]\nlevel = "verbose"\n');
    expect(failure({ file: f, env: {} })).toBe(`config: log.level (from ${f}) must be one of debug, info, warn, error, got "verbose"`);
  });

  test("a string setting given a number in the file", () => {
    const f = toml("data_dir = 5\n");
    expect(failure({ file: f, env: {} })).toBe(`config: data_dir (from ${f}) must be a string`);
  });

  test("unknown keys in the file, with a suggestion for a likely typo", () => {
    const f1 = toml("[tcp]\nprot = 5222\n");
    expect(failure({ file: f1, env: {} })).toBe(`config: ${f1} sets unknown key tcp.prot (did you mean tcp.port?); \`switchboard config\` lists them all`);
    const f2 = toml("[database]\nurl = \"x\"\n");
    expect(failure({ file: f2, env: {} })).toBe(`config: ${f2} sets unknown key database.url; \`switchboard config\` lists them all`);
    const f3 = toml("tcp = 5222\n"); // a table given as a value
    expect(failure({ file: f3, env: {} })).toContain("sets unknown key tcp");
    const f4 = toml("[tcp]\nwhen = 1979-05-27T07:32:00Z\n"); // a date is a value, not a table
    expect(failure({ file: f4, env: {} })).toContain("sets unknown key tcp.when");
  });

  test("the file does not exist: the message says where its name came from", () => {
    const missing = join(dir, "nope.toml");
    expect(failure({ env: {}, flags: { "--config": missing } })).toBe(`config: file ${missing} (from --config) does not exist`);
    expect(failure({ env: { SWITCHBOARD_CONFIG: missing }, flags: {} })).toBe(`config: file ${missing} (from SWITCHBOARD_CONFIG) does not exist`);
    expect(failure({ env: {}, flags: { "--config": "" } })).toContain("--config is empty");
  });

  test("invalid TOML", () => {
    const f = toml("[tcp]\nport = \n");
    const m = failure({ file: f, env: {} });
    expect(m.startsWith(`config: ${f} is not valid TOML: `)).toBe(true);
    expect(m).toContain("Missing value");
    expect(failure({ file: toml('data_dir = "a"\ndata_dir = "b"\n'), env: {} })).toContain("is not valid TOML");
  });

  test("ws.http_path must be a path starting with / (or empty)", () => {
    expect(failure({ env: {}, flags: { "--ws-http-path": "ws" } })).toBe('config: ws.http_path ("ws", from --ws-http-path) must be a path starting with "/", such as "/ws", or empty');
    expect(failure({ env: {}, flags: { "--ws-http-path": "/a b" } })).toContain("must be a path");
  });

  test("timeouts.idle must exceed timeouts.ping_interval, naming both and where they came from", () => {
    expect(failure({ env: {}, flags: { "--timeouts-ping-interval": "90" } })).toBe(
      "config: timeouts.idle (90, default) must exceed timeouts.ping_interval (90, from --timeouts-ping-interval), or every client is reaped between pings",
    );
    const f = toml("[timeouts]\nidle = 20\n");
    expect(failure({ file: f, env: {} })).toContain(`timeouts.idle (20, from ${f}) must exceed timeouts.ping_interval (30, default)`);
    expect(loadConfig({ env: {}, flags: { "--timeouts-ping-interval": "89" } }).timeouts.pingInterval).toBe(89);
  });

  test("tls.cert and tls.key come together", () => {
    expect(failure({ env: {}, flags: { "--tls-cert": "/etc/ssl/x.pem" } })).toBe(
      "config: tls.cert is set (from --tls-cert) but tls.key is not; give both, or neither for the development certificate",
    );
    expect(failure({ env: { SWITCHBOARD_TLS_KEY: "/k.pem" }, flags: {} })).toContain("tls.key is set (from SWITCHBOARD_TLS_KEY) but tls.cert is not");
    expect(loadConfig({ env: {}, flags: { "--tls-cert": "c.pem", "--tls-key": "k.pem" } }).tls).toMatchObject({ cert: "c.pem", key: "k.pem" });
  });
});

describe("the settings table", () => {
  test("lists every setting with its flag, variable and default", () => {
    const lines = settingsTable().split("\n");
    expect(lines[0]).toBe("| key (TOML) | flag | environment | default | allowed | meaning |");
    expect(lines.length).toBe(2 + SETTINGS.length);
    for (const s of SETTINGS) {
      const row = lines.find((l) => l.startsWith(`| \`${s.key}\` |`));
      expect(row).toBeDefined();
      expect(row).toContain(`\`${flagName(s.key)}\``);
      expect(row).toContain(`\`${envName(s.key)}\``);
      if (s.def !== "") expect(row).toContain(`\`${String(s.def)}\``);
    }
  });

  test("`switchboard config` prints it; `config --check` prints the effective values", async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SWITCHBOARD_")));
    const run = (args: string[], extraEnv: Record<string, string> = {}) => {
      const p = Bun.spawnSync([process.execPath, join(ROOT, "src/cli/main.ts"), ...args], { cwd: dir, env: { ...env, ...extraEnv } });
      return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
    };
    const table = run(["config"]);
    expect(table.code).toBe(0);
    expect(table.out).toBe(settingsTable() + "\n");

    const f = toml("[tcp]\nport = 6000\n");
    const check = run(["config", "--check", "--config", f, "--http-port", "0"], { SWITCHBOARD_LIMITS_WINDOW: "32" });
    expect(check.code).toBe(0);
    expect(check.out).toContain(`# effective configuration (file ${f})`);
    expect(check.out).toContain(`port = 6000  # from ${f}`);
    expect(check.out).toContain("port = 0  # from --http-port");
    expect(check.out).toContain("window = 32  # from SWITCHBOARD_LIMITS_WINDOW");

    const bad = run(["config", "--check", "--limits-window", "0"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toBe("switchboard: config: limits.window (from --limits-window) must be at least 1, got 0\n");
    const typo = run(["config", "--check", "--limits-windw", "3"]);
    expect(typo.code).toBe(2);
    expect(typo.err).toContain("config: unknown flag --limits-windw (did you mean --limits-window?)");
    const noCheck = run(["config", "--tcp-port", "1"]);
    expect(noCheck.code).toBe(2);
    expect(noCheck.err).toContain("--tcp-port is read only with --check");
  });

  test("`serve` refuses a wrong value or an unknown flag before it starts, naming the setting and source", () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SWITCHBOARD_")));
    const run = (args: string[], extraEnv: Record<string, string> = {}) => {
      const p = Bun.spawnSync([process.execPath, join(ROOT, "src/cli/main.ts"), "serve", "--data-dir", join(dir, "data"), ...args], {
        cwd: dir,
        env: { ...env, ...extraEnv },
      });
      return { code: p.exitCode, err: p.stderr.toString() };
    };
    expect(run(["--tcp-port", "abc"])).toEqual({ code: 1, err: 'switchboard: config: tcp.port (from --tcp-port) must be an integer, got "abc"\n' });
    expect(run([], { SWITCHBOARD_LOG_LEVEL: "loud" }).err).toContain('log.level (from SWITCHBOARD_LOG_LEVEL) must be one of debug, info, warn, error, got "loud"');
    const missing = join(dir, "missing.toml");
    expect(run(["--config", missing]).err).toContain(`config: file ${missing} (from --config) does not exist`);
    const typo = run(["--tcp-prot", "1"]);
    expect(typo.code).toBe(2);
    expect(typo.err).toContain("serve: unknown flag --tcp-prot (did you mean --tcp-port?)");
  });

  test("README.md carries the current table (regenerate with `bun tools/gen-config-doc.ts`)", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(renderReadme(readme)).toBe(readme);
  });
});
