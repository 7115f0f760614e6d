/**
 * Contacts, privacy and blocking over real sockets: every bad input of every
 * operation gets a clear error and changes nothing; a blocked account's
 * message is refused with `blocked` and nothing of it is queued (the shard
 * files are read); invitations and typing of a blocked account go nowhere;
 * receipts to a stranger are capped.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startServer, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, msgFrame, rawLogin } from "../wire/util.ts";
import type { Err, Rcpt } from "../../src/protocol/stanzas.ts";
import { iq, ok, queuedFor } from "./util.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer({ args: ["--presence-max-contacts", "3", "--presence-stranger-receipts", "2"] });
});
afterAll(() => srv?.cleanup());

let n = 0;
const uniq = (p: string) => `${p}${++n}`;
async function login(name: string): Promise<RawConn> {
  return rawLogin(srv, await srv.newDevice(name));
}

describe("contacts", () => {
  test("add, list, remove; every bad input is bad_field, unknown_user or too_many_contacts, and changes nothing", async () => {
    const [a, b, c, d, e] = [uniq("ca"), uniq("cb"), uniq("cc"), uniq("cd"), uniq("ce")];
    const ca = await login(a);
    for (const x of [b, c, d, e]) srv.addUser(x);
    expect(await ok(ca, "contacts.add", { u: [b, c] })).toEqual({ n: 2 });
    expect(await ok(ca, "contacts.add", { u: b })).toEqual({ n: 2 }); // one name, already there
    expect(await ok(ca, "contacts.list")).toEqual({ u: [b, c].sort() });
    const bad: [unknown, string, RegExp][] = [
      [undefined, "bad_field", /a\.u must be/],
      [[], "bad_field", /1\.\.256/],
      [[b, 7], "bad_field", /entries must be account names/],
      ["Bad Name", "bad_field", /account names/],
      [{ u: b }, "bad_field", /a\.u must be/],
      [Array.from({ length: 257 }, (_, i) => `x${i}`), "bad_field", /1\.\.256/],
      [[a], "bad_field", /your own account/],
      [["nosuchaccount"], "unknown_user", /nosuchaccount/],
      [[d, e], "too_many_contacts", /at most 3/],
    ];
    for (const [u, code, m] of bad) {
      const r = await iq(ca, "contacts.add", u === undefined ? {} : { u });
      expect({ u, ok: r.ok, e: r.e }).toEqual({ u, ok: false, e: code });
      expect(r.m).toMatch(m);
    }
    expect(await ok(ca, "contacts.list")).toEqual({ u: [b, c].sort() });
    expect(await ok(ca, "contacts.remove", { u: [b, "neverexisted"] })).toEqual({ n: 1 });
    expect((await iq(ca, "contacts.remove", { u: 5 })).e).toBe("bad_field");
    expect(await ok(ca, "contacts.list")).toEqual({ u: [c] });
    ca.end();
  });
});

describe("privacy", () => {
  test("defaults to contacts; set one field or both; bad values are bad_field and change nothing", async () => {
    const ca = await login(uniq("pa"));
    expect(await ok(ca, "privacy.get")).toEqual({ ls: "contacts", online: "contacts" });
    expect(await ok(ca, "privacy.set", { ls: "nobody" })).toEqual({ ls: "nobody", online: "contacts" });
    expect(await ok(ca, "privacy.set", { online: "everyone", ls: "contacts" })).toEqual({ ls: "contacts", online: "everyone" });
    for (const a of [{}, { ls: "friends" }, { online: 1 }, { ls: "contacts", online: "Everyone" }, { ls: null, online: ["nobody"] }]) {
      const r = await iq(ca, "privacy.set", a);
      expect({ a, ok: r.ok, e: r.e }).toEqual({ a, ok: false, e: "bad_field" });
      expect(r.m).toMatch(/everyone, contacts or nobody/);
    }
    expect(await ok(ca, "privacy.get")).toEqual({ ls: "contacts", online: "everyone" });
    ca.end();
  });
});

describe("blocking", () => {
  test("block.add/remove/list validate their argument", async () => {
    const a = uniq("ba");
    const ca = await login(a);
    const b = uniq("bb");
    srv.addUser(b);
    for (const [u, code] of [[undefined, "bad_field"], [[b], "bad_field"], [a, "bad_field"], ["nosuch", "unknown_user"], ["UP", "bad_field"]] as const) {
      const r = await iq(ca, "block.add", u === undefined ? {} : { u });
      expect({ u, e: r.e }).toEqual({ u, e: code });
    }
    expect((await iq(ca, "block.remove", { u: 3 })).e).toBe("bad_field");
    expect(await ok(ca, "block.list")).toEqual({ u: [] });
    await ok(ca, "block.add", { u: b });
    await ok(ca, "block.add", { u: b }); // twice: still one
    expect(await ok(ca, "block.list")).toEqual({ u: [b] });
    await ok(ca, "block.remove", { u: b });
    expect(await ok(ca, "block.list")).toEqual({ u: [] });
    ca.end();
  });

  test("a blocked account's message is refused with blocked, both ways; nothing of it is queued; unblocking lets it through", async () => {
    const [a, b, c] = [uniq("ma"), uniq("mb"), uniq("mc")];
    const kb = await srv.newDevice(b);
    const ca = await login(a);
    const cc = await login(c);
    let cb = await rawLogin(srv, kb);
    await ok(cb, "block.add", { u: a });
    cb.end();
    await cb.waitClosed();

    ca.send(msgFrame("blocked-1", b, [kb.device]));
    const e = (await ca.expect((s) => s.t === "err" || s.t === "sent")) as Err;
    expect(e).toMatchObject({ t: "err", e: "blocked", id: "blocked-1" });
    expect(e.m).toContain(`${b} does not accept messages from you`);
    // The other direction too: the blocker is told to unblock first.
    const kb2 = await srv.newDevice(b);
    const cb2 = await rawLogin(srv, kb2);
    cb2.send(msgFrame("from-blocker", a, [1], [kb.device]));
    expect(await cb2.expect("err")).toMatchObject({ e: "blocked", id: "from-blocker" });
    // A message from someone else goes into the same device queue and is committed before `sent`:
    // when it is, the shard file holds everything queued for bob's device, and nothing is from alice.
    cc.send(msgFrame("allowed-1", b, [kb.device, kb2.device]));
    expect(await cc.expect("sent")).toMatchObject({ id: "allowed-1" });
    const rows = queuedFor(srv.dataDir, b);
    expect(rows.fromAccounts.filter((x) => x === a)).toEqual([]);
    expect(rows.fromAccounts.filter((x) => x === c).length).toBe(2);
    cb = await rawLogin(srv, kb);
    await cb.expect((s) => s.t === "msg" && s.id === "allowed-1");
    await barrier(cb);
    expect(cb.received.filter((s) => s.t === "msg").map((s) => (s as { id: string }).id)).toEqual(["allowed-1"]);

    await ok(cb, "block.remove", { u: a });
    ca.send(msgFrame("after-unblock", b, [kb.device, kb2.device]));
    expect(await ca.expect("sent")).toMatchObject({ id: "after-unblock" });
    await cb.expect((s) => s.t === "msg" && s.id === "after-unblock");
    for (const x of [ca, cb, cb2, cc]) x.end();
  });

  test("a blocked account cannot put the blocker into a group, and its typing goes nowhere", async () => {
    const [a, b, c] = [uniq("ga"), uniq("gb"), uniq("gc")];
    const ca = await login(a);
    const cb = await login(b);
    srv.addUser(c);
    await ok(cb, "contacts.add", { u: [a] }); // acquainted: typing would go through without the block
    ca.send({ t: "pres", to: b, s: "typing" });
    await cb.expect("pres");
    await ok(cb, "block.add", { u: a });
    const created = await iq(ca, "group.create", { name: "trap", m: [b, c] });
    expect(created).toMatchObject({ ok: false, e: "blocked" });
    expect(created.m).toContain(b);
    const g = await ok<{ g: string }>(ca, "group.create", { name: "ok", m: [c] });
    const added = await iq(ca, "group.add", { g: g.g, m: [b] });
    expect(added).toMatchObject({ ok: false, e: "blocked" });
    expect((await ok(ca, "group.info", { g: g.g }) as { members: { u: string }[] }).members.map((x) => x.u).sort()).toEqual([a, c].sort());
    ca.send({ t: "pres", to: b, s: "typing" });
    await barrier(ca);
    await barrier(cb);
    expect(cb.received.filter((s) => s.t === "pres").length).toBe(1);
    expect(cb.received.filter((s) => s.t === "evt").length).toBe(0);
    ca.end();
    cb.end();
  });
});

describe("receipts towards strangers", () => {
  test("a stranger's messages get at most stranger_receipts dlv receipts a minute; a known sender gets all", async () => {
    const [a, b, k] = [uniq("ra"), uniq("rb"), uniq("rk")];
    const ca = await login(a);
    const ck = await login(k);
    const kb = await srv.newDevice(b);
    const cb = await rawLogin(srv, kb);
    await ok(cb, "contacts.add", { u: [k] });
    for (let i = 0; i < 6; i++) {
      ca.send(msgFrame(`s${i}`, b, [kb.device]));
      ck.send(msgFrame(`k${i}`, b, [kb.device]));
    }
    for (let i = 0; i < 6; i++) {
      await ca.expect((s) => s.t === "sent" && s.id === `s${i}`);
      await ck.expect((s) => s.t === "sent" && s.id === `k${i}`);
    }
    const got: number[] = [];
    while (got.length < 12) {
      const m = (await cb.expect("msg")) as { q: number };
      got.push(m.q);
    }
    cb.send({ t: "ack", q: got });
    await barrier(cb);
    await ck.expect((s) => s.t === "rcpt" && (s as Rcpt).id === "k5");
    await barrier(ca);
    await barrier(ck);
    const dlv = (c: RawConn) => c.received.filter((s) => s.t === "rcpt" && (s as Rcpt).k === "dlv").length;
    expect(dlv(ck)).toBe(6);
    expect(dlv(ca)).toBe(2);
    expect(await srv.metric("switchboard_presence_limited_total", '{kind="stranger_receipt"}')).toBe(4);
    for (const x of [ca, cb, ck]) x.end();
  });
});
