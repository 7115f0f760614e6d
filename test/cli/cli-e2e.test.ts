/**
 * The terminal client's end-to-end encryption, run as real subprocesses
 * against a real server: `send`, `listen` and `chat` encrypt by default
 * (`--plain` does not), `device enroll` publishes the device's keys, `safety`
 * prints the same safety number on both sides and a new one after a re-key,
 * identity changes and undecryptable messages are reported, and the `group`
 * commands with encrypted group messages. Long-running commands are read line
 * by line until the expected line appears; nothing depends on timing.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { readKeyFile } from "../../src/client/keys.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { decodeEnvelope } from "../../src/client/crypto/index.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";
import { need } from "../helpers/need.ts";

const MAIN = join(ROOT, "src/cli/main.ts");
const ENV = CLEAN_ENV;

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

let srv: TestServer;
let cwd: string;
const running = new Set<Subprocess>();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function sb(args: string[], opts: { stdin?: string } = {}): Promise<Result> {
  const p = Bun.spawn([process.execPath, MAIN, ...args], {
    cwd,
    env: ENV,
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(opts.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

/** Runs and expects exit 0 with nothing on stderr. */
async function ok(args: string[], opts: { stdin?: string } = {}): Promise<string> {
  const r = await sb(args, opts);
  if (r.code !== 0 || r.stderr !== "") throw new Error(`switchboard ${args.join(" ")}: exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r.stdout;
}

const jsonLines = (s: string) => s.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));

/** A CLI process that keeps running: its stdout is collected line by line. */
class Running extends LineProcess {
  constructor(args: string[], cmd: string[] = [process.execPath, MAIN]) {
    super([...cmd, ...args], { cwd, env: ENV, track: running });
  }
}

/** A `listen` that has logged in. */
async function listening(key: string, ...flags: string[]): Promise<Running> {
  const l = new Running(["listen", "--key", key, ...flags]);
  await l.event("ready");
  return l;
}

/** The 60 digits of the three rows of four 5-digit groups in these lines (escapes and indentation aside). */
function safetyDigits(lines: string[]): string {
  // On a terminal a line is "<prompt>\r\x1b[K<text>": what follows the last erase is the text.
  const rows = lines
    .map((l) => (l.includes("\x1b[K") ? l.slice(l.lastIndexOf("\x1b[K") + 3) : l).replace(/\r/g, ""))
    .map((l) => l.match(/^\s+(\d{5} \d{5} \d{5} \d{5})$/)?.[1])
    .filter((r): r is string => r !== undefined);
  expect(rows.length).toBe(3);
  return rows.join(" ").replace(/ /g, "");
}

async function enroll(account: string, key = `${account}.key`): Promise<void> {
  const code = srv.addUser(account);
  await ok(["device", "enroll", "--user", account, "--code", code, "--key", key, "--port", String(srv.tcp)]);
}

const te = new TextEncoder();

beforeAll(async () => {
  srv = await startServer();
  cwd = mkdtempSync(join(tmpdir(), "sb-cli-e2e-"));
  for (const a of ["alice", "bob", "carol"]) await enroll(a);
});
afterAll(() => {
  for (const p of running) p.kill("SIGKILL");
  srv?.cleanup();
  if (cwd) rmSync(cwd, { recursive: true, force: true });
});

describe("keys", () => {
  test("device enroll publishes the new device's end-to-end keys and writes its state file (0600) beside the key file", async () => {
    expect(statSync(join(cwd, "alice.key.e2e")).mode & 0o777).toBe(0o600);
    const list = JSON.parse(await ok(["device", "list", "--key", "alice.key", "--user", "bob", "--json"]));
    expect(list.devices.length).toBe(1);
    expect(list.devices[0].kv).toBeGreaterThan(0); // keys published, before bob ever listened
    // A state file left from an earlier device is refused before the server is asked.
    const old = JSON.parse(await ok(["device", "enroll", "--user", "alice", "--code", srv.addUser("alice"), "--key", "old.key", "--json", "--port", String(srv.tcp)]));
    expect(old).toEqual({ account: "alice", device: 2, key: "old.key" });
    expect(existsSync(join(cwd, "old.key.e2e"))).toBe(true);
    await ok(["device", "revoke", "--key", "old.key", "--device", "2"]);
    rmSync(join(cwd, "old.key"));
    const again = await sb(["device", "enroll", "--user", "alice", "--code", srv.addUser("alice"), "--key", "old.key", "--port", String(srv.tcp)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("old.key.e2e exists already; it is the end-to-end state of an earlier device");
  });
});

describe("send and listen", () => {
  test("send encrypts by default: the listening device prints the plaintext, marked encrypted", async () => {
    const bob = await listening("bob.key");
    const [sent] = jsonLines(await ok(["send", "--key", "alice.key", "--to", "bob", "meet at noon"]));
    expect(sent).toMatchObject({ event: "sent", to: "bob", encrypted: true });
    const m = await bob.event("message", (m) => m.id === sent.id);
    expect(m).toMatchObject({ from: "alice", to: "bob", conversation: "alice", seq: sent.seq, encrypted: true, group: false, text: "meet at noon" });
    expect(await bob.signal("SIGTERM")).toBe(0);
    expect(bob.stderr).toBe("");
    expect(bob.events("undecryptable")).toEqual([]);
  });

  test("a raw SDK client (no SecureClient) receives ciphertext by default, and the text itself with --plain", async () => {
    const payloads: Uint8Array[] = [];
    let raw: SwitchboardClient | null = await srv.client(readKeyFile(join(cwd, "carol.key")), { setup: (c) => c.on("message", (m) => payloads.push(m.payload)) });
    try {
      await ok(["send", "--key", "alice.key", "--to", "carol", "a secret plan"]);
      await ok(["send", "--key", "alice.key", "--to", "carol", "--plain", "an open letter"]);
      await waitFor(() => payloads.length === 2, "both messages at the raw client");
      const [secret, open] = payloads as [Uint8Array, Uint8Array];
      expect(Buffer.from(secret).includes(Buffer.from("secret"))).toBe(false);
      expect([1, 2]).toContain((decodeEnvelope(secret) as { t: number }).t); // a prekey or ratchet message
      expect(new TextDecoder().decode(open)).toBe("an open letter");
    } finally {
      await raw?.close();
      raw = null;
    }
  });

  test("listen shows a --plain message as undecryptable, never its text; listen --plain shows it, marked unencrypted", async () => {
    await ok(["send", "--key", "alice.key", "--to", "bob", "--plain", "not private"]);
    const bob = await listening("bob.key");
    const u = await bob.event("undecryptable");
    expect(u).toMatchObject({ from: "alice", conversation: "alice" });
    expect(["bad_envelope", "bad_version"]).toContain(u.reason); // text is not an envelope
    expect(bob.lines.join("\n")).not.toContain("not private");
    await ok(["send", "--key", "alice.key", "--to", "bob", "--plain", "plain again"]);
    expect(await bob.event("undecryptable", (x) => x.seq === u.seq + 1)).toMatchObject({ reason: u.reason });
    expect(await bob.signal("SIGTERM")).toBe(0);

    await ok(["send", "--key", "alice.key", "--to", "bob", "--plain", "for a plain listener"]);
    const plain = await listening("bob.key", "--plain");
    expect(await plain.event("message", (m) => m.text === "for a plain listener")).toMatchObject({ from: "alice", encrypted: false });
    expect(await plain.signal("SIGTERM")).toBe(0);
  });

  test("a device without keys gets a notice, and send says so on stderr", async () => {
    const kf = await srv.newDevice("dave"); // enrolled by the SDK: no end-to-end keys
    const payloads: Uint8Array[] = [];
    const dave = await srv.client(kf, { setup: (c) => c.on("message", (m) => payloads.push(m.payload)) });
    try {
      const r = await sb(["send", "--key", "alice.key", "--to", "dave", "can you read this?"]);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain("dave device 1 has no end-to-end keys, so it got a notice instead of the message");
      await waitFor(() => payloads.length === 1, "the notice");
      expect(decodeEnvelope(payloads[0]!)).toEqual({ t: 0, r: "no_keys" });
    } finally {
      await dave.close();
    }
  });
});

describe("safety numbers and identity changes", () => {
  let before = "";

  test("safety prints the same 60 digits for alice about bob and bob about alice, in 12 groups of 5", async () => {
    const a = await ok(["safety", "bob", "--key", "alice.key"]);
    const lines = a.trim().split("\n");
    expect(lines[0]).toBe("safety number of alice and bob:");
    for (const row of lines.slice(1, 4)) expect(row).toMatch(/^ {2}\d{5} \d{5} \d{5} \d{5}$/);
    before = safetyDigits(lines);
    expect(before).toMatch(/^\d{60}$/);
    expect(safetyDigits((await ok(["safety", "alice", "--key", "bob.key"])).split("\n"))).toBe(before);
    const j = JSON.parse(await ok(["safety", "alice", "--key", "bob.key", "--json"]));
    expect(j).toEqual({ account: "bob", with: "alice", safety_number: before, changed: [], devices_changed: [] });
    const none = await sb(["safety", "dave", "--key", "alice.key"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("dave has no device with end-to-end keys yet");
  });

  test("after bob re-keys (state file deleted), alice's listen reports the change, and both sides get a new, equal number", async () => {
    const alice = await listening("alice.key");
    rmSync(join(cwd, "bob.key.e2e")); // bob's device lost its end-to-end state: a new identity, published on next use
    await ok(["send", "--key", "bob.key", "--to", "alice", "new keys, same bob"]);
    expect(existsSync(join(cwd, "bob.key.e2e"))).toBe(true);
    const changed = await alice.event("security_code_changed");
    expect(changed).toMatchObject({ account: "bob", device: 1 });
    expect(changed.kv).not.toBe(changed.previousKv);
    expect(await alice.event("message", (m) => m.text === "new keys, same bob")).toMatchObject({ from: "bob", encrypted: true });
    expect(await alice.signal("SIGTERM")).toBe(0);

    const after = safetyDigits((await ok(["safety", "bob", "--key", "alice.key"])).split("\n"));
    expect(after).not.toBe(before);
    expect(safetyDigits((await ok(["safety", "alice", "--key", "bob.key"])).split("\n"))).toBe(after);
    before = after;
  });

  test("safety reports an identity change it is the first to see", async () => {
    rmSync(join(cwd, "carol.key.e2e"));
    await ok(["device", "list", "--key", "carol.key"]); // does not touch end-to-end state
    expect(existsSync(join(cwd, "carol.key.e2e"))).toBe(false);
    const carolNew = JSON.parse(await ok(["safety", "alice", "--key", "carol.key", "--json"])); // publishes carol's new identity
    const r = JSON.parse(await ok(["safety", "carol", "--key", "alice.key", "--json"]));
    expect(r.changed).toEqual([expect.objectContaining({ account: "carol", device: 1 })]);
    expect(r.safety_number).toBe(carolNew.safety_number);
    const text = await ok(["safety", "carol", "--key", "alice.key"]);
    expect(text).not.toContain("security code with carol changed"); // seen once, known since
  });
});

describe("chat", () => {
  test("on a terminal: sends and receives encrypted, /safety prints the number, a re-key shows 'security code changed'", async () => {
    need("script", "bsdutils");
    const cmd = [process.execPath, MAIN, "chat", "--key", "alice.key", "--to", "bob"].map((a) => `'${a}'`).join(" ");
    const bob = await listening("bob.key");
    const chat = new Running(["-qec", cmd, "/dev/null"], ["script"]);
    await chat.line((l) => l.includes("chatting with bob as alice (device 1); type a line and press enter to send"));
    await chat.line((l) => l.includes("end-to-end encrypted; /safety prints the safety number to compare with bob"));
    chat.write("typed and encrypted\r");
    expect(await bob.event("message", (m) => m.text === "typed and encrypted")).toMatchObject({ from: "alice", encrypted: true });
    await chat.line((l) => l.includes("✓ sent #"));
    expect(await bob.signal("SIGTERM")).toBe(0);

    await ok(["send", "--key", "bob.key", "--to", "alice", "answer, encrypted"]);
    expect(await chat.line((l) => l.includes("bob: answer, encrypted"))).toContain("\r\x1b[Kbob: answer, encrypted");

    const mark = chat.lines.length;
    chat.write("/safety\r");
    await chat.line((l) => l.includes("sees the same digits"), mark);
    const shown = safetyDigits(chat.lines.slice(mark));
    expect(shown).toBe(safetyDigits((await ok(["safety", "alice", "--key", "bob.key"])).split("\n")));
    expect(chat.lines.slice(mark).join("\n")).not.toContain("✓ sent"); // a command, not a message

    rmSync(join(cwd, "bob.key.e2e"));
    await ok(["send", "--key", "bob.key", "--to", "alice", "after my re-key"]);
    const line = await chat.line((l) => l.includes("security code with bob changed"));
    expect(line).toContain("type /safety and compare the number with bob");
    await chat.line((l) => l.includes("bob: after my re-key"));
    chat.write("\x04");
    expect(await chat.proc.exited).toBe(0);
  });

  test("--lines on a terminal: plain lines, no prompt (--plain is about encryption)", async () => {
    need("script", "bsdutils");
    const cmd = [process.execPath, MAIN, "chat", "--key", "alice.key", "--to", "bob", "--lines"].map((a) => `'${a}'`).join(" ");
    const chat = new Running(["-qec", cmd, "/dev/null"], ["script"]);
    await chat.line((l) => l.includes("chatting with bob as alice (device 1); one message per input line"));
    await chat.line((l) => l.includes("end-to-end encrypted"));
    chat.write("\x04");
    expect(await chat.proc.exited).toBe(0);
    expect(chat.lines.join("\n")).not.toContain("alice > ");
  });

  test("--plain chats unencrypted and says so; the encrypted listener cannot read it", async () => {
    const bob = await listening("bob.key");
    const chat = new Running(["chat", "--key", "alice.key", "--to", "bob", "--plain"]);
    await chat.line((l) => l.includes("not encrypted (--plain): the server, and whoever runs it, can read these messages"));
    chat.write("in the clear\n");
    expect(await bob.event("undecryptable")).toMatchObject({ from: "alice", reason: expect.stringMatching(/^bad_(envelope|version)$/) });
    expect(await chat.end()).toBe(0);
    expect(await bob.signal("SIGTERM")).toBe(0);
    expect(bob.lines.join("\n")).not.toContain("in the clear");
  });
});

describe("groups", () => {
  let g = "";

  test("group create / list / info, and an encrypted group message reaches the members' listen", async () => {
    const created = JSON.parse(await ok(["group", "create", "team", "bob", "--key", "alice.key", "--json"]));
    g = created.group;
    expect(g).toMatch(/^#[a-z0-9]+$/);
    expect(created.members).toEqual(["alice", "bob"]);
    const list = JSON.parse(await ok(["group", "list", "--key", "bob.key", "--json"]));
    expect(list.groups).toEqual([{ g, name: "team", n: 2 }]);
    const info = await ok(["group", "info", g.slice(1), "--key", "bob.key"]); // the # may be left out
    expect(info).toContain(`${g} "team", created `);
    expect(info).toContain("  alice (admin)");
    expect(info).toContain("  bob  (you)");

    const bob = await listening("bob.key");
    const [sent] = jsonLines(await ok(["send", "--key", "alice.key", "--to", g, "hello team"]));
    expect(sent).toMatchObject({ to: g, encrypted: true });
    expect(await bob.event("message", (m) => m.text === "hello team")).toMatchObject({ conversation: g, from: "alice", group: true, encrypted: true });
    expect(await bob.signal("SIGTERM")).toBe(0);
  });

  test("chat with a group id sends and shows group messages; add, remove and leave", async () => {
    const chat = new Running(["chat", "--key", "alice.key", "--to", g]);
    await chat.line((l) => l.includes("/safety MEMBER prints the safety number"));
    await ok(["send", "--key", "bob.key", "--to", g, "hi all, from bob"]);
    await chat.line((l) => l === "bob: hi all, from bob");
    chat.write("from alice's chat\n");
    await chat.line((l) => l.includes("✓ sent #"));
    const bob = await listening("bob.key");
    expect(await bob.event("message", (m) => m.text === "from alice's chat")).toMatchObject({ conversation: g, group: true, encrypted: true });
    expect(await bob.signal("SIGTERM")).toBe(0);
    expect(await chat.end()).toBe(0);
    expect(chat.stderr).toBe("");

    expect(await ok(["group", "add", g, "carol", "--key", "alice.key"])).toBe(`added to ${g}: carol\n`);
    const carol = await listening("carol.key");
    await ok(["send", "--key", "alice.key", "--to", g, "welcome carol"]);
    expect(await carol.event("message", (m) => m.text === "welcome carol")).toMatchObject({ conversation: g, encrypted: true });
    expect(await carol.signal("SIGTERM")).toBe(0);
    expect(JSON.parse(await ok(["group", "remove", g, "carol", "--key", "alice.key", "--json"]))).toEqual({ group: g, removed: ["carol"] });
    const notAdmin = await sb(["group", "add", g, "carol", "--key", "bob.key"]);
    expect(notAdmin.code).toBe(1);
    expect(notAdmin.stderr).toContain("forbidden");
    expect(await ok(["group", "leave", g, "--key", "bob.key"])).toBe(`left ${g}\n`);
    expect(JSON.parse(await ok(["group", "list", "--key", "bob.key", "--json"])).groups).toEqual([]);
    const bad = await sb(["group", "info", "Not-A-Group", "--key", "bob.key"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("is not a group id");
    expect((await sb(["group"])).stderr).toContain("group needs a subcommand: create, add, remove, leave, list, info");
  });
});
