/**
 * Resumption tickets (docs/PROTOCOL.md §4.11) over real sockets: a ticket from a full login logs the
 * device in with `resume` sent in the same write as the hello; a captured resume replayed, a forged MAC or
 * ticket, an expired ticket, a ticket whose key rotated out, a revoked device's ticket are refused with
 * `err ticket_refused` and the connection still takes an Ed25519 `auth`; a disabled account's resume is
 * refused with account_disabled until it is enabled again; tickets survive kill -9 and a
 * restart, replays from before it do not; a resume reads no accounts.db, and a revoke, a deletion and a disable
 * still refuse it right after and after kill -9. The SDK reconnects with its ticket, and over TLS resumes the
 * TLS session too (Bun's isSessionReused).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import type { KeyFile } from "../../src/client/keys.ts";
import { resumeTranscript } from "../../src/protocol/auth.ts";
import { encodeFrame } from "../../src/protocol/codec.ts";
import type { HelloS, Ready } from "../../src/protocol/stanzas.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { expectClosedWith, proof } from "./util.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer({ args: ["--auth-fail-per-ip", "1000", "--auth-fail-per-account", "1000"] });
});
afterAll(() => srv?.cleanup());

type Tk = { tk: Uint8Array; tks: Uint8Array; tke: number; sid: string };

/** A full login asking for a ticket; returns the ticket of its `ready`. */
async function ticketed(kf: KeyFile): Promise<{ c: RawConn; t: Tk; ready: Ready }> {
  const c = await srv.raw();
  c.send({ t: "hello", v: [1], tk: true });
  const h = (await c.expect("hello")) as HelloS;
  c.send({ t: "auth", u: kf.account, d: kf.device, sig: proof(kf, "auth", h.sid, h.nonce, kf.account, kf.device) });
  const ready = (await c.expect("ready")) as Ready;
  expect(ready.tk?.length).toBe(16);
  expect(ready.tks?.length).toBe(32);
  expect(ready.tke).toBeGreaterThan(ready.ts);
  return { c, t: { tk: ready.tk!, tks: ready.tks!, tke: ready.tke!, sid: h.sid }, ready };
}

function resumeOf(kf: KeyFile, t: Tk, ts = Date.now()): Record<string, unknown> {
  const mac = new Uint8Array(createHmac("sha256", t.tks).update(resumeTranscript(t.sid, kf.account, kf.device, ts)).digest());
  return { t: "resume", u: kf.account, d: kf.device, tk: t.tk, ts, mac };
}

/** hello and resume in one write, as the SDK sends them: the answer is hello then ready, or hello then err. */
async function pipelined(frame: Uint8Array): Promise<{ c: RawConn; h: HelloS }> {
  const c = await srv.raw();
  const hello = encodeFrame({ t: "hello", v: [1], tk: true });
  const both = new Uint8Array(hello.length + frame.length);
  both.set(hello);
  both.set(frame, hello.length);
  c.sendBytes(both);
  return { c, h: (await c.expect("hello")) as HelloS };
}

/** Refused with ticket_refused (the text says why), and the same connection still logs in with the device key. */
async function refusedThenAuth(c: RawConn, h: HelloS, kf: KeyFile, why: string): Promise<void> {
  const e = await c.expect("err");
  expect(e.e).toBe("ticket_refused");
  expect(e.m).toContain(why);
  c.send({ t: "auth", u: kf.account, d: kf.device, sig: proof(kf, "auth", h.sid, h.nonce, kf.account, kf.device) });
  expect(await c.expect("ready")).toMatchObject({ u: kf.account, d: kf.device });
  c.end();
}

describe("resumption tickets", () => {
  let kf: KeyFile;
  beforeAll(async () => {
    kf = await srv.newDevice("tara");
  });

  test("no ticket unless the hello asks for one", async () => {
    const c = await srv.raw();
    await c.login(kf);
    expect(c.received.find((s) => s.t === "ready")).not.toHaveProperty("tk");
    c.end();
  });

  test("a ticket logs in once with resume in the hello's write; the captured frame replayed is refused", async () => {
    const before = await srv.metric("switchboard_logins_total", '{result="resumed"}');
    const { c: first, t } = await ticketed(kf);
    first.end();
    const frame = encodeFrame(resumeOf(kf, t));
    const { c } = await pipelined(frame);
    const r = (await c.expect("ready")) as Ready;
    expect(r).toMatchObject({ u: "tara", d: kf.device });
    // The ticket again (fresh, of the current key: Tickets.check), which the client keeps as it would a new one.
    expect({ tk: r.tk, tks: r.tks, tke: r.tke }).toEqual({ tk: t.tk, tks: t.tks, tke: t.tke });
    expect(await srv.metric("switchboard_logins_total", '{result="resumed"}')).toBe(before + 1);
    c.end();
    // The same bytes again, on a new connection: refused, and that connection still takes an auth.
    const again = await pipelined(frame);
    await refusedThenAuth(again.c, again.h, kf, "replay");
    // A fresh proof with the same ticket is fine: a ticket is reusable until it expires, each proof is not.
    const fresh = await pipelined(encodeFrame(resumeOf(kf, t)));
    expect(await fresh.c.expect("ready")).toMatchObject({ u: "tara" });
    fresh.c.end();
  });

  test("resume {rx: false} opens a non-receiving session beside the receiving one, which stays (§4.6)", async () => {
    const { c: receiving, t } = await ticketed(kf);
    const { c } = await pipelined(encodeFrame({ ...resumeOf(kf, t), rx: false }));
    expect(await c.expect("ready")).toMatchObject({ u: "tara", d: kf.device });
    c.send({ t: "ping", n: 5 });
    receiving.send({ t: "ping", n: 6 });
    expect((await receiving.expect("pong")).n).toBe(6); // not replaced
    expect((await c.expect("pong")).n).toBe(5);
    c.end();
    receiving.end();
  });

  test("a forged MAC, a forged ticket, another device's ticket and a ts far from the server's clock are refused", async () => {
    const kf2 = await srv.newDevice("tara");
    const { c: a, t } = await ticketed(kf);
    a.end();
    const bad = resumeOf(kf, t);
    (bad.mac as Uint8Array)[0]! ^= 1;
    let p = await pipelined(encodeFrame(bad));
    await refusedThenAuth(p.c, p.h, kf, "does not verify");
    const tk = new Uint8Array(t.tk);
    tk[15]! ^= 1; // the random part: the secret the server derives differs, so the MAC cannot match
    p = await pipelined(encodeFrame(resumeOf(kf, { ...t, tk })));
    await refusedThenAuth(p.c, p.h, kf, "does not verify");
    const other = resumeOf(kf2, t); // kf's ticket and secret, presented as device kf2
    p = await pipelined(encodeFrame(other));
    await refusedThenAuth(p.c, p.h, kf2, "does not verify");
    p = await pipelined(encodeFrame(resumeOf(kf, t, Date.now() - 60_000)));
    await refusedThenAuth(p.c, p.h, kf, "from the server's clock");
  });

  test("a revoked device's ticket is refused, and so is its auth", async () => {
    const k1 = await srv.newDevice("uma");
    const k2 = await srv.newDevice("uma");
    const { c: a, t } = await ticketed(k2);
    a.end();
    const other = await srv.client(k1);
    await other.request("device.revoke", { d: k2.device });
    await other.close();
    const { c, h } = await pipelined(encodeFrame(resumeOf(k2, t)));
    const e = await c.expect("err");
    expect(e).toMatchObject({ e: "ticket_refused" });
    c.send({ t: "auth", u: k2.account, d: k2.device, sig: proof(k2, "auth", h.sid, h.nonce, k2.account, k2.device) });
    expect((await c.expect("err")).e).toBe("auth_failed");
    await expectClosedWith(c, "auth_failed");
  });
});

describe("a disabled account's ticket", () => {
  const admin = async (op: string, name: string) => {
    const r = await fetch(`http://127.0.0.1:${srv.http}/admin/users/${name}/${op}`, { method: "POST" });
    expect(r.status).toBe(200);
  };

  test("disable takes effect at the next resume (account_disabled); enable lets the same ticket back in", async () => {
    const kf = await srv.newDevice("wes");
    const { c: a, t } = await ticketed(kf);
    a.end();
    await admin("disable", "wes");
    const ts = Date.now();
    const { c } = await pipelined(encodeFrame(resumeOf(kf, t, ts)));
    expect((await c.expect("err")).e).toBe("account_disabled");
    await expectClosedWith(c, "account_disabled");
    await admin("enable", "wes");
    // The flag is kept in memory beside the revokes (Directory.disabledLogin): the admin's enable clears it.
    // ts + 1: the refused resume's proof verified, so its ts counts as the device's last (within one millisecond a
    // second Date.now() would be a replay).
    const p = await pipelined(encodeFrame(resumeOf(kf, t, ts + 1)));
    expect(await p.c.expect("ready")).toMatchObject({ u: "wes", d: kf.device });
    p.c.end();
  });
});

describe("tickets across kill -9, restart and key rotation", () => {
  test("a ticket works after kill -9 and restart, a proof from before it does not; rotated out after two rotations", async () => {
    const kf = await srv.newDevice("vic");
    const { c: a, t } = await ticketed(kf);
    a.end();
    const before = encodeFrame(resumeOf(kf, t));
    await srv.kill9();
    // Restarted with a one-second lifetime: the key that made the ticket is older, so it is rotated at start
    // and becomes the previous key, still checked; one more rotation drops it.
    await srv.restart(["--auth-fail-per-ip", "1000", "--auth-fail-per-account", "1000", "--auth-ticket-lifetime", "1"]);
    let p = await pipelined(before);
    await refusedThenAuth(p.c, p.h, kf, "older than this server's start");
    p = await pipelined(encodeFrame(resumeOf(kf, t)));
    expect(await p.c.expect("ready")).toMatchObject({ u: "vic", d: kf.device });
    p.c.end();
    // The sweep rotates every second now: wait until the ticket's key is gone (not a timing assertion: a bound).
    await waitFor(async () => {
      const q = await pipelined(encodeFrame(resumeOf(kf, t)));
      const s = await q.c.expect((x) => x.t === "ready" || x.t === "err");
      q.c.end();
      return s.t === "err" && s.e === "ticket_refused" && s.m.includes("rotated out");
    }, "the ticket's key to rotate out");
    // A ticket issued now, with a one-second lifetime, expires.
    const { c: b, t: short } = await ticketed(kf);
    b.end();
    await waitFor(() => Date.now() > short.tke, "the short ticket's expiry");
    p = await pipelined(encodeFrame(resumeOf(kf, short)));
    const e = await p.c.expect("err");
    expect(e.e).toBe("ticket_refused");
    expect(e.m).toMatch(/expired|rotated out/); // both are true of it by now; either refuses it
    p.c.end();
    await srv.stop();
    await srv.restart(["--auth-fail-per-ip", "1000", "--auth-fail-per-account", "1000"]);
  });
});

describe("the SDK", () => {
  test("reconnects with its ticket over TCP and WebSocket; over TLS it resumes the TLS session as well", async () => {
    const kf = await srv.newDevice("wes");
    for (const transport of ["tcp", "tls", "ws"] as const) {
      const resumedTls = () => srv.metric("switchboard_tls_handshakes_total", '{resumed="true"}');
      const tls0 = await resumedTls();
      const c = await srv.client(kf, { transport });
      expect(c.lastLogin).toEqual({ kind: "auth", tlsResumed: false });
      let readies = 0;
      c.on("ready", () => readies++);
      c.dropConnection();
      await waitFor(() => readies === 1 && c.isReady, "the reconnect");
      expect(c.lastLogin).toEqual({ kind: "resume", tlsResumed: transport === "tls" });
      // And it works as a session: a request is answered.
      expect(await c.request("devices", { u: "wes" })).toBeDefined();
      c.dropConnection();
      await waitFor(() => readies === 2 && c.isReady, "the second reconnect");
      expect(c.lastLogin).toEqual({ kind: "resume", tlsResumed: transport === "tls" });
      // The server saw the same: two resumed TLS handshakes (its switchboard_tls_handshakes_total), none over TCP.
      expect(await resumedTls()).toBe(tls0 + (transport === "tls" ? 2 : 0));
      await c.close();
    }
  });

  test("tickets: false logs in with the device key every time", async () => {
    const kf = await srv.newDevice("xan");
    const c = await srv.client(kf, { tickets: false });
    let readies = 0;
    c.on("ready", () => readies++);
    c.dropConnection();
    await waitFor(() => readies === 1 && c.isReady, "the reconnect");
    expect(c.lastLogin?.kind).toBe("auth");
    await c.close();
  });
});

describe("a resume reads no accounts.db: revokes, deletions and disables are known in memory, after kill -9 too", () => {
  const admin = async (op: string, name: string) => {
    const r = await fetch(`http://127.0.0.1:${srv.http}/admin/users/${name}/${op}`, { method: "POST" });
    expect(r.status).toBe(200);
  };
  /** The answer to a pipelined resume with a fresh proof: ready, or the err's code and text. */
  const answer = async (kf: KeyFile, t: Tk): Promise<string> => {
    const { c } = await pipelined(encodeFrame(resumeOf(kf, t)));
    const s = await c.expect((x) => x.t === "ready" || x.t === "err");
    c.end();
    return s.t === "err" ? `${s.e}: ${s.m}` : s.t;
  };

  test("a revoked device's, a deleted account's and a disabled account's tickets are refused right after and after a restart; others pass", async () => {
    const [keep, gone] = [await srv.newDevice("rho"), await srv.newDevice("rho")];
    const deleted = await srv.newDevice("delia");
    const disabled = await srv.newDevice("dina");
    const fine = await srv.newDevice("finn");
    const t = new Map<KeyFile, Tk>();
    for (const kf of [keep, gone, deleted, disabled, fine]) {
      const { c, t: tk } = await ticketed(kf);
      c.end();
      t.set(kf, tk);
    }
    const other = await srv.client(keep);
    await other.request("device.revoke", { d: gone.device });
    await other.close();
    await admin("delete", "delia");
    await admin("disable", "dina");
    const expectAll = async () => {
      // The MAC verifies (the server made the ticket); what refuses it is the change since it was issued.
      expect(await answer(gone, t.get(gone)!)).toContain("ticket_refused: ticket refused: the device was revoked or its account deleted since the ticket was issued");
      expect(await answer(deleted, t.get(deleted)!)).toContain("ticket_refused: ticket refused: the device was revoked or its account deleted since the ticket was issued");
      expect(await answer(disabled, t.get(disabled)!)).toStartWith("account_disabled");
      expect(await answer(keep, t.get(keep)!)).toBe("ready");
      expect(await answer(fine, t.get(fine)!)).toBe("ready");
    };
    await expectAll();
    // After kill -9 the state is read from accounts.db again (Directory.watchLogins): the same answers.
    await srv.kill9();
    await srv.restart(["--auth-fail-per-ip", "1000", "--auth-fail-per-account", "1000"]);
    await expectAll();
    // Enabled again: the ticket from before the disable is taken (as before this change: a disable is no revoke).
    await admin("enable", "dina");
    expect(await answer(disabled, t.get(disabled)!)).toBe("ready");
  });
});
