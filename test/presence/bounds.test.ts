/**
 * The presence rules under stress, over real sockets: the rules cache is
 * bounded and answers the same after eviction (read back from presence.db);
 * `read` receipts respect blocks; a crashing `contact:check` refuses the
 * message (fails closed) and nothing of it is queued.
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startServer, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, msgFrame, rawLogin, rcpts } from "../wire/util.ts";
import type { Err, MsgS } from "../../src/protocol/stanzas.ts";
import { iq, ok, queuedFor } from "./util.ts";

const CACHE = 2; // two generations of one entry: any two other accounts touched evict everything before them
let srv: TestServer; // rules cache of CACHE accounts
let crash: TestServer; // its presence.db loses a table mid-run (the rule's handler then throws)
beforeAll(async () => {
  [srv, crash] = await Promise.all([
    startServer({ args: ["--presence-rules-cache", String(CACHE), "--presence-coalesce-ms", "0", "--presence-grace-ms", "0"] }),
    startServer({ args: ["--presence-rules-cache", String(CACHE)] }),
  ]);
});
afterAll(() => {
  srv?.cleanup();
  crash?.cleanup();
});

let n = 0;
const uniq = (p: string) => `${p}${++n}`;

/** Touches the rules of `k` fresh accounts (contacts.list reads them), evicting every other entry. */
async function churn(s: TestServer, k = 3): Promise<void> {
  for (let i = 0; i < k; i++) {
    const c = await rawLogin(s, await s.newDevice(uniq("churn")));
    await ok(c, "contacts.list");
    c.end();
  }
}

describe("rules cache", () => {
  test("bounded at presence.rules_cache; blocks, contacts and privacy hold after eviction", async () => {
    const [a, b, c] = [uniq("ea"), uniq("eb"), uniq("ec")];
    const ka = await srv.newDevice(a);
    const ca = await rawLogin(srv, ka);
    const kc = await srv.newDevice(c);
    let cc = await rawLogin(srv, kc);
    const cb = await rawLogin(srv, await srv.newDevice(b));
    await ok(ca, "block.add", { u: b });
    await ok(ca, "contacts.add", { u: [c] });
    await ok(cc, "contacts.add", { u: [a] });
    await ok(ca, "privacy.set", { ls: "nobody", online: "contacts" });
    await ok(ca, "presence.state", { s: "active" });
    await churn(srv);
    expect(await srv.metric("switchboard_presence_rules_cached")).toBeLessThanOrEqual(CACHE);

    // Every rule of a, read back from the store.
    expect(await ok(ca, "contacts.list")).toEqual({ u: [c] });
    await churn(srv);
    expect(await ok(ca, "block.list")).toEqual({ u: [b] });
    await churn(srv);
    expect(await ok(ca, "privacy.get")).toEqual({ ls: "nobody", online: "contacts" });
    await churn(srv);
    cb.send(msgFrame("evicted-1", a, [ka.device]));
    expect(await cb.expect((s) => s.t === "err" || s.t === "sent")).toMatchObject({ t: "err", e: "blocked", id: "evicted-1" });
    await churn(srv);
    expect(await ok(cb, "presence", { u: a })).toEqual({});
    await churn(srv);
    // c (a contact, sharing back) sees online but, with ls nobody, no last seen.
    expect(await ok(cc, "presence", { u: a })).toEqual({ online: true });
    const sub = await ok<{ p: unknown[] }>(cc, "presence.sub", { u: [a] });
    expect(sub.p).toEqual([{ u: a, online: true }]);
    await churn(srv);
    // A change after eviction is still checked against the stored rules: c is removed, its subscription ends.
    await ok(ca, "contacts.remove", { u: [c] });
    expect(await cc.expect("pst")).toEqual({ t: "pst", u: a, end: "privacy" });
    expect(await srv.metric("switchboard_presence_rules_cached")).toBeLessThanOrEqual(CACHE);
    for (const x of [ca, cb, cc]) x.end();
  });
});

describe("read receipts and blocks", () => {
  test("a blocked account gets no read receipt, either way; the reader's other devices still do; after unblocking it does", async () => {
    const [a, b] = [uniq("ra"), uniq("rb")];
    const ka = await srv.newDevice(a);
    const ca = await rawLogin(srv, ka);
    const kb1 = await srv.newDevice(b);
    const kb2 = await srv.newDevice(b);
    const cb1 = await rawLogin(srv, kb1);
    const cb2 = await rawLogin(srv, kb2);
    const send = async (id: string): Promise<number> => {
      ca.send(msgFrame(id, b, [kb1.device, kb2.device]));
      const sent = (await ca.expect((s) => s.t === "sent" && s.id === id)) as { seq: number };
      const m = (await cb1.expect((s) => s.t === "msg" && s.id === id)) as MsgS;
      cb1.send({ t: "ack", q: [m.q] });
      return sent.seq;
    };
    const readsAt = (c: RawConn) => rcpts(c, (r) => r.k === "read").map((r) => r.seq);

    const s1 = await send("r1");
    await ok(cb1, "block.add", { u: a }); // the reader blocks the sender
    cb1.send({ t: "read", u: a, seq: s1 });
    await cb2.expect((s) => s.t === "rcpt" && s.k === "read" && s.seq === s1); // b's own other device: yes
    await ok(cb1, "block.remove", { u: a });
    const s2 = await send("r2");
    await ok(ca, "block.add", { u: b }); // the sender blocks the reader
    cb1.send({ t: "read", u: a, seq: s2 });
    await cb2.expect((s) => s.t === "rcpt" && s.k === "read" && s.seq === s2);
    await ok(ca, "block.remove", { u: b });
    const s3 = await send("r3");
    cb1.send({ t: "read", u: a, seq: s3 });
    await ca.expect((s) => s.t === "rcpt" && s.k === "read" && s.seq === s3); // unblocked: it goes
    await barrier(ca);
    expect(readsAt(ca)).toEqual([s3]);
    for (const x of [ca, cb1, cb2]) x.end();
  });
});

describe("contact:check fails closed", () => {
  test("when the rule's handler crashes, a blocked account's message is refused (internal, not sent) and nothing of it is queued", async () => {
    const [a, b] = [uniq("fa"), uniq("fb")];
    const ka = await crash.newDevice(a);
    const ca = await rawLogin(crash, ka);
    const cb = await rawLogin(crash, await crash.newDevice(b));
    await ok(ca, "block.add", { u: b });
    cb.send(msgFrame("before", a, [ka.device]));
    expect(await cb.expect((s) => s.t === "err" || s.t === "sent")).toMatchObject({ t: "err", e: "blocked", id: "before" });
    ca.end();
    await churn(crash); // a and b leave the cache: the next check must read presence.db
    // The rule can no longer read its store: every load of an account's rules throws inside contact:check.
    const db = new Database(join(crash.dataDir, "presence.db"));
    db.run("DROP TABLE talked");
    db.close();
    cb.send(msgFrame("during", a, [ka.device]));
    const e = (await cb.expect((s) => (s.t === "err" || s.t === "sent") && s.id === "during")) as Err;
    expect(e).toMatchObject({ t: "err", e: "internal", id: "during" });
    expect(e.m).toContain("could not check");
    await barrier(cb);
    expect(cb.received.filter((s) => s.t === "sent").length).toBe(0);
    expect(queuedFor(crash.dataDir, a).n).toBe(0);
    cb.end();
  });
});
