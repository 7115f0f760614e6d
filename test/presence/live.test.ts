/**
 * Online state, leased subscriptions, grace and coalescing, typing, over real
 * sockets, with short configured durations (and no assertion on how long
 * anything took: waits are bounds, and "nothing was sent" is checked after a
 * ping barrier once the configured time has certainly passed).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { TYPING_TTL_MS } from "../../src/client/presence.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, rawLogin } from "../wire/util.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { PresenceView } from "../../src/client/presence.ts";
import { ChangeCounters, iq, ok, psts } from "./util.ts";

const GRACE_LONG = 5000;
const COALESCE = 4000;
let quick: TestServer; // grace 300 ms, no coalescing, long leases
let leases: TestServer; // leases of 400 ms, 3 strangers a minute
let slow: TestServer; // grace of GRACE_LONG
let merged: TestServer; // no grace, one frame per account per COALESCE
beforeAll(async () => {
  const common = ["--presence-stranger-rate", "1000", "--presence-max-subs", "4"];
  [quick, leases, slow, merged] = await Promise.all([
    startServer({ args: [...common, "--presence-grace-ms", "300", "--presence-coalesce-ms", "0"] }),
    startServer({ args: ["--presence-stranger-rate", "3", "--presence-grace-ms", "0", "--presence-coalesce-ms", "0", "--presence-lease-ms", "400"] }),
    startServer({ args: [...common, "--presence-grace-ms", String(GRACE_LONG), "--presence-coalesce-ms", "0"] }),
    startServer({ args: [...common, "--presence-grace-ms", "0", "--presence-coalesce-ms", String(COALESCE)] }),
  ]);
});
afterAll(() => {
  for (const s of [quick, leases, slow, merged]) s?.cleanup();
});

let n = 0;
const uniq = (p: string) => `${p}${++n}`;

/** Two accounts that are each other's contacts, each with one device logged in. */
async function pair(srv: TestServer): Promise<{ a: string; b: string; ca: RawConn; cb: RawConn; kb: KeyFile }> {
  const [a, b] = [uniq("a"), uniq("b")];
  const ca = await rawLogin(srv, await srv.newDevice(a));
  const kb = await srv.newDevice(b);
  const cb = await rawLogin(srv, kb);
  await ok(ca, "contacts.add", { u: [b] });
  await ok(cb, "contacts.add", { u: [a] });
  return { a, b, ca, cb, kb };
}

describe("online means in use", () => {
  test("connected is not online; active is; idle goes offline after the grace with a minute-granular last seen", async () => {
    const { b, ca, cb } = await pair(quick);
    const sub = await ok<{ lease: number; p: unknown[]; no: string[] }>(ca, "presence.sub", { u: [b] });
    expect(sub).toEqual({ lease: 60000, p: [{ u: b, online: false }], no: [] }); // connected, never active: no last seen yet
    await ok(cb, "presence.state", { s: "active" });
    expect(await ca.expect("pst")).toEqual({ t: "pst", u: b, online: true });
    const before = Date.now();
    await ok(cb, "presence.state", { s: "idle" });
    const off = await ca.expect("pst");
    expect(off.online).toBe(false);
    expect(off.ls! % 60_000).toBe(0);
    expect(off.ls!).toBeLessThanOrEqual(before);
    expect(off.ls!).toBeGreaterThan(before - 120_000);
    expect(await ok(ca, "presence", { u: b })).toEqual({ online: false, ls: off.ls });
    ca.end();
    cb.end();
  });

  test("bad presence.state and presence.sub arguments are bad_field, unknown_user or too_many_subscriptions; a non-receiving session has no state", async () => {
    const { a, ca, kb } = await pair(quick);
    for (const s of [undefined, "away", 1, "ACTIVE"]) {
      const r = await iq(ca, "presence.state", s === undefined ? {} : { s });
      expect({ s, e: r.e }).toEqual({ s, e: "bad_field" });
      expect(r.m).toMatch(/active or idle/);
    }
    // Five accounts a may watch (each other's contacts): invisible ones are answered in `no` and count for nothing.
    const others = Array.from({ length: 5 }, () => uniq("o"));
    for (const o of others) {
      const c = await rawLogin(quick, await quick.newDevice(o));
      await ok(c, "contacts.add", { u: [a] });
      c.end();
    }
    await ok(ca, "contacts.add", { u: others });
    const bad: [unknown, string][] = [[undefined, "bad_field"], [[], "bad_field"], [["Nope"], "bad_field"], [[1], "bad_field"], [["missing1"], "unknown_user"], [others, "bad_field"]];
    for (const [u, code] of bad) expect({ u, e: (await iq(ca, "presence.sub", u === undefined ? {} : { u })).e }).toEqual({ u, e: code });
    await ok(ca, "presence.sub", { u: others.slice(0, 3) });
    const over = await iq(ca, "presence.sub", { u: others.slice(3, 5) });
    expect(over).toMatchObject({ ok: false, e: "too_many_subscriptions" });
    await ok(ca, "presence.sub", { u: others.slice(0, 3) }); // renewing is not more
    await ok(ca, "presence.unsub", { u: [others[0]] });
    await ok(ca, "presence.sub", { u: [others[3]] });
    // A non-receiving session (a CLI one-shot) cannot make its device online.
    const rx = await quick.raw();
    const h = await rx.hello();
    const { keyFromFile, signProof } = await import("../../src/client/keys.ts");
    const { proofTranscript } = await import("../../src/protocol/auth.ts");
    rx.send({ t: "auth", u: kb.account, d: kb.device, rx: false, sig: signProof(keyFromFile(kb), proofTranscript("auth", h.sid, h.nonce, kb.account, kb.device)) });
    await rx.expect("ready");
    expect(await iq(rx, "presence.state", { s: "active" })).toMatchObject({ ok: false, e: "forbidden" });
    ca.end();
    rx.end();
  });

  test("subscribing to strangers is rate-limited (stranger_rate); acquaintances are not", async () => {
    const quick = leases;
    const v = uniq("v");
    const cv = await rawLogin(quick, await quick.newDevice(v));
    await ok(cv, "privacy.set", { ls: "everyone", online: "everyone" });
    const strangers = Array.from({ length: 4 }, () => uniq("s"));
    for (const s of strangers) quick.addUser(s);
    await ok(cv, "presence.sub", { u: strangers.slice(0, 3) });
    const r = await iq(cv, "presence.sub", { u: [strangers[3]] });
    expect(r).toMatchObject({ ok: false, e: "rate_limited" });
    expect((r.x as { retry_ms: number }).retry_ms).toBeGreaterThan(0);
    expect(await iq(cv, "presence", { u: strangers[3]! })).toMatchObject({ ok: false, e: "rate_limited" });
    // Someone who has v as a contact is no stranger to it.
    const k = uniq("k");
    const ck = await rawLogin(quick, await quick.newDevice(k));
    await ok(ck, "contacts.add", { u: [v] });
    await ok(cv, "presence.unsub", { u: [strangers[0]] });
    expect(await ok(cv, "presence.sub", { u: [k] })).toMatchObject({ p: [{ u: k }] });
    cv.end();
    ck.end();
  });
});

describe("leases, grace, coalescing", () => {
  test("a subscription not renewed ends with end: lease; a renewed one does not", async () => {
    const { b, ca, cb } = await pair(leases);
    await ok(ca, "presence.sub", { u: [b] });
    expect(await ca.expect("pst")).toEqual({ t: "pst", u: b, end: "lease" });
    await ok(cb, "presence.state", { s: "active" });
    await barrier(ca);
    expect(psts(ca, b).length).toBe(1); // no longer subscribed: nothing about b
    ca.end();
    cb.end();
  });

  test("a device that reconnects within the grace emits nothing: no offline, no online", async () => {
    const { b, ca, cb, kb } = await pair(slow);
    await ok(cb, "presence.state", { s: "active" });
    await ok(ca, "presence.sub", { u: [b] });
    const t0 = Date.now();
    cb.end();
    await cb.waitClosed();
    const cb2 = await rawLogin(slow, kb);
    await ok(cb2, "presence.state", { s: "active" });
    const reconnected = Date.now() - t0;
    if (reconnected >= GRACE_LONG) throw new Error(`the reconnect took ${reconnected} ms, longer than the ${GRACE_LONG} ms grace: this machine is too loaded for this test`);
    await Bun.sleep(GRACE_LONG + 500); // past the grace, had it not been cancelled
    await barrier(ca);
    expect(psts(ca, b)).toEqual([]);
    expect(await ok(ca, "presence", { u: b })).toEqual({ online: true });
    // The last disconnect, for good: announced once the grace is over.
    cb2.end();
    const off = await ca.expect("pst", GRACE_LONG * 3);
    expect(off).toMatchObject({ u: b, online: false });
    ca.end();
  }, 30_000);

  test("changes within coalesce_ms go out as one frame with the final state; none when it ends where it began", async () => {
    const { b, ca, cb } = await pair(merged);
    await ok(ca, "presence.sub", { u: [b] });
    await ok(cb, "presence.state", { s: "active" });
    expect(await ca.expect("pst")).toMatchObject({ u: b, online: true }); // the first change goes at once
    const t0 = Date.now();
    await ok(cb, "presence.state", { s: "idle" }); // offline at the next tick (no grace) ...
    await waitFor(async () => (await merged.metric("switchboard_presence_changes_total")) >= 2, "the offline change");
    await ok(cb, "presence.state", { s: "active" }); // ... and back, inside the window
    if (Date.now() - t0 >= COALESCE) throw new Error(`the three steps took longer than the ${COALESCE} ms window: this machine is too loaded for this test`);
    await Bun.sleep(COALESCE + 500);
    await barrier(ca);
    expect(psts(ca, b).length).toBe(1); // offline and online merged into "online", which was already sent
    ca.end();
    cb.end();
  }, 30_000);
});

describe("policy changes end what they no longer allow", () => {
  test("privacy nobody, a removed contact, a block, and the watcher's own policy (reciprocity) each end the subscription", async () => {
    const cases: [string, (ca: RawConn, cb: RawConn, a: string, b: string) => Promise<unknown>][] = [
      ["b hides both fields", (_ca, cb) => ok(cb, "privacy.set", { ls: "nobody", online: "nobody" })],
      ["b removes a from its contacts", (_ca, cb, a) => ok(cb, "contacts.remove", { u: [a] })],
      ["b blocks a", (_ca, cb, a) => ok(cb, "block.add", { u: a })],
      ["a blocks b", (ca, _cb, _a, b) => ok(ca, "block.add", { u: b })],
      ["a hides its own (who hides theirs sees no one's)", (ca) => ok(ca, "privacy.set", { ls: "nobody", online: "nobody" })],
    ];
    for (const [what, change] of cases) {
      const { a, b, ca, cb } = await pair(quick);
      await ok(cb, "presence.state", { s: "active" });
      expect(await ok(ca, "presence.sub", { u: [b] })).toMatchObject({ p: [{ u: b, online: true }] });
      await change(ca, cb, a, b);
      const end = await ca.expect("pst");
      expect({ what, end }).toEqual({ what, end: { t: "pst", u: b, end: "privacy" } });
      expect({ what, again: await ok(ca, "presence.sub", { u: [b] }) }).toEqual({ what, again: { lease: 60000, p: [], no: [b] } });
      // Nothing more about b, whatever b does.
      await ok(cb, "presence.state", { s: "idle" });
      await Bun.sleep(400);
      await barrier(ca);
      expect({ what, n: psts(ca, b).length }).toEqual({ what, n: 1 });
      ca.end();
      cb.end();
    }
  }, 30_000);

  test("online hidden, last seen shown: a login tells the watcher nothing; the logout moves last seen", async () => {
    const { b, ca, cb } = await pair(quick);
    await ok(cb, "privacy.set", { online: "nobody" });
    await ok(ca, "privacy.set", { online: "nobody" });
    expect(await ok(ca, "presence.sub", { u: [b] })).toEqual({ lease: 60000, p: [{ u: b }], no: [] });
    await ok(cb, "presence.state", { s: "active" });
    await barrier(cb);
    await Bun.sleep(400);
    await barrier(ca);
    expect(psts(ca, b)).toEqual([]);
    await ok(cb, "presence.state", { s: "idle" });
    const f = await ca.expect("pst");
    expect(Object.keys(f).sort()).toEqual(["ls", "t", "u"]);
    ca.end();
    cb.end();
  });
});

describe("typing and last seen touch SQLite only as documented", () => {
  test("typing causes no SQLite write in any file; it reaches acquainted devices only", async () => {
    const { a, b, ca, cb } = await pair(quick);
    const stranger = uniq("x");
    const cx = await rawLogin(quick, await quick.newDevice(stranger));
    await barrier(ca);
    const files = new ChangeCounters(quick.dataDir);
    try {
      expect(files.files().some((f) => f.endsWith("presence.db"))).toBe(true);
      const before = files.read();
      for (let i = 0; i < 10; i++) {
        ca.send({ t: "pres", to: b, s: i % 2 ? "paused" : "typing" });
        cx.send({ t: "pres", to: b, s: "typing" });
      }
      await barrier(ca);
      await barrier(cx);
      await barrier(cb);
      expect(files.read()).toEqual(before);
    } finally {
      files.close();
    }
    const got = cb.received.filter((s) => s.t === "pres");
    expect(got.length).toBe(10);
    expect(got.every((s) => (s as { u: string }).u === a)).toBe(true);
    for (const c of [ca, cb, cx]) c.end();
  });

  test("last seen is not written on connect or on becoming active; it is written when the account goes offline", async () => {
    const { b, ca, kb } = await pair(quick);
    const files = new ChangeCounters(quick.dataDir);
    const presenceDb = files.files().find((f) => f.endsWith("presence.db"))!;
    try {
      const v0 = files.read()[presenceDb];
      const cb = await rawLogin(quick, kb);
      await ok(cb, "presence.state", { s: "active" });
      await ok(cb, "presence.state", { s: "idle" });
      await ok(cb, "presence.state", { s: "active" });
      expect(files.read()[presenceDb]).toBe(v0!);
      await ok(ca, "presence.sub", { u: [b] });
      cb.end();
      await ca.expect((s) => s.t === "pst" && s.online === false);
      await waitFor(() => files.read()[presenceDb] !== v0, "the last-seen write at the last disconnect");
    } finally {
      files.close();
    }
    ca.end();
  });
});

describe("last seen while online", () => {
  test("written while online (every presence.last_seen_write seconds), so it survives a kill -9", async () => {
    const srv = await startServer({ args: ["--presence-last-seen-write", "1", "--presence-grace-ms", "0", "--presence-coalesce-ms", "0"] });
    try {
      const { a, b, ca, cb } = await pair(srv);
      await ok(cb, "presence.state", { s: "active" });
      const files = new ChangeCounters(srv.dataDir);
      const presenceDb = files.files().find((f) => f.endsWith("presence.db"))!;
      try {
        const v0 = files.read()[presenceDb]!;
        await waitFor(() => files.read()[presenceDb]! !== v0, "the periodic last-seen write of an online account", 30_000);
      } finally {
        files.close();
      }
      expect(await srv.metric("switchboard_presence_online_accounts")).toBe(1); // b is still online: not the disconnect's write
      // Written while online, so a crash keeps it: after kill -9 and a restart, b (offline now) shows a last seen.
      ca.end();
      cb.end();
      await srv.kill9();
      await srv.restart();
      const ca2 = await rawLogin(srv, await srv.newDevice(a));
      const r = await ok<{ ls?: number }>(ca2, "presence", { u: b });
      expect(typeof r.ls).toBe("number");
      expect(r.ls! % 60_000).toBe(0);
      ca2.end();
    } finally {
      srv.cleanup();
    }
  }, 60_000);
});

describe("last seen written behind (presence.last_seen_flush_ms)", () => {
  /** b goes active then idle (no grace): the watcher a is told offline with b's last seen, which is returned. */
  async function goOffline(ca: RawConn, cb: RawConn, b: string): Promise<number> {
    await ok(ca, "presence.sub", { u: [b] }); // the reply carries the state now: no frame
    await ok(cb, "presence.state", { s: "active" });
    await ca.expect((s) => s.t === "pst" && s.online === true);
    await ok(cb, "presence.state", { s: "idle" });
    const off = (await ca.expect((s) => s.t === "pst" && s.online === false)) as { ls?: number };
    expect(typeof off.ls).toBe("number");
    return off.ls!;
  }

  test("held in memory (watchers get it), written at a clean stop; a kill -9 before the flush loses only the held value", async () => {
    // An interval no test waits out: nothing is written but by the stop.
    const args = ["--presence-last-seen-flush-ms", "60000", "--presence-grace-ms", "0", "--presence-coalesce-ms", "0"];
    const srv = await startServer({ args });
    try {
      const { a, b, ca, cb } = await pair(srv);
      const files = new ChangeCounters(srv.dataDir, (f) => f === "presence.db");
      let v0: number;
      let ls: number;
      try {
        v0 = files.read()[files.files()[0]!]!;
        ls = await goOffline(ca, cb, b);
        // Answered from memory: with the subscription gone b's live entry is released, and a query still shows it.
        await ok(ca, "presence.unsub", { u: [b] });
        expect((await ok<{ ls?: number }>(ca, "presence", { u: b })).ls).toBe(ls);
        await barrier(ca);
        expect(files.read()[files.files()[0]!]).toBe(v0); // held: not written yet
      } finally {
        files.close();
      }
      ca.end();
      cb.end();
      expect(await srv.stop()).toBe(0);
      await srv.restart();
      const ca2 = await rawLogin(srv, await srv.newDevice(a));
      expect((await ok<{ ls?: number }>(ca2, "presence", { u: b })).ls).toBe(ls); // the stop wrote it
      // Now a crash: b comes and goes again, held; kill -9 before the flush. What is lost is that value only: b
      // shows the last seen written before (the stop's), never none and never a later one.
      const cb2 = await rawLogin(srv, (await srv.newDevice(b)));
      const ls2 = await goOffline(ca2, cb2, b);
      expect(ls2).toBeGreaterThanOrEqual(ls);
      ca2.end();
      cb2.end();
      await srv.kill9();
      await srv.restart();
      const ca3 = await rawLogin(srv, await srv.newDevice(a));
      expect((await ok<{ ls?: number }>(ca3, "presence", { u: b })).ls).toBe(ls);
      ca3.end();
    } finally {
      srv.cleanup();
    }
  }, 60_000);

  test("accounts gone offline are written by the next flush, and survive a kill -9 after it", async () => {
    const srv = await startServer({ args: ["--presence-last-seen-flush-ms", "200", "--presence-grace-ms", "0", "--presence-coalesce-ms", "0"] });
    try {
      const watcher = uniq("w");
      const cw = await rawLogin(srv, await srv.newDevice(watcher));
      const names = [uniq("m"), uniq("m"), uniq("m"), uniq("m"), uniq("m")];
      const conns = await Promise.all(names.map(async (n) => rawLogin(srv, await srv.newDevice(n))));
      await ok(cw, "contacts.add", { u: names });
      for (const c of conns) await ok(c, "contacts.add", { u: [watcher] });
      for (const c of conns) await ok(c, "presence.state", { s: "active" });
      await barrier(cw);
      const files = new ChangeCounters(srv.dataDir, (f) => f === "presence.db");
      const db = files.files()[0]!;
      const lsOf = async (c: RawConn) => Promise.all(names.map(async (u) => (await ok<{ ls?: number }>(c, "presence", { u })).ls));
      let seen: (number | undefined)[];
      try {
        const v0 = files.read()[db]!;
        // All five leave at once: their values are held and go in the next flush's one transaction.
        for (const c of conns) c.end();
        await waitFor(async () => (await lsOf(cw)).every((ls) => ls !== undefined), "the five offline");
        seen = await lsOf(cw);
        await waitFor(() => files.read()[db] !== v0, "the flush");
      } finally {
        files.close();
      }
      cw.end();
      await srv.kill9();
      await srv.restart();
      const cw2 = await rawLogin(srv, await srv.newDevice(watcher));
      expect(await lsOf(cw2)).toEqual(seen); // written by the flush, so the kill -9 kept them
      cw2.end();
    } finally {
      srv.cleanup();
    }
  }, 60_000);
});

describe("SDK", () => {
  test("contacts, watch, presence events, re-watch after a reconnect, typing and its expiry, blocks", async () => {
    const [a, b] = [uniq("sa"), uniq("sb")];
    const ka = await quick.newDevice(a);
    const kb = await quick.newDevice(b);
    const events: PresenceView[] = [];
    const typing: { account: string; device: number; state: string; expired?: boolean }[] = [];
    const ca = await quick.client(ka, { setup: (c) => { c.on("presence", (v) => events.push(v)); c.on("typing", (t) => typing.push(t)); } });
    const cb = await quick.client(kb);
    await ca.addContacts([b]);
    await cb.addContacts([a]);
    expect(await ca.contacts()).toEqual([b]);
    expect(await ca.watch([b])).toEqual([{ account: b, online: false }]);
    await cb.setPresence("active");
    await waitFor(() => events.some((e) => e.online === true), "b online");
    ca.dropConnection(); // the SDK logs in again and watches b again by itself
    await cb.setPresence("idle");
    await waitFor(() => events.some((e) => e.online === false), "b offline, seen through the renewed watch");
    expect(ca.presenceView(b)).toMatchObject({ account: b, online: false });
    cb.typing(a);
    await waitFor(() => typing.length >= 1, "typing");
    expect(typing[0]).toEqual({ account: b, device: kb.device, state: "typing" });
    // Typing expires by itself: with no further notice, the SDK reports it paused (expired) after TYPING_TTL_MS.
    await waitFor(() => typing.length >= 2, "the typing notice to expire", TYPING_TTL_MS + 10_000);
    expect(typing[1]).toEqual({ account: b, device: kb.device, state: "paused", expired: true });
    await ca.unwatch([b]);
    expect(await ca.privacy()).toEqual({ ls: "contacts", online: "contacts" });
    await ca.block(b);
    expect(await ca.blocked()).toEqual([b]);
    await ca.unblock(b);
    await ca.close();
    await cb.close();
  }, 60_000);
});
