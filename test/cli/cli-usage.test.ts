/**
 * Issue 19, the CLI's own surface: per-command --help and --version (item 10),
 * a broken server module does not break the CLI (item 2), `config --check`
 * refuses what serve refuses and reports every problem (item 11), a port that
 * cannot be listened on is named (item 12), private key files are ignored by
 * git (item 13). Real processes, no timing.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startServer, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";
import { Cli } from "./run.ts";

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

let cli: Cli;
beforeAll(() => {
  cli = new Cli(mkdtempSync(join(tmpdir(), "sb-cli-usage-")));
});
afterAll(() => {
  cli.killAll();
  rmSync(cli.cwd, { recursive: true, force: true });
});

describe("help and version", () => {
  test("COMMAND --help prints that command's usage and flags only, on stdout", async () => {
    const r = await cli.sb(["send", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toStartWith("usage: switchboard send --key FILE --to NAME|#GROUP [--plain] [TEXT...]\n");
    expect(r.stdout).toContain("  --to NAME|#GROUP");
    expect(r.stdout).toContain("  --plain");
    expect(r.stdout).not.toContain("usage: switchboard COMMAND");
    expect(r.stdout).not.toContain("group create");
    const sub = await cli.sb(["device", "enroll", "-h"]);
    expect(sub.stdout).toStartWith("usage: switchboard device enroll --user NAME --code CODE");
    expect(sub.stdout).toContain("  --code CODE");
    expect((await cli.sb(["help", "chat"])).stdout).toContain("/help");
    // The global help names the per-command one.
    expect((await cli.sb(["--help"])).stdout).toContain("`switchboard COMMAND --help` shows one command's flags");
  });

  test("--version prints the version", async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(await cli.ok(["--version"])).toBe(`switchboard ${pkg.version}\n`);
  });
});

describe("a server module with a syntax error", () => {
  let copy: string;
  let server: LineProcess | null = null;
  afterAll(() => {
    server?.kill();
    if (copy) rmSync(copy, { recursive: true, force: true });
  });

  test("reload reports the server's refusal, and --help still works: the CLI never imports server modules", async () => {
    // A copy of the tree, so that breaking one of its modules (as README's example does) touches no other test.
    copy = mkdtempSync(join(tmpdir(), "sb-broken-module-"));
    cpSync(join(ROOT, "src"), join(copy, "src"), { recursive: true });
    cpSync(join(ROOT, "package.json"), join(copy, "package.json"));
    symlinkSync(join(ROOT, "node_modules"), join(copy, "node_modules"));
    const main = join(copy, "src/cli/main.ts");
    server = new LineProcess([process.execPath, main, "serve", "--data-dir", join(copy, "data"), "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0", "--log-level", "error"], { cwd: copy, env: CLEAN_ENV });
    const listening = JSON.parse(await server.line((l) => l.includes('"listening"')));
    appendFileSync(join(copy, "src/modules/presence/index.ts"), "\nexport const broken = ;\n");

    const run = async (args: string[]) => {
      const p = Bun.spawn([process.execPath, main, ...args], { cwd: copy, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { stdout, stderr, code };
    };
    const help = await run(["--help"]);
    expect(help).toMatchObject({ code: 0, stderr: "" });
    expect(help.stdout).toContain("usage: switchboard COMMAND");
    const r = await run(["reload", "--http-port", String(listening.http)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/presence\s+failed\s+import: /);
    expect(r.stdout).toContain("still running");
    const j = JSON.parse((await run(["reload", "--http-port", String(listening.http), "--json"])).stdout);
    expect(j.ok).toBe(false);
    expect(j.modules.find((m: { module: string }) => m.module === "presence")).toMatchObject({ result: "failed", stage: "import" });
  });
});

describe("config --check", () => {
  const toml = (name: string, text: string) => {
    const f = join(cli.cwd, name);
    writeFileSync(f, text);
    return f;
  };

  test("refuses what serve refuses: certificate files that do not exist", async () => {
    const f = toml("certs.toml", '[tls]\ncert = "nope-cert.pem"\nkey = "nope-key.pem"\n');
    const r = await cli.sb(["config", "--check", "--config", f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("tls.cert (from " + f + "): file nope-cert.pem does not exist");
    expect(r.stderr).toContain("tls.key (from " + f + "): file nope-key.pem does not exist");
    const serve = await cli.sb(["serve", "--config", f, "--tcp-port", "0", "--http-port", "0", "--tls-port", "0", "--data-dir", join(cli.cwd, "d")]);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain("file nope-cert.pem does not exist");
    // With TLS off, the files do not matter.
    expect((await cli.sb(["config", "--check", "--config", f, "--tls-port", "-1"])).code).toBe(0);
  });

  test("every problem at once; a quoted number is refused with the key and the types; TOML syntax errors carry the line", async () => {
    const f = toml("many.toml", '[tcp]\nport = "6222"\nprot = 1\n[limits]\nwindow = 0\n');
    const r = await cli.sb(["config", "--check", "--config", f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`config: tcp.port (from ${f}) must be an integer, got the string "6222" (write it without quotes)`);
    expect(r.stderr).toContain("sets unknown key tcp.prot (did you mean tcp.port?)");
    expect(r.stderr).toContain("limits.window");
    expect(r.stderr.trim().split("\n").filter((l) => l.startsWith("switchboard: config:") || l.startsWith("config:")).length).toBe(3);
    const bad = toml("syntax.toml", '[tcp]\nport = 6222\n\n[tls\nport = 1\n');
    const s = await cli.sb(["config", "--check", "--config", bad]);
    expect(s.code).toBe(1);
    expect(s.stderr).toContain(`${bad} (from --config) is not valid TOML: line 4: `);
  });
});

describe("listening", () => {
  let srv: TestServer;
  beforeAll(async () => (srv = await startServer()));
  afterAll(() => srv.cleanup());

  test("a port in use: the error names the setting, the port and why", async () => {
    const r = await cli.sb(["serve", "--data-dir", join(cli.cwd, "d2"), "--tcp-port", "0", "--tls-port", "-1", "--http-port", String(srv.http), "--canary-interval", "0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot listen on http.port ${srv.http} on 127.0.0.1: the port is in use`);
  });
});

describe("private key files", () => {
  test("git ignores key files and their end-to-end state", async () => {
    for (const name of ["alice.key", "alice.key.e2e", "keys/bob-linked.key.e2e", "alice.key.e2e.tmp"]) {
      const p = Bun.spawnSync(["git", "check-ignore", "-q", "--no-index", name], { cwd: ROOT });
      expect({ name, ignored: p.exitCode === 0 }).toEqual({ name, ignored: true });
    }
  });
});
