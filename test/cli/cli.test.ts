/**
 * The `switchboard` command, run as a real subprocess (cwd in a temp dir)
 * against a real server from the harness. Long-running commands (`listen`,
 * `chat`, `device link`) are read line by line until the expected line
 * appears; nothing here depends on how long anything takes.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startServer, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";
import { need } from "../helpers/need.ts";

const MAIN = join(ROOT, "src/cli/main.ts");
/** The environment without SWITCHBOARD_* variables of whoever runs the tests. */
const ENV = CLEAN_ENV;

// A bound on waiting for subprocesses (bunfig's [test] timeout is not read by bun test), not a timing assertion.
setDefaultTimeout(60_000);

let srv: TestServer;
let cwd: string;
const running = new Set<Subprocess>();

beforeAll(async () => {
  srv = await startServer();
  cwd = mkdtempSync(join(tmpdir(), "sb-cli-"));
});
afterAll(() => {
  for (const p of running) p.kill("SIGKILL");
  srv.cleanup();
  rmSync(cwd, { recursive: true, force: true });
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion. */
async function sb(args: string[], opts: { stdin?: string; cmd?: string[] } = {}): Promise<Result> {
  const p = Bun.spawn([...(opts.cmd ?? [process.execPath, MAIN]), ...args], {
    cwd,
    env: ENV,
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

const tcp = () => ["--port", String(srv.tcp)];
const tls = () => ["--tls", "--port", String(srv.tls), "--data-dir", srv.dataDir];
const jsonLines = (s: string) => s.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

/** A CLI process that keeps running: its stdout is collected line by line. */
class Running extends LineProcess {
  constructor(args: string[], cmd: string[] = [process.execPath, MAIN]) {
    super([...cmd, ...args], { cwd, env: ENV, track: running });
  }
}

/** A key file's mode bits. */
const mode = (path: string) => statSync(join(cwd, path)).mode & 0o777;

describe("usage", () => {
  test("--help prints the usage on stdout and exits 0; no command prints it on stderr and exits 2", async () => {
    const help = await sb(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("usage: switchboard COMMAND");
    for (const c of ["serve", "config", "user add", "device enroll", "device link", "device list", "device revoke", "send", "listen", "chat"]) {
      expect(help.stdout).toContain(c);
    }
    expect((await sb(["help"])).code).toBe(0);
    const none = await sb([]);
    expect(none.code).toBe(2);
    expect(none.stdout).toBe("");
    expect(none.stderr).toContain("usage: switchboard COMMAND");
  });

  test("an unknown command exits 2 with the error alone, last, and a pointer to --help (with a suggestion for a typo)", async () => {
    const r = await sb(["frobnicate"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('switchboard: unknown command "frobnicate"\nrun `switchboard --help` for the list of commands\n');
    expect((await sb(["lisen"])).stderr).toStartWith('switchboard: unknown command "lisen" (did you mean listen?)');
    const sub = await sb(["device", "remove"]);
    expect(sub.code).toBe(2);
    expect(sub.stderr).toContain("unknown command device remove; device has enroll, link, list, revoke");
    expect((await sb(["user"])).stderr).toContain("user needs a subcommand: add, code");
  });

  test("bad flags: unknown (with a suggestion), missing value, missing required, bad number, extra argument", async () => {
    const typo = await sb(["send", "--key", "x.key", "--too", "bob", "hi"]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toBe("switchboard: send: unknown flag --too (did you mean --to?)\nusage: switchboard send --key FILE --to NAME|#GROUP [--plain] [TEXT...]\n       switchboard send --key FILE --to NAME|#GROUP --file PATH [--type MIME]\n");
    const noValue = await sb(["listen", "--key"]);
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toContain("flag --key needs a value");
    const noKey = await sb(["listen"]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain("--key is required: the device key file written by `device enroll` or `device link`");
    const noTo = await sb(["send", "--key", "x.key", "hi"]);
    expect(noTo.code).toBe(2);
    expect(noTo.stderr).toContain("--to is required");
    const port = await sb(["device", "enroll", "--user", "a", "--code", "c", "--port", "http"]);
    expect(port.code).toBe(2);
    expect(port.stderr).toContain('--port must be a port number (1..65535), got "http"');
    const extra = await sb(["user", "add", "a", "b"]);
    expect(extra.code).toBe(2);
    expect(extra.stderr).toContain('user add: unexpected argument "b"');
    const missingKey = await sb(["device", "list", "--key", "nobody.key"]);
    expect(missingKey.code).toBe(1);
    expect(missingKey.stderr).toContain("key file nobody.key does not exist");
  });
});

describe("accounts and devices", () => {
  test("user add prints a code (and --json); a duplicate fails with a clear message and exit 1", async () => {
    const r = await sb(["user", "add", "alice", "--data-dir", srv.dataDir]);
    expect(r.code).toBe(0);
    const code = r.stdout.match(/enrollment code \(one use, valid 24 h\): (\S+)/)?.[1];
    expect(code).toBeDefined();
    expect(r.stdout).toContain(`switchboard device enroll --user alice --code ${code}`);

    const j = await sb(["user", "add", "bob", "--json", "--data-dir", srv.dataDir]);
    expect(j.code).toBe(0);
    const o = JSON.parse(j.stdout);
    expect(o).toMatchObject({ account: "bob", expires_in_s: 86400 });
    expect(typeof o.code).toBe("string");

    const dup = await sb(["user", "add", "alice", "--data-dir", srv.dataDir]);
    expect(dup.code).toBe(1);
    expect(dup.stdout).toBe("");
    expect(dup.stderr).toContain("switchboard: account alice already exists");
    expect(dup.stderr).toContain("switchboard user code NAME");

    const unknown = await sb(["user", "code", "zed", "--data-dir", srv.dataDir]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("no account zed");
    const noDir = await sb(["user", "add", "carol", "--data-dir", join(cwd, "no-such-dir")]);
    expect(noDir.code).toBe(1);
    expect(noDir.stderr).toContain("does not exist");
  });

  test("device enroll writes a key file with mode 0600 and refuses to overwrite one", async () => {
    const { code } = JSON.parse((await sb(["user", "code", "alice", "--json", "--data-dir", srv.dataDir])).stdout);
    const r = await sb(["device", "enroll", "--user", "alice", "--code", code, "--name", "phone", ...tcp()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("enrolled alice device 1; key written to alice.key\n");
    expect(mode("alice.key")).toBe(0o600);
    const kf = JSON.parse(readFileSync(join(cwd, "alice.key"), "utf8"));
    expect(kf).toMatchObject({ account: "alice", device: 1, server: { host: "127.0.0.1", port: srv.tcp, tls: false } });

    const before = readFileSync(join(cwd, "alice.key"), "utf8");
    const { code: code2 } = JSON.parse((await sb(["user", "code", "alice", "--json", "--data-dir", srv.dataDir])).stdout);
    const again = await sb(["device", "enroll", "--user", "alice", "--code", code2, ...tcp()]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("alice.key exists already");
    expect(readFileSync(join(cwd, "alice.key"), "utf8")).toBe(before);
    // The refusal came before the server saw the code: it still works for another file.
    const other = await sb(["device", "enroll", "--user", "alice", "--code", code2, "--key", "alice-tablet.key", "--json", ...tcp()]);
    expect(other.code).toBe(0);
    expect(JSON.parse(other.stdout)).toEqual({ account: "alice", device: 2, key: "alice-tablet.key" });

    const used = await sb(["device", "enroll", "--user", "alice", "--code", code2, "--key", "alice-3.key", ...tcp()]);
    expect(used.code).toBe(1);
    expect(used.stderr).toContain("bad_code");
    expect(existsSync(join(cwd, "alice-3.key"))).toBe(false);
  });

  test("device enroll over TLS trusts the development certificate found under --data-dir", async () => {
    const { code } = JSON.parse((await sb(["user", "code", "bob", "--json", "--data-dir", srv.dataDir])).stdout);
    const r = await sb(["device", "enroll", "--user", "bob", "--code", code, "--json", ...tls()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ account: "bob", device: 1, key: "bob.key" });
    expect(mode("bob.key")).toBe(0o600);
    // The certificate it trusted is pinned in the key file, so later commands need no --data-dir.
    expect(JSON.parse(readFileSync(join(cwd, "bob.key"), "utf8")).server).toEqual({ host: "127.0.0.1", port: srv.tls, tls: true, ca: srv.ca(), serverName: "localhost" });
  });

  test("device link on a new device + device link --approve on an existing one: the new key file appears", async () => {
    const link = new Running(["device", "link", "--user", "alice", "--key", "alice-laptop.key", "--name", "laptop", "--json", ...tcp()]);
    const { code } = await link.event("linkcode");
    expect(typeof code).toBe("string");
    expect(existsSync(join(cwd, "alice-laptop.key"))).toBe(false);
    const approve = await sb(["device", "link", "--approve", code, "--key", "alice.key", ...tcp()]);
    expect(approve.stderr).toBe("");
    expect(approve.code).toBe(0);
    expect(approve.stdout).toBe("approved: alice has a new device 3\n");
    const linked = await link.event("linked");
    expect(linked).toEqual({ event: "linked", account: "alice", device: 3, key: "alice-laptop.key" });
    expect(await link.proc.exited).toBe(0);
    expect(mode("alice-laptop.key")).toBe(0o600);

    const refused = new Running(["device", "link", "--user", "alice", "--key", "alice-laptop.key", ...tcp()]);
    expect(await refused.proc.exited).toBe(1);
    expect(refused.stderr).toContain("alice-laptop.key exists already");
  });

  test("device list shows every device of the account, marking this one", async () => {
    const r = await sb(["device", "list", "--key", "alice.key", ...tcp()]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(3);
    expect(lines[0]).toMatch(/^alice device 1 "phone", since \d{4}-\d\d-\d\d \d\d:\d\d {2}\(this one\)$/);
    expect(lines[1]).toMatch(/^alice device 2 "cli", since /);
    expect(lines[2]).toMatch(/^alice device 3 "laptop", since /);
    const fromLaptop = await sb(["device", "list", "--key", "alice-laptop.key", "--json"]); // address from the key file
    expect(fromLaptop.code).toBe(0);
    const o = JSON.parse(fromLaptop.stdout);
    expect(o.u).toBe("alice");
    expect(o.devices.map((d: any) => d.d)).toEqual([1, 2, 3]);
    const bobs = await sb(["device", "list", "--key", "alice.key", "--user", "bob", "--json"]);
    expect(JSON.parse(bobs.stdout).devices.map((d: any) => d.d)).toEqual([1]);
  });
});

describe("messages", () => {
  test("send with text arguments and with stdin lines prints one `sent` JSON line per message", async () => {
    const one = await sb(["send", "--key", "alice.key", "--to", "bob", "hello", "bob"]);
    expect(one.stderr).toBe("");
    expect(one.code).toBe(0);
    const [s] = jsonLines(one.stdout);
    expect(s).toMatchObject({ event: "sent", to: "bob" });
    expect(typeof s.seq).toBe("number");
    const many = await sb(["send", "--key", "alice.key", "--to", "bob", ...tcp()], { stdin: "line one\n\nline two\nline three\n" });
    expect(many.code).toBe(0);
    const sent = jsonLines(many.stdout);
    expect(sent.map((x) => x.event)).toEqual(["sent", "sent", "sent"]); // the empty line is skipped
    expect(sent.map((x) => x.seq)).toEqual([s.seq + 1, s.seq + 2, s.seq + 3]);
  });

  test("listen prints one JSON line per event, including what waited while it was away, and exits 0 on SIGTERM", async () => {
    const listen = new Running(["listen", "--key", "bob.key", ...tls()]);
    expect(await listen.event("ready")).toEqual({ event: "ready", account: "bob", device: 1 });
    // Queued while bob was offline, in order.
    const queued = [await listen.event("message", (m) => m.text === "hello bob"), await listen.event("message", (m) => m.text === "line three")];
    expect(queued[0]).toMatchObject({ conversation: "alice", from: "alice", device: 1, to: "bob", sync: false });
    expect(queued[1].seq).toBe(queued[0].seq + 3);
    // And live.
    const sent = jsonLines((await sb(["send", "--key", "alice.key", "--to", "bob", "are you there?"])).stdout)[0];
    const m = await listen.event("message", (m) => m.text === "are you there?");
    expect(m).toMatchObject({ from: "alice", to: "bob", seq: sent.seq, id: sent.id });
    expect(await listen.signal("SIGTERM")).toBe(0);
    expect(listen.stderr).toBe("");
    for (const l of listen.lines) expect(() => JSON.parse(l)).not.toThrow();
  });

  test("one-shot commands leave the device's incoming messages queued for its next listen", async () => {
    await sb(["send", "--key", "bob.key", "--to", "alice", "for alice, later"]);
    const s = await sb(["send", "--key", "alice.key", "--to", "bob", "meanwhile"]); // alice logs in, does not take it
    expect(s.code).toBe(0);
    const listen = new Running(["listen", "--key", "alice.key"]);
    expect(await listen.event("message", (m) => m.text === "for alice, later")).toMatchObject({ from: "bob" });
    expect(await listen.signal("SIGINT")).toBe(0);
  });

  test("listen --no-ack leaves what it printed queued: the next listen gets it again", async () => {
    await sb(["send", "--key", "bob.key", "--to", "alice", "peek at me"]);
    for (const flags of [["--no-ack"], []]) {
      const listen = new Running(["listen", "--key", "alice.key", ...flags]);
      expect(await listen.event("message", (m) => m.text === "peek at me")).toMatchObject({ from: "bob" });
      expect(await listen.signal("SIGTERM")).toBe(0);
    }
  });

  test("send on a terminal with no text says it reads lines from stdin", async () => {
    need("script", "bsdutils");
    const cmd = [process.execPath, MAIN, "send", "--key", "alice.key", "--to", "bob"].map((a) => `'${a}'`).join(" ");
    const send = new Running(["-qec", cmd, "/dev/null"], ["script"]);
    await send.line((l) => l.includes("reading messages for bob from stdin, one per line; ctrl-d to finish"));
    send.write("typed at a terminal\r");
    await send.line((l) => l.includes('"event":"sent"'));
    send.write("\x04");
    expect(await send.proc.exited).toBe(0);
  });

  test("a one-shot command beside a listen of the same device leaves it be; a second listen kicks it off (exit 1, says why)", async () => {
    const listen = new Running(["listen", "--key", "alice.key"]);
    await listen.event("ready");
    // One-shot commands log in as non-receiving sessions (PROTOCOL.md §4.6): the listen stays.
    const list = await sb(["device", "list", "--key", "alice.key"]);
    expect(list.code).toBe(0);
    expect(listen.proc.exitCode).toBeNull();
    const second = new Running(["listen", "--key", "alice.key"]);
    await second.event("ready");
    expect(await listen.event("close")).toMatchObject({ reason: "replaced", willReconnect: false });
    second.kill();
    expect(await listen.proc.exited).toBe(1);
    expect(listen.stderr).toContain("a device holds one connection at a time");
  });

  test("send to yourself with no other device, and to an unknown account, fail with a clear message", async () => {
    const self = await sb(["send", "--key", "bob.key", "--to", "bob", "note"]);
    expect(self.code).toBe(1);
    expect(self.stderr).toContain("bob has no other device to send to");
    const nobody = await sb(["send", "--key", "bob.key", "--to", "nobody", "hi"]);
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toContain("unknown_user: no account nobody");
    expect(nobody.stderr).toContain("switchboard user add NAME");
  });
});

describe("chat", () => {
  test("piped stdin: each line is sent, incoming messages and receipts appear as plain lines, end of input quits", async () => {
    const bob = new Running(["listen", "--key", "bob.key"]);
    await bob.event("ready");
    const chat = new Running(["chat", "--key", "alice.key", "--to", "bob"]);
    expect(await chat.line((l) => l.startsWith("chatting with"))).toBe("chatting with bob as alice (device 1); one message per input line");
    chat.write("hi from chat\n");
    const got = await bob.event("message", (m) => m.text === "hi from chat");
    expect(got.from).toBe("alice");
    expect(await chat.line((l) => l.includes("sent"))).toBe(`  ✓ sent #${got.seq}`);
    expect(await chat.line((l) => l.includes("delivered"))).toBe(`  ✓✓ delivered #${got.seq}`);
    expect(await bob.signal("SIGTERM")).toBe(0);

    await sb(["send", "--key", "bob.key", "--to", "alice", "hello from bob"]);
    expect(await chat.line((l) => l.includes("hello from bob"))).toBe("bob: hello from bob");
    // alice's chat marked it read: bob hears so on his next listen.
    const bob2 = new Running(["listen", "--key", "bob.key"]);
    const read = await bob2.event("receipt", (r) => r.kind === "read");
    expect(read).toMatchObject({ account: "alice", with: "alice" });
    expect(await bob2.signal("SIGTERM")).toBe(0);

    chat.write("bye\n");
    expect(await chat.end()).toBe(0);
    expect(chat.stderr).toBe("");
    const out = chat.lines.join("\n");
    expect(out).not.toContain("\x1b"); // no terminal escapes when stdout is not a terminal
    expect(out).not.toContain("alice > "); // and no prompt
    expect(chat.lines.filter((l) => l.includes("✓ sent")).length).toBe(2);
  });

  test("on a terminal (script -qc): a prompt, and incoming lines above it", async () => {
    need("script", "bsdutils");
    const cmd = [process.execPath, MAIN, "chat", "--key", "alice.key", "--to", "bob"].map((a) => `'${a}'`).join(" ");
    const bob = new Running(["listen", "--key", "bob.key"]);
    await bob.event("ready");
    const chat = new Running(["-qec", cmd, "/dev/null"], ["script"]);
    await chat.line((l) => l.includes("chatting with bob as alice (device 1); type a line and press enter to send, ctrl-d to quit"));
    chat.write("typed on a tty\r");
    expect(await bob.event("message", (m) => m.text === "typed on a tty")).toMatchObject({ from: "alice" });
    await chat.line((l) => l.includes("✓ sent #"));
    expect(await bob.signal("SIGTERM")).toBe(0);
    await sb(["send", "--key", "bob.key", "--to", "alice", "seen on a tty"]);
    const line = await chat.line((l) => l.includes("bob: seen on a tty"));
    // The incoming line clears the prompt line first, then the prompt comes back under it.
    expect(line).toContain("\r\x1b[Kbob: seen on a tty");
    expect(chat.lines.join("\n")).toContain("alice > ");
    chat.write("\x04"); // ctrl-d
    expect(await chat.proc.exited).toBe(0);
  });
});

describe("revocation and failures", () => {
  test("device revoke: the revoked device's key then fails to connect, with a hint", async () => {
    const r = await sb(["device", "revoke", "--key", "alice.key", "--device", "3"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("revoked alice device 3\n");
    const list = await sb(["device", "list", "--key", "alice.key", "--json"]);
    expect(JSON.parse(list.stdout).devices.map((d: any) => d.d)).toEqual([1, 2]);
    for (const args of [["device", "list"], ["send", "--to", "bob", "still here?"], ["listen"]]) {
      const failed = await sb([...args, "--key", "alice-laptop.key"]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain("switchboard: auth_failed: authentication failed");
      expect(failed.stderr).toContain("the device may have been revoked");
    }
    const none = await sb(["device", "revoke", "--key", "alice.key", "--device", "9", "--json"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("unknown_device");
  });

  test("a device can revoke itself", async () => {
    const r = await sb(["device", "revoke", "--key", "alice-tablet.key", "--device", "2", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ revoked: 2, account: "alice" });
    expect((await sb(["device", "list", "--key", "alice-tablet.key"])).code).toBe(1);
  });

  test("nothing listening on the port: exit 1 with where it tried and what to check", async () => {
    const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = l.port;
    l.stop(true);
    const r = await sb(["device", "list", "--key", "alice.key", "--port", String(port)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot connect to 127.0.0.1:${port}`);
    expect(r.stderr).toContain("is the server running");
  });

  test("TLS: an untrusted certificate fails with a hint; --ca and --insecure work", async () => {
    const empty = mkdtempSync(join(tmpdir(), "sb-cli-empty-"));
    try {
      const r = await sb(["device", "list", "--key", "bob.key", "--tls", "--port", String(srv.tls), "--data-dir", empty]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot connect to 127.0.0.1:${srv.tls} (TLS)`);
      expect(r.stderr).toContain("--ca FILE");
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
    const ca = join(cwd, "ca.pem");
    writeFileSync(ca, srv.ca());
    expect((await sb(["device", "list", "--key", "bob.key", "--tls", "--port", String(srv.tls), "--ca", ca])).code).toBe(0);
    expect((await sb(["device", "list", "--key", "bob.key", "--tls", "--port", String(srv.tls), "--insecure", "--data-dir", cwd])).code).toBe(0);
    const plainToTls = await sb(["device", "list", "--key", "bob.key", "--port", String(srv.tls)]);
    expect(plainToTls.code).toBe(1);
    expect(plainToTls.stderr).toContain("is it the TLS port? then add --tls");
  });
});

describe("the npm bin shim", () => {
  test.skipIf(!Bun.which("node"))("node bin/switchboard.cjs runs the CLI with bun and passes the exit code through", async () => {
    const shim = ["node", join(ROOT, "bin/switchboard.cjs")];
    const help = await sb(["--help"], { cmd: shim });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("usage: switchboard COMMAND");
    const bad = await sb(["frobnicate"], { cmd: shim });
    expect(bad.code).toBe(2);
    const list = await sb(["device", "list", "--key", "bob.key"], { cmd: shim });
    expect(list.code).toBe(0);
    expect(list.stdout).toStartWith("bob device 1");
  });

  test.skipIf(!Bun.which("node"))("the shim forwards SIGTERM, so listen shuts down cleanly", async () => {
    const listen = new Running(["listen", "--key", "bob.key"], ["node", join(ROOT, "bin/switchboard.cjs")]);
    await listen.event("ready");
    expect(await listen.signal("SIGTERM")).toBe(0);
  });
});
