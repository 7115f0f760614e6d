/**
 * The per-connection facts about a conversation's peer (src/core/facts.ts): a connection that has written to a peer
 * (or acked a sender's message) keeps the device lists and the presence rule's answer until something that could
 * change them bumps the epoch. Each test warms the cache with two messages, makes one change, and checks the next
 * message is handled exactly as by a server without the cache: a block refuses it, a device added is addressed and
 * gets its copy, a device revoked gets none, a receipt after a block is not sent, a receipt after the sender links a
 * device reaches it, a reloaded presence module's new rule applies, and a receipt allowed by a contact is limited
 * again once the contact is removed. Each fails with its bump removed (checked by mutation: presence's one bump,
 * RulesCache.changed(), which every write of its blocks, contacts and policies calls; Directory.drop's
 * factsChanged(); Hooks.add/remove's).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { Database } from "bun:sqlite";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type RawConn, type TestServer } from "../helpers/harness.ts";
import { modulesWith } from "../helpers/modules-copy.ts";
import { barrier, moduleLoaded, msgFrame, msgs, rawLogin, rcpts } from "./util.ts";
import { ok } from "../presence/util.ts";
import type { MsgS } from "../../src/protocol/stanzas.ts";

setDefaultTimeout(120_000); // a bound on waiting for a server, not a timing assertion

const tmp = mkdtempSync(join(tmpdir(), "sb-facts-"));
let srv: TestServer;
let modulesDir = "";
beforeAll(async () => {
  // The presence module of this server refuses, after a reload that sets its flag, every message to an account
  // named `closed*`; the flag is the appended code's, so the reload is what brings the new rule.
  const dir = modulesWith(tmp, "presence", "test/wire/peer-facts.test.ts", `[]`);
  srv = await startServer({ args: ["--modules-dir", dir] });
  modulesDir = dir;
});
afterAll(() => (srv?.cleanup(), rmSync(tmp, { recursive: true, force: true })));

let n = 0;
const uniq = (p: string) => `${p}${++n}`;

/** Sends `id` from `from` and waits for its sent or err. */
async function send(from: RawConn, id: string, to: string, devices: number[], sync: number[] = []): Promise<{ t: string; e?: string; x?: unknown }> {
  from.send(msgFrame(id, to, devices, sync));
  return (await from.expect((s) => (s.t === "sent" || s.t === "err") && (s as { id?: string }).id === id)) as { t: string; e?: string };
}

/** Waits for message `id` at `c` and acks it. */
async function takeAndAck(c: RawConn, id: string): Promise<MsgS> {
  const m = (await c.expect((s) => s.t === "msg" && (s as MsgS).id === id)) as MsgS;
  c.send({ t: "ack", q: [m.q] });
  return m;
}

/** Two accounts, each with one device logged in, and two messages a → b delivered and acked (the caches are warm). */
async function warmPair(p: string): Promise<{ a: string; b: string; ca: RawConn; cb: RawConn; ad: number; bd: number }> {
  const [a, b] = [uniq(`${p}a`), uniq(`${p}b`)];
  const ka = await srv.newDevice(a);
  const kb = await srv.newDevice(b);
  const ca = await rawLogin(srv, ka);
  const cb = await rawLogin(srv, kb);
  for (const id of [`${p}-w1`, `${p}-w2`]) {
    expect(await send(ca, id, b, [kb.device])).toMatchObject({ t: "sent" });
    await takeAndAck(cb, id);
    await ca.expect((s) => s.t === "rcpt" && (s as { id?: string }).id === id);
  }
  return { a, b, ca, cb, ad: ka.device, bd: kb.device };
}

describe("a connection's facts about its peer follow every change", () => {
  test("a cached peer then blocked: the next message is refused and never delivered; unblocked, it goes again", async () => {
    const { a, b, ca, cb, bd } = await warmPair("blk");
    await ok(cb, "block.add", { u: a });
    expect(await send(ca, "blk-after", b, [bd])).toMatchObject({ t: "err", e: "blocked" });
    await barrier(cb);
    expect(msgs(cb, (m) => m.id === "blk-after")).toEqual([]);
    await ok(cb, "block.remove", { u: a });
    expect(await send(ca, "blk-unblocked", b, [bd])).toMatchObject({ t: "sent" });
    await takeAndAck(cb, "blk-unblocked");
    ca.end();
    cb.end();
  });

  test("a device added to the peer: the old device list is refused, the new one fans out to it", async () => {
    const { b, ca, bd } = await warmPair("add");
    const kb2 = await srv.newDevice(b, "second");
    const r = await send(ca, "add-old-list", b, [bd]);
    expect(r).toMatchObject({ t: "err", e: "devices_mismatch" });
    expect((r.x as { missing: Record<string, number[]> }).missing[b]).toEqual([kb2.device]);
    expect(await send(ca, "add-new-list", b, [bd, kb2.device])).toMatchObject({ t: "sent" });
    const cb2 = await rawLogin(srv, kb2);
    await takeAndAck(cb2, "add-new-list");
    ca.end();
    cb2.end();
  });

  test("a device of the peer revoked: addressing it is refused, and no copy is queued for it", async () => {
    const [a, b] = [uniq("reva"), uniq("revb")];
    const ka = await srv.newDevice(a);
    const kb1 = await srv.newDevice(b);
    const kb2 = await srv.newDevice(b, "second");
    const ca = await rawLogin(srv, ka);
    const cb1 = await rawLogin(srv, kb1);
    for (const id of ["rev-w1", "rev-w2"]) expect(await send(ca, id, b, [kb1.device, kb2.device])).toMatchObject({ t: "sent" });
    await ok(cb1, "device.revoke", { d: kb2.device });
    const r = await send(ca, "rev-after", b, [kb1.device, kb2.device]);
    expect(r).toMatchObject({ t: "err", e: "devices_mismatch" });
    expect((r.x as { extra: Record<string, number[]> }).extra[b]).toEqual([kb2.device]);
    expect(await send(ca, "rev-one", b, [kb1.device])).toMatchObject({ t: "sent" });
    await cb1.expect((s) => s.t === "msg" && (s as MsgS).id === "rev-one");
    // The revoke dropped kb2's queue (the two warm-up copies, committed: it was offline), and nothing new went there.
    expect(queuedDevices(b).filter((d) => d === kb2.device)).toEqual([]);
    ca.end();
    cb1.end();
  });

  test("receipts: a sender blocked after its message was delivered gets no dlv; a device it links gets the next one", async () => {
    const { a, b, ca, cb, bd } = await warmPair("rc");
    // b knows a: its receipts to a are the rule's cacheable answer (a stranger's are rate-limited, never cached).
    await ok(cb, "contacts.add", { u: [a] });
    expect(await send(ca, "rc-known", b, [bd])).toMatchObject({ t: "sent" });
    await takeAndAck(cb, "rc-known");
    await ca.expect((s) => s.t === "rcpt" && (s as { id?: string }).id === "rc-known");
    // The sender links a second device: the receipt of its next message reaches both.
    const ka2 = await srv.newDevice(a, "second");
    const ca2 = await rawLogin(srv, ka2);
    expect(await send(ca, "rc-two", b, [bd], [ka2.device])).toMatchObject({ t: "sent" });
    await takeAndAck(cb, "rc-two");
    await ca.expect((s) => s.t === "rcpt" && (s as { id?: string }).id === "rc-two");
    const r2 = (await ca2.expect((s) => s.t === "rcpt" && (s as { id?: string }).id === "rc-two")) as { k: string };
    expect(r2.k).toBe("dlv");
    // A message delivered, then its recipient blocks the sender, then acks: no dlv (§6.11, blocked either way).
    expect(await send(ca, "rc-late", b, [bd], [ka2.device])).toMatchObject({ t: "sent" });
    const m = (await cb.expect((s) => s.t === "msg" && (s as MsgS).id === "rc-late")) as MsgS;
    await ok(cb, "block.add", { u: a });
    cb.send({ t: "ack", q: [m.q] });
    await barrier(cb);
    await barrier(ca);
    await barrier(ca2);
    expect(rcpts(ca, (r) => r.id === "rc-late")).toEqual([]);
    expect(rcpts(ca2, (r) => r.id === "rc-late")).toEqual([]);
    for (const c of [ca, ca2, cb]) c.end();
  });

  test("a reload of the presence module: its new rule applies to the next message of a warm conversation", async () => {
    const [a, b] = [uniq("rla"), uniq("closed")];
    const ka = await srv.newDevice(a);
    const kb = await srv.newDevice(b);
    const ca = await rawLogin(srv, ka);
    for (const id of ["rl-w1", "rl-w2"]) expect(await send(ca, id, b, [kb.device])).toMatchObject({ t: "sent" });
    const dir = modulesDir;
    appendFileSync(
      join(dir, "presence", "index.ts"),
      `
// Appended by test/wire/peer-facts.test.ts at its reload: accounts named closed* accept no messages.
presence.version = "9.9.8";
{
  const start2 = presence.start;
  presence.start = (ctx) => start2(ctx).map((r) => "hook" in r && r.hook === "contact:check"
    ? { ...r, handle: (c) => { r.handle(c); if (c.kind === "msg" && c.to.startsWith("closed") && c.refuse === undefined) { c.refuse = "blocked"; c.m = "closed"; c.cacheable = true; } } }
    : r);
}
`,
    );
    srv.proc.kill("SIGHUP");
    await moduleLoaded(srv, "presence", "9.9.8");
    expect(await send(ca, "rl-after", b, [kb.device])).toMatchObject({ t: "err", e: "blocked" });
    ca.end();
  });
});

describe("a receipt allowed because the pair knew each other", () => {
  let s2: TestServer;
  beforeAll(async () => {
    s2 = await startServer({ args: ["--presence-stranger-receipts", "1"] }); // one dlv a minute to a stranger
  });
  afterAll(() => s2?.cleanup());

  test("is limited as a stranger's again once the recipient removes the sender from its contacts", async () => {
    const [a, b] = [uniq("cra"), uniq("crb")];
    const ka = await s2.newDevice(a);
    const kb = await s2.newDevice(b);
    const ca = await rawLogin(s2, ka);
    const cb = await rawLogin(s2, kb);
    await ok(cb, "contacts.add", { u: [a] }); // before any message: the stranger allowance stays unused
    const round = async (id: string) => {
      ca.send(msgFrame(id, b, [kb.device]));
      await ca.expect((x) => x.t === "sent" && (x as { id?: string }).id === id);
      await takeAndAck(cb, id);
      await barrier(cb);
      await barrier(ca);
    };
    for (const id of ["cr-w1", "cr-w2"]) await round(id); // known: both receipts, the answer kept on cb
    expect(rcpts(ca, (r) => r.id === "cr-w1" || r.id === "cr-w2").length).toBe(2);
    await ok(cb, "contacts.remove", { u: [a] });
    for (const id of ["cr-s1", "cr-s2"]) await round(id);
    // A stranger again: the allowance of one, then limited.
    expect(rcpts(ca, (r) => r.id === "cr-s1" || r.id === "cr-s2").map((r) => r.id)).toEqual(["cr-s1"]);
    ca.end();
    cb.end();
  });
});

/** The devices of `account` with an item queued, one entry per item, from every shard file. */
function queuedDevices(account: string): number[] {
  const q = join(srv.dataDir, "queues");
  const out: number[] = [];
  for (const f of readdirSync(q).filter((x: string) => x.endsWith(".db"))) {
    const db = new Database(join(q, f), { readonly: true });
    try {
      for (const r of db.query("SELECT device FROM items WHERE account = ?").all(account) as { device: number }[]) out.push(r.device);
    } finally {
      db.close();
    }
  }
  return out;
}
