/**
 * Issue 19, item 1: a device added to an account (what whoever runs the
 * server can do with `user code` + `device enroll`) or revoked from it is
 * announced. The peer's chat warns that the security code changed and
 * `listen` prints `devices_changed`, however the client learns of it (a send
 * refused with devices_mismatch, a message from a device it did not know);
 * the account's own devices print the server's `device` event ("a new device
 * was linked to your account"). Real server, real CLI processes.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type TestServer } from "../helpers/harness.ts";
import { Cli } from "./run.ts";

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

let srv: TestServer;
let cli: Cli;

/** As the operator would: a code from `user add`/`user code`, then `device enroll` with it. */
async function enroll(account: string, key: string, add = false): Promise<number> {
  const { code } = JSON.parse(await cli.ok(["user", add ? "add" : "code", account, "--data-dir", srv.dataDir, "--json"]));
  const r = JSON.parse(await cli.ok(["device", "enroll", "--user", account, "--code", code, "--key", key, "--port", String(srv.tcp), "--json"]));
  return r.device;
}

beforeAll(async () => {
  srv = await startServer();
  cli = new Cli(mkdtempSync(join(tmpdir(), "sb-cli-devices-")));
  await enroll("alice", "alice.key", true);
  await enroll("bob", "bob.key", true);
});
afterAll(() => {
  cli?.killAll();
  srv?.cleanup();
  if (cli) rmSync(cli.cwd, { recursive: true, force: true });
});

describe("a changed device list is announced", () => {
  test("bob's new device: bob's listen prints the server's device event, alice's chat warns before her next message is read there", async () => {
    const bob = await cli.listening("bob.key");
    const chat = cli.start(["chat", "--key", "alice.key", "--to", "bob", "--lines"]);
    await chat.line((l) => l.includes("chatting with bob"));
    chat.write("first\n");
    await bob.event("message", (m) => m.text === "first");
    await chat.line((l) => l.includes("✓ sent #"));

    const d = await enroll("bob", "bob2.key");
    expect(d).toBe(2);
    expect(await bob.event("device")).toMatchObject({ op: "linked", account: "bob", device: 2, name: "cli" });

    const mark = chat.lines.length;
    chat.write("second\n");
    const warning = await chat.line((l) => l.includes("security code with bob changed"), mark);
    expect(warning).toContain("bob's devices changed (device 2 added)");
    expect(warning).toContain("type /safety and compare the number with bob");
    await chat.line((l) => l.includes("✓ sent #"), mark);
    // The new device reads it: exactly why alice had to be told.
    const bob2 = await cli.listening("bob2.key");
    expect(await bob2.event("message", (m) => m.text === "second")).toMatchObject({ from: "alice", encrypted: true });
    expect(bob2.events("message").map((m) => m.text)).not.toContain("first");
    expect(await bob2.signal("SIGTERM")).toBe(0);

    // Revoked (by itself: bob.key is busy listening): bob's listen is told, and alice's next message warns again.
    await cli.ok(["device", "revoke", "--key", "bob2.key", "--device", "2"]);
    expect(await bob.event("device", (e) => e.op === "revoked")).toMatchObject({ account: "bob", device: 2 });
    const mark2 = chat.lines.length;
    chat.write("third\n");
    expect(await chat.line((l) => l.includes("security code with bob changed"), mark2)).toContain("(device 2 removed)");
    expect(await chat.end()).toBe(0);
    expect(chat.stderr).toBe("");
    expect(await bob.signal("SIGTERM")).toBe(0);
  });

  test("alice's listen prints devices_changed when a device of bob it did not know writes to her", async () => {
    const alice = await cli.listening("alice.key");
    const d = await enroll("bob", "bob3.key");
    await cli.ok(["send", "--key", "bob3.key", "--to", "alice", "from a new device"]);
    const m = await alice.event("message", (m) => m.text === "from a new device");
    expect(m).toMatchObject({ from: "bob", device: d });
    expect(await alice.event("devices_changed")).toEqual({ event: "devices_changed", account: "bob", added: [d], removed: [] });
    expect(await alice.signal("SIGTERM")).toBe(0);
  });

  test("alice's chat says so when a device is linked to her own account, and safety lists the change", async () => {
    const chat = cli.start(["chat", "--key", "alice.key", "--to", "bob", "--lines"]);
    await chat.line((l) => l.includes("chatting with bob"));
    const d = await enroll("alice", "alice2.key");
    const line = await chat.line((l) => l.includes("a new device was linked to your account"));
    expect(line).toContain(`device ${d} "cli"`);
    expect(line).toContain(`switchboard device revoke --key alice.key --device ${d}`);
    expect(await chat.end()).toBe(0);
    // The chat fetched her new list when the server announced it, and remembered it: told once, not again here.
    const s = JSON.parse(await cli.ok(["safety", "bob", "--key", "alice.key", "--json"]));
    expect(s.devices_changed).toEqual([]);
  });
});
