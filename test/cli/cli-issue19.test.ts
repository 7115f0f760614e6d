/**
 * Issue 19, as a new user meets the CLI against a real server: client commands
 * follow the server's configuration (item 5), a key file open to others is
 * warned about (13), plain answers for an account without devices, empty
 * messages, replaced codes and revoking the only device (14), the chat's own
 * commands and group chat (8), one's own account named as such (9), and the
 * ticks of a chat in order (7). Real processes, line by line, no timing.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type TestServer } from "../helpers/harness.ts";
import { Cli, jsonLines } from "./run.ts";

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

let srv: TestServer;
let cli: Cli;
/** The server's port as its environment would give it: no --port on the command lines below. */
let env: Record<string, string>;

/** `user add`/`user code` then `device enroll`, both reading the port from the environment. */
async function enroll(account: string, key: string, add = true): Promise<number> {
  const { code } = JSON.parse(await cli.ok(["user", add ? "add" : "code", account, "--data-dir", srv.dataDir, "--json"], { env }));
  return JSON.parse(await cli.ok(["device", "enroll", "--user", account, "--code", code, "--key", key, "--json"], { env })).device;
}

beforeAll(async () => {
  srv = await startServer();
  cli = new Cli(mkdtempSync(join(tmpdir(), "sb-cli-19-")));
  env = { SWITCHBOARD_TCP_PORT: String(srv.tcp) };
  await enroll("alice", "alice.key");
  await enroll("bob", "bob.key");
});
afterAll(() => {
  cli?.killAll();
  srv?.cleanup();
  if (cli) rmSync(cli.cwd, { recursive: true, force: true });
});

describe("the server's configuration reaches the client commands", () => {
  test("SWITCHBOARD_TCP_PORT: user add's hint carries the port, and device enroll as printed reaches this server", async () => {
    const out = await cli.ok(["user", "add", "dave", "--data-dir", srv.dataDir], { env });
    const hint = out.split("\n").find((l) => l.includes("switchboard device enroll"))!;
    expect(hint).toMatch(new RegExp(`--code \\S+ --port ${srv.tcp}$`));
    const args = hint.trim().split(/\s+/).slice(1); // as printed, without "switchboard"
    expect(await cli.ok(args)).toContain("enrolled dave device 1; key written to dave.key");
  });

  test("--config FILE: the hint names it, and device enroll --config reaches the port of the file", async () => {
    const f = join(cli.cwd, "sb.toml");
    writeFileSync(f, `data_dir = ${JSON.stringify(srv.dataDir)}\n[tcp]\nport = ${srv.tcp}\n`);
    const out = await cli.ok(["user", "add", "erin", "--config", f]);
    const hint = out.split("\n").find((l) => l.includes("switchboard device enroll"))!;
    expect(hint).toEndWith(` --config ${f}`);
    expect(await cli.ok(hint.trim().split(/\s+/).slice(1))).toContain("enrolled erin device 1");
    // Without either, the default port is another server (or none): refused, with the hint to check.
    const { code } = JSON.parse(await cli.ok(["user", "code", "erin", "--config", f, "--json"]));
    const none = await cli.sb(["device", "enroll", "--user", "erin", "--code", code, "--key", "erin2.key", "--port", String(srv.http)]);
    expect(none.code).toBe(1);
  });
});

describe("plain answers", () => {
  test("a key file readable by others is used with a warning naming it and chmod 600", async () => {
    chmodSync(join(cli.cwd, "dave.key"), 0o644);
    const r = await cli.sb(["device", "list", "--key", "dave.key"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("switchboard: warning: dave.key is readable by others (mode 644); it is a private key: chmod 600 dave.key\n");
    chmodSync(join(cli.cwd, "dave.key"), 0o600);
    expect((await cli.sb(["device", "list", "--key", "dave.key"])).stderr).toBe("");
  });

  test("sending to an account with no device says so; empty messages are refused", async () => {
    await cli.ok(["user", "add", "nodev", "--data-dir", srv.dataDir]);
    for (const plain of [[], ["--plain"]]) {
      const r = await cli.sb(["send", "--key", "dave.key", "--to", "nodev", ...plain, "hello?"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("nodev has no devices yet");
      expect(r.stderr).not.toContain("bad_field");
    }
    const empty = await cli.sb(["send", "--key", "dave.key", "--to", "alice", "  "]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain("the message is empty");
  });

  test("a new enrollment code replaces the earlier one", async () => {
    await cli.ok(["user", "add", "frank", "--data-dir", srv.dataDir]);
    const first = JSON.parse(await cli.ok(["user", "code", "frank", "--data-dir", srv.dataDir, "--json"])).code;
    const out = await cli.ok(["user", "code", "frank", "--data-dir", srv.dataDir], { env });
    expect(out).toContain("earlier codes of this account no longer work");
    const old = await cli.sb(["device", "enroll", "--user", "frank", "--code", first, "--key", "frank.key"], { env });
    expect(old.code).toBe(1);
    expect(old.stderr).toContain("bad_code");
    expect(old.stderr).toContain("replaced by a newer one");
  });

  test("revoking the account's only device needs --yes when nobody can be asked", async () => {
    await enroll("gus", "gus.key");
    const r = await cli.sb(["device", "revoke", "--key", "gus.key", "--device", "1"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("device 1 is the only device of gus");
    expect(r.stderr).toContain("pass --yes to revoke it anyway");
    expect(JSON.parse(await cli.ok(["device", "list", "--key", "gus.key", "--json"])).devices.length).toBe(1);
    expect(await cli.ok(["device", "revoke", "--key", "gus.key", "--device", "1", "--yes"])).toContain("revoked gus device 1");
  });

  test("safety with one's own account names it as such", async () => {
    const out = await cli.ok(["safety", "alice", "--key", "alice.key"]);
    expect(out).toStartWith("safety number of your account's devices (alice):\n");
    expect(out).not.toContain("alice and alice");
  });
});

describe("chat", () => {
  test("/help and unknown /commands are not sent; //text sends /text", async () => {
    const bob = await cli.listening("bob.key");
    const chat = cli.start(["chat", "--key", "alice.key", "--to", "bob", "--lines"]);
    await chat.line((l) => l.includes("/help lists the commands"));
    chat.write("/help\n/frobnicate now\n//literal slash\n");
    await chat.line((l) => l.includes("/safety [ACCOUNT]"));
    expect(await chat.line((l) => l.includes("unknown command"))).toBe("  unknown command /frobnicate: not sent; /help lists the commands (//text sends a line starting with /)");
    await bob.event("message", (m) => m.text === "/literal slash");
    expect(await chat.end()).toBe(0);
    expect(bob.events("message").map((m) => m.text)).toEqual(["/literal slash"]);
    expect(chat.lines.filter((l) => l.includes("✓ sent")).length).toBe(1);
    expect(await bob.signal("SIGTERM")).toBe(0);
  });

  test("ticks in order: sent, delivered, read", async () => {
    const bob = cli.start(["chat", "--key", "bob.key", "--to", "alice", "--lines"]); // marks what it shows read
    await bob.line((l) => l.includes("chatting with alice"));
    const alice = cli.start(["chat", "--key", "alice.key", "--to", "bob", "--lines"]);
    await alice.line((l) => l.includes("chatting with bob"));
    alice.write("read me\n");
    await bob.line((l) => l === "alice: read me");
    const read = await alice.line((l) => l.includes("✓✓ read up to #"));
    const seq = read.match(/#(\d+)/)![1];
    const at = (s: string) => alice.lines.indexOf(s);
    expect(at(`  ✓ sent #${seq}`)).toBeGreaterThan(-1);
    expect(at(`  ✓ sent #${seq}`)).toBeLessThan(at(read));
    const dlv = at(`  ✓✓ delivered #${seq}`);
    if (dlv >= 0) expect(dlv).toBeGreaterThan(at(`  ✓ sent #${seq}`)); // shown only before the read
    if (dlv >= 0) expect(dlv).toBeLessThan(at(read));
    expect(await alice.end()).toBe(0);
    expect(await bob.end()).toBe(0);
  });

  test("own device re-keyed: the chat says your device has new keys, not 'security code with alice'", async () => {
    await enroll("alice", "alice2.key", false);
    const chat = cli.start(["chat", "--key", "alice.key", "--to", "bob", "--lines"]);
    await chat.line((l) => l.includes("chatting with bob"));
    chat.write("before\n");
    await chat.line((l) => l.includes("✓ sent"));
    rmSync(join(cli.cwd, "alice2.key.e2e")); // device 2 starts over with a new identity
    jsonLines(await cli.ok(["send", "--key", "alice2.key", "--to", "bob", "from the new identity"]));
    // Learnt from the sync copy of that message (a new session), or at the latest when alice writes again.
    chat.write("after\n");
    const line = await chat.line((l) => l.includes("has new keys"));
    expect(line).toStartWith("  ! your device 2 has new keys: your security codes with everyone changed");
    expect(line).not.toContain("security code with alice");
    expect(await chat.end()).toBe(0);
  });

  test("group chat: the group's name, membership changes, and per-member receipts", async () => {
    const { group: g } = JSON.parse(await cli.ok(["group", "create", "team", "bob", "--key", "alice.key", "--json"]));
    const bob = cli.start(["chat", "--key", "bob.key", "--to", g, "--lines"]);
    expect(await bob.line((l) => l.startsWith("chatting with"))).toStartWith(`chatting with "team" (${g}) as bob (device 1)`);
    const alice = cli.start(["chat", "--key", "alice.key", "--to", g, "--lines"]);
    await alice.line((l) => l.startsWith("chatting with"));
    alice.write("hello team\n");
    await bob.line((l) => l === "alice: hello team");
    const sent = await alice.line((l) => l.includes("✓ sent #"));
    const seq = sent.match(/#(\d+)/)![1];
    await alice.line((l) => l === `  ✓✓ bob read up to #${seq}`);
    // A one-shot command of the device that is chatting (a non-receiving session): the chat stays connected.
    await cli.ok(["group", "add", g, "dave", "--key", "alice.key"]);
    expect(await bob.line((l) => l.includes("added dave"))).toBe("  alice added dave");
    expect(await alice.line((l) => l.includes("added dave"))).toBe("  you added dave");
    expect(alice.lines.join("\n")).not.toContain("replaced");
    expect(await alice.end()).toBe(0);
    expect(await bob.end()).toBe(0);
  });
});
