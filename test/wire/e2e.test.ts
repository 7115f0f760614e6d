/**
 * End-to-end encryption over real sockets: SecureClient on SwitchboardClient
 * against a real server with the key directory. Key publication and refill,
 * 1:1 messages between multi-device accounts (sync copies included), offline
 * delivery and state that survives a restart of the client, a device that
 * re-keys (identity change, devices_stale, resend), a device the sender did
 * not know of, groups with sender keys and their rotation, safety numbers.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { ServerError, type SwitchboardClient } from "../../src/client/client.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SecureClient, type DevicesChange, type IdentityChange, type SecureMessage, type Undecryptable } from "../../src/client/secure.ts";
import { decodeEnvelope, parseDistribution } from "../../src/client/crypto/index.ts";

let srv: TestServer;
let dir: string;
beforeAll(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sb-e2e-"));
});
afterAll(() => {
  srv?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let n = 0;
const uniq = (p: string) => `${p}${++n}`;

interface Dev {
  kf: KeyFile;
  c: SwitchboardClient;
  s: SecureClient;
  got: SecureMessage[];
  changes: IdentityChange[];
  devices: DevicesChange[];
  bad: Undecryptable[];
  errors: Error[];
  /** Raw payloads as the server delivered them. */
  raw: Uint8Array[];
}

const statePath = (kf: KeyFile) => join(dir, `${kf.account}-${kf.device}.e2e`);

/** A connected device with end-to-end encryption, keys published. */
async function secure(kf: KeyFile, otkTarget = 20): Promise<Dev> {
  const d = { kf, got: [], changes: [], devices: [], bad: [], errors: [], raw: [] } as unknown as Dev;
  d.c = await srv.client(kf, {
    setup: async (c) => {
      c.on("message", (m) => d.raw.push(m.payload));
      d.s = await SecureClient.open(c, { statePath: statePath(kf), otkTarget });
      d.s.on("message", (m) => d.got.push(m));
      d.s.on("identityChanged", (e) => d.changes.push(e));
      d.s.on("devicesChanged", (e) => d.devices.push(e));
      d.s.on("undecryptable", (u) => d.bad.push(u));
      d.s.on("error", (e) => d.errors.push(e));
    },
  });
  await d.s.whenPublished();
  return d;
}

const texts = (d: Dev, conv?: string) => d.got.filter((m) => conv === undefined || m.conversation === conv).map((m) => m.text);

async function close(...ds: Dev[]) {
  for (const d of ds) await d.c.close();
}

describe("keys", () => {
  test("a new device publishes its identity and tops its one-time prekeys up; the state file is private", async () => {
    const a = await secure(await srv.newDevice(uniq("pub")), 30);
    const devs = await a.c.request<{ devices: { d: number; kv: number }[] }>("devices", {});
    expect(devs.devices.find((x) => x.d === a.kf.device)!.kv).toBe(a.s.e2e.kv);
    expect((await a.c.request<{ n: number }>("keys.count")).n).toBe(30);
    expect(statSync(statePath(a.kf)).mode & 0o777).toBe(0o600);
    expect(a.errors).toEqual([]);
    await close(a);
  });

  test("one-time prekeys are refilled on the server's low notice", async () => {
    const bob = await secure(await srv.newDevice(uniq("low")), 12); // the server warns below 10 (keys.low_otk)
    const other = await srv.client(await srv.newDevice(uniq("fetcher")));
    for (let i = 0; i < 3; i++) await other.request("keys.fetch", { u: bob.kf.account }); // 12 -> 9: a notice
    await waitFor(async () => (await bob.c.request<{ n: number }>("keys.count")).n === 12, "the refill after the low notice");
    expect(bob.errors).toEqual([]);
    await other.close();
    await close(bob);
  });
});

describe("one-to-one", () => {
  test("multi-device accounts: every device of both decrypts, sync copies included; the server sees only ciphertext", async () => {
    const A = uniq("alice"), B = uniq("bob");
    const a1 = await secure(await srv.newDevice(A)), a2 = await secure(await srv.newDevice(A));
    const b1 = await secure(await srv.newDevice(B)), b2 = await secure(await srv.newDevice(B));
    await a1.s.send(B, "hello bob, all of you");
    await waitFor(() => b1.got.length === 1 && b2.got.length === 1 && a2.got.length === 1, "bob's devices and alice's sync copy");
    expect(texts(b1)).toEqual(["hello bob, all of you"]);
    expect(texts(b2)).toEqual(["hello bob, all of you"]);
    expect(a2.got[0]).toMatchObject({ text: "hello bob, all of you", sync: true, conversation: B, from: A, fromDevice: a1.kf.device });

    await b2.s.send(A, "hi alice");
    await waitFor(() => a1.got.length === 1 && a2.got.length === 2 && b1.got.length === 2, "the answer everywhere");
    expect(texts(a1)).toEqual(["hi alice"]);
    expect(b1.got[1]).toMatchObject({ text: "hi alice", sync: true, conversation: A });

    for (const d of [a1, a2, b1, b2]) {
      for (const p of d.raw) {
        expect(Buffer.from(p).includes(Buffer.from("alice"))).toBe(false);
        expect(Buffer.from(p).includes(Buffer.from("hello"))).toBe(false);
        expect([1, 2]).toContain((decodeEnvelope(p) as { t: number }).t); // ratchet or prekey messages, no notices
      }
      expect(d.bad).toEqual([]);
      expect(d.errors).toEqual([]);
    }
    await close(a1, a2, b1, b2);
  });

  test("messages for an offline device wait encrypted; its state survives a client restart and the conversation goes on", async () => {
    const A = uniq("alice"), B = uniq("bob");
    const a = await secure(await srv.newDevice(A));
    const bkf = await srv.newDevice(B);
    let b = await secure(bkf);
    await close(b); // offline; its keys are on the server
    for (const t of ["one", "two", "three"]) await a.s.send(B, t);
    b = await secure(bkf); // a new process: state from the file
    await waitFor(() => b.got.length === 3, "the queued messages");
    expect(texts(b)).toEqual(["one", "two", "three"]);
    await b.s.send(A, "got them");
    await close(b);
    b = await secure(bkf);
    await b.s.send(A, "still here"); // a ratchet that was not saved would reuse the message key of "got them"
    await a.s.send(B, "and after another restart");
    await waitFor(() => b.got.length === 1 && a.got.length === 2, "both ways");
    expect(texts(a)).toEqual(["got them", "still here"]);
    expect(texts(b)).toEqual(["and after another restart"]);
    expect([...a.bad, ...b.bad, ...a.errors, ...b.errors]).toEqual([]);
    await close(a, b);
  });

  test("a device that re-keys: the sender sees the identity change, fetches the new keys and the message still arrives", async () => {
    const A = uniq("alice"), B = uniq("bob");
    const a = await secure(await srv.newDevice(A));
    const bkf = await srv.newDevice(B);
    let b = await secure(bkf);
    await a.s.send(B, "before");
    await waitFor(() => b.got.length === 1, "the first message");
    const before = await a.s.safetyNumber(B);
    expect(before).toMatch(/^\d{60}$/);
    expect(await b.s.safetyNumber(A)).toBe(before);
    const oldKv = b.s.e2e.kv;

    await close(b);
    rmSync(statePath(bkf)); // bob's device lost its end-to-end state: a new identity on the next start
    b = await secure(bkf);
    expect(b.s.e2e.kv).not.toBe(oldKv);

    await a.s.send(B, "after"); // alice's client still has the old key version: devices_stale, then a resend for the new keys
    await waitFor(() => b.got.length === 1, "the message under the new keys");
    expect(texts(b)).toEqual(["after"]);
    expect(a.changes).toEqual([{ account: B, device: bkf.device, kv: b.s.e2e.kv, previousKv: oldKv }]);
    expect(await a.s.safetyNumber(B)).not.toBe(before);
    expect(await a.s.safetyNumber(B)).toBe(await b.s.safetyNumber(A));
    expect([...b.bad, ...a.errors]).toEqual([]);
    await close(a, b);
  });

  test("a device the sender did not know of gets the message in a second round; the others get it once", async () => {
    const A = uniq("alice"), B = uniq("bob");
    const a = await secure(await srv.newDevice(A));
    const b1 = await secure(await srv.newDevice(B));
    await a.s.send(B, "first");
    await waitFor(() => b1.got.length === 1, "first");
    const b2 = await secure(await srv.newDevice(B)); // alice's client has bob's device list cached without it
    await a.s.send(B, "second");
    await waitFor(() => b2.got.length === 1 && b1.got.length === 2, "both devices");
    expect(texts(b1)).toEqual(["first", "second"]);
    expect(texts(b2)).toEqual(["second"]);
    // alice is told that bob's devices changed (the send was refused with devices_mismatch and the list refetched), once.
    expect(a.devices).toEqual([{ account: B, added: [2], removed: [] }]);
    // b1 got the resend as a skip notice, dropped without an event
    expect(b1.raw.length).toBeGreaterThan(2);
    expect([...b1.bad, ...b2.bad, ...a.errors]).toEqual([]);
    await close(a, b1, b2);
  });

  test("an account with no device: send fails with no_devices, not a field error", async () => {
    const A = uniq("alice"), B = uniq("nodev");
    const a = await secure(await srv.newDevice(A));
    srv.addUser(B);
    const e = await a.s.send(B, "anyone?").catch((x) => x);
    expect(e).toBeInstanceOf(ServerError);
    expect(e).toMatchObject({ code: ErrorCode.NO_DEVICES, message: expect.stringContaining(`${B} has no devices yet`) });
    await close(a);
  });

  test("a device without end-to-end keys gets a notice, never plaintext", async () => {
    const A = uniq("alice"), B = uniq("plain");
    const a = await secure(await srv.newDevice(A));
    const plain = await srv.client(await srv.newDevice(B)); // an SDK client without SecureClient: publishes nothing
    const seen: Uint8Array[] = [];
    plain.on("message", (m) => seen.push(m.payload));
    await a.s.send(B, "can you read this?");
    await waitFor(() => seen.length === 1, "the notice");
    expect(decodeEnvelope(seen[0]!)).toEqual({ t: 0, r: "no_keys" });
    await plain.close();
    await close(a);
  });
});

describe("groups", () => {
  test("sender keys: one ciphertext fanned out, every member device decrypts; after a removal the key is replaced", async () => {
    const A = uniq("alice"), B = uniq("bob"), C = uniq("carol");
    const a1 = await secure(await srv.newDevice(A)), a2 = await secure(await srv.newDevice(A));
    const b = await secure(await srv.newDevice(B));
    const c = await secure(await srv.newDevice(C));
    const { g } = await a1.c.createGroup("team", [B, C]);

    await a1.s.send(g, "hello team");
    await waitFor(() => [a2, b, c].every((d) => d.got.some((m) => m.group)), "the group message everywhere");
    for (const d of [a2, b, c]) expect(d.got.find((m) => m.group)).toMatchObject({ conversation: g, text: "hello team", from: A, group: true });
    expect(a2.got.find((m) => m.group)!.sync).toBe(true);

    await b.s.send(g, "hi from bob");
    await waitFor(() => [a1, a2, c].every((d) => texts(d, g).includes("hi from bob")), "bob's group message");

    const keyId = async () => parseDistribution(await a1.s.e2e.groupDistribution(g))!.id;
    const before = await keyId();
    await a1.c.removeMembers(g, [C]);
    await waitFor(async () => (await keyId()) !== before, "alice's sender key replaced after the removal");
    await a1.s.send(g, "without carol");
    await waitFor(() => texts(b, g).includes("without carol") && texts(a2, g).includes("without carol"), "the message after the removal");
    expect(texts(c, g)).not.toContain("without carol");

    // a member added later reads what comes after; bob (who rotated on carol's removal too) and dave write
    const D = uniq("dave");
    const dv = await secure(await srv.newDevice(D));
    await a1.c.addMembers(g, [D]);
    await b.s.send(g, "welcome dave");
    await waitFor(() => [a1, a2, dv].every((d) => texts(d, g).includes("welcome dave")), "bob's message to the new member");
    await dv.s.send(g, "thanks");
    await waitFor(() => [a1, a2, b].every((d) => texts(d, g).includes("thanks")), "dave's message");
    expect(texts(dv, g)).toEqual(["welcome dave"]);
    expect(texts(c, g)).not.toContain("welcome dave");
    for (const d of [a1, a2, b, c, dv]) {
      expect(d.bad).toEqual([]);
      expect(d.errors).toEqual([]);
    }
    await close(a1, a2, b, c, dv);
  });
});

describe("state file", () => {
  test("a state file of another device is refused with a message that says so", async () => {
    const kf1 = await srv.newDevice(uniq("x"));
    const a = await secure(kf1);
    await close(a);
    const kf2 = await srv.newDevice(uniq("y"));
    const c = await srv.client(kf2);
    expect(existsSync(statePath(kf1))).toBe(true);
    await expect(SecureClient.open(c, { statePath: statePath(kf1) })).rejects.toThrow(/belongs to .* give each device its own state file/);
    await c.close();
  });
});

