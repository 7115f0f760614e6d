/**
 * Identity over real sockets: login proofs that must fail (replayed, wrong
 * nonce, wrong server, forged, wrong device, wrong purpose), enrollment
 * codes, the device limit, linking a device, revocation, one connection per
 * device, and the failed-login rate limit per source address.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateDeviceKey, keyFromFile, keyToFile } from "../../src/client/keys.ts";
import { encodeFrame } from "../../src/protocol/codec.ts";
import type { MsgS } from "../../src/protocol/stanzas.ts";
import { startServer, waitFor, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, collect, dec, expectClosedWith, msgFrame, msgs, proof, randomNonce, randomSig, rawLogin } from "./util.ts";

/** Max 2 devices per account; failed-login limits out of the way (they get their own server below). */
let srv: TestServer;
/** 3 failed logins per source address per minute. */
let srvRL: TestServer;

beforeAll(async () => {
  [srv, srvRL] = await Promise.all([
    startServer({ args: ["--limits-max-devices", "2", "--auth-fail-per-ip", "1000", "--auth-fail-per-account", "1000"] }),
    startServer({ args: ["--auth-fail-per-ip", "3"] }),
  ]);
});
afterAll(() => {
  srv?.cleanup();
  srvRL?.cleanup();
});

/** The refusal of §4.5: `err code`, then `close reason`, then the socket ends. */
async function refused(c: RawConn, code: string, reason = "auth_failed"): Promise<void> {
  const e = await c.expect("err");
  expect(e.e).toBe(code);
  await expectClosedWith(c, reason);
  expect(c.received.some((s) => s.t === "ready")).toBe(false);
}

async function helloed(s: TestServer, transport: "tcp" | "tls" = "tcp") {
  const c = await s.raw(transport);
  const h = await c.hello();
  return { c, h };
}

describe("login proofs", () => {
  let kf: Awaited<ReturnType<TestServer["newDevice"]>>;
  let kf2: Awaited<ReturnType<TestServer["newDevice"]>>;
  beforeAll(async () => {
    kf = await srv.newDevice("ivan");
    kf2 = await srv.newDevice("ivan");
  });

  test("a valid proof logs in (control)", async () => {
    const { c, h } = await helloed(srv, "tls");
    c.send({ t: "auth", u: "ivan", d: kf.device, sig: proof(kf, "auth", h.sid, h.nonce, "ivan", kf.device) });
    expect(await c.expect("ready")).toMatchObject({ u: "ivan", d: kf.device });
    c.end();
  });

  test("a captured auth frame replayed on a new connection is refused", async () => {
    const { c: c1, h: h1 } = await helloed(srv);
    const captured = encodeFrame({ t: "auth", u: "ivan", d: kf.device, sig: proof(kf, "auth", h1.sid, h1.nonce, "ivan", kf.device) });
    c1.sendBytes(captured);
    await c1.expect("ready");
    c1.end();
    await c1.waitClosed();
    const { c: c2 } = await helloed(srv);
    c2.sendBytes(captured);
    await refused(c2, "auth_failed");
  });

  test("a proof signed for another nonce is refused", async () => {
    const { c, h } = await helloed(srv);
    c.send({ t: "auth", u: "ivan", d: kf.device, sig: proof(kf, "auth", h.sid, randomNonce(), "ivan", kf.device) });
    await refused(c, "auth_failed");
  });

  test("a proof for another server id is refused", async () => {
    const { c, h } = await helloed(srv);
    c.send({ t: "auth", u: "ivan", d: kf.device, sig: proof(kf, "auth", "sb-someotherserver", h.nonce, "ivan", kf.device) });
    await refused(c, "auth_failed");
  });

  test("a forged signature is refused", async () => {
    const { c } = await helloed(srv, "tls");
    c.send({ t: "auth", u: "ivan", d: kf.device, sig: randomSig() });
    await refused(c, "auth_failed");
  });

  test("a proof for the wrong device id is refused", async () => {
    // Device 1's key, claiming device 2 (with a transcript for 2 and for 1), and an unknown device.
    for (const [d, signedFor] of [[kf2.device, kf2.device], [kf2.device, kf.device], [99, 99]] as const) {
      const { c, h } = await helloed(srv);
      c.send({ t: "auth", u: "ivan", d, sig: proof(kf, "auth", h.sid, h.nonce, "ivan", signedFor) });
      await refused(c, "auth_failed");
    }
  });

  test("a proof for another purpose or account is refused; an unknown account gets the same answer", async () => {
    const cases: [string, (h: { sid: string; nonce: Uint8Array }) => Uint8Array][] = [
      ["ivan", (h) => proof(kf, "enroll", h.sid, h.nonce, "ivan", kf.device)],
      ["ivan", (h) => proof(kf, "link", h.sid, h.nonce, "ivan", 0)],
      ["ivan", (h) => proof(kf, "auth", h.sid, h.nonce, "ivanx", kf.device)],
      ["nosuchaccount", (h) => proof(kf, "auth", h.sid, h.nonce, "nosuchaccount", kf.device)],
    ];
    for (const [u, sign] of cases) {
      const { c, h } = await helloed(srv);
      c.send({ t: "auth", u, d: kf.device, sig: sign(h) });
      await refused(c, "auth_failed");
    }
  });
});

describe("enrollment", () => {
  test("a code works once; a used code or another account's code is bad_code; codes ignore case and dashes", async () => {
    const code = srv.addUser("erin");
    const k1 = generateDeviceKey();
    {
      const { c, h } = await helloed(srv);
      // Typed sloppily: upper case, spaces instead of dashes.
      c.send({ t: "enroll", u: "erin", code: code.toUpperCase().replace(/-/g, " "), pk: k1.publicKey, sig: proof(k1, "enroll", h.sid, h.nonce, "erin", 0), name: "phone" });
      expect(await c.expect("ready")).toMatchObject({ u: "erin", d: 1 });
      c.end();
    }
    {
      const k2 = generateDeviceKey();
      const { c, h } = await helloed(srv);
      c.send({ t: "enroll", u: "erin", code, pk: k2.publicKey, sig: proof(k2, "enroll", h.sid, h.nonce, "erin", 0) });
      await refused(c, "bad_code");
    }
    {
      const frank = srv.addUser("frank");
      const k3 = generateDeviceKey();
      const { c, h } = await helloed(srv);
      c.send({ t: "enroll", u: "erin", code: frank, pk: k3.publicKey, sig: proof(k3, "enroll", h.sid, h.nonce, "erin", 0) });
      await refused(c, "bad_code");
    }
    {
      // A proof signed with another key than pk is refused before the code is looked at.
      const fresh = srv.addUser("erin");
      const k4 = generateDeviceKey();
      const other = generateDeviceKey();
      const { c, h } = await helloed(srv);
      c.send({ t: "enroll", u: "erin", code: fresh, pk: k4.publicKey, sig: proof(other, "enroll", h.sid, h.nonce, "erin", 0) });
      await refused(c, "auth_failed");
      // ... and the code was not spent by that attempt.
      const { c: c2, h: h2 } = await helloed(srv);
      c2.send({ t: "enroll", u: "erin", code: fresh, pk: k4.publicKey, sig: proof(k4, "enroll", h2.sid, h2.nonce, "erin", 0) });
      expect(await c2.expect("ready")).toMatchObject({ u: "erin", d: 2 });
      c2.end();
    }
  });

  test("beyond max devices: too_many_devices, and the code stays usable after a revoke", async () => {
    const k1 = await srv.newDevice("gina");
    await srv.newDevice("gina"); // 2 = the limit on this server
    const code = srv.addUser("gina");
    const k3 = generateDeviceKey();
    {
      const { c, h } = await helloed(srv);
      c.send({ t: "enroll", u: "gina", code, pk: k3.publicKey, sig: proof(k3, "enroll", h.sid, h.nonce, "gina", 0) });
      await refused(c, "too_many_devices");
    }
    {
      // A key that is registered already: key_in_use (checked after the limit, so free a slot first).
      const g1 = await srv.client(k1);
      await g1.request("device.revoke", { d: 2 });
      const { c, h } = await helloed(srv);
      const k1key = keyFromFile(k1);
      c.send({ t: "enroll", u: "gina", code, pk: k1key.publicKey, sig: proof(k1key, "enroll", h.sid, h.nonce, "gina", 0) });
      await refused(c, "key_in_use");
      // The refused attempts did not spend the code.
      const { c: c2, h: h2 } = await helloed(srv);
      c2.send({ t: "enroll", u: "gina", code, pk: k3.publicKey, sig: proof(k3, "enroll", h2.sid, h2.nonce, "gina", 0) });
      expect(await c2.expect("ready")).toMatchObject({ u: "gina", d: 3 });
      c2.end();
      const list = await g1.request<{ devices: { d: number }[] }>("devices");
      expect(list.devices.map((d) => d.d)).toEqual([1, 3]);
      await g1.close();
    }
  });
});

describe("linking", () => {
  test("link -> linkcode -> link.approve -> ready; the new device receives messages", async () => {
    const kh1 = await srv.newDevice("hana");
    const approver = await srv.client(kh1);
    const newKey = generateDeviceKey();
    const { c, h } = await helloed(srv, "tls");
    c.send({ t: "link", u: "hana", pk: newKey.publicKey, sig: proof(newKey, "link", h.sid, h.nonce, "hana", 0), name: "laptop" });
    const lc = await c.expect("linkcode");
    expect(lc.code).toMatch(/^[A-Z0-9]{8}$/);
    expect(lc.exp).toBeGreaterThan(Date.now());
    // Waiting for approval is not being logged in.
    c.send(msgFrame("early", "hana", [1]));
    expect((await c.expect("err")).e).toBe("not_authenticated");
    await barrier(c); // pings are answered while waiting

    // A wrong code, and the right code from another account, are not_found.
    await expect(approver.request("link.approve", { code: "ZZZZZZZZ" })).rejects.toMatchObject({ code: "not_found" });
    const other = await srv.client(await srv.newDevice("outsider"));
    await expect(other.request("link.approve", { code: lc.code })).rejects.toMatchObject({ code: "not_found" });
    await other.close();

    // Typed in lower case with a dash: still the same code.
    const typed = `${lc.code.slice(0, 4)}-${lc.code.slice(4)}`.toLowerCase();
    const r = await approver.request<{ d: number }>("link.approve", { code: typed });
    expect(r.d).toBe(2);
    expect(await c.expect("ready")).toMatchObject({ u: "hana", d: 2 });
    const own = await approver.request<{ devices: { d: number; name: string }[] }>("devices");
    expect(own.devices.map((d) => [d.d, d.name])).toEqual([[1, "test"], [2, "laptop"]]);
    // Another account sees the ids, not the names.
    const stranger = await srv.client(await srv.newDevice("stranger"));
    const theirs = await stranger.request<{ u: string; devices: Record<string, unknown>[] }>("devices", { u: "hana" });
    expect(theirs.u).toBe("hana");
    expect(theirs.devices.map((d) => Object.keys(d).sort())).toEqual([["created", "d", "kv"], ["created", "d", "kv"]]);
    await stranger.close();

    // A sender that never saw hana's device list addresses both devices; the linked one gets its copy.
    const sender = await srv.client(await srv.newDevice("ivo"));
    const ch = collect(approver);
    const s = await sender.send("hana", (d) => new TextEncoder().encode(`for ${d}`));
    const m = (await c.expect("msg")) as MsgS;
    expect([m.id, m.seq, dec(m.p), m.from]).toEqual([s.id, s.seq, "for 2", "ivo"]);
    c.send({ t: "ack", q: [m.q] });
    await waitFor(() => ch.messages.length === 1, "the approver's copy");
    // The linked device logs in later with its own key.
    c.end();
    await c.waitClosed();
    const again = await rawLogin(srv, keyToFile(newKey, "hana", 2));
    await barrier(again);
    expect(msgs(again)).toEqual([]);
    again.end();
    await approver.close();
    await sender.close();
  });
  test("a link to an account that is full: the approver gets too_many_devices, the waiting device err + close auth_failed", async () => {
    const k1 = await srv.newDevice("pia");
    await srv.newDevice("pia"); // the limit (2) on this server
    const approver = await srv.client(k1);
    const key = generateDeviceKey();
    const { c, h } = await helloed(srv);
    c.send({ t: "link", u: "pia", pk: key.publicKey, sig: proof(key, "link", h.sid, h.nonce, "pia", 0) });
    const lc = await c.expect("linkcode");
    await expect(approver.request("link.approve", { code: lc.code })).rejects.toMatchObject({ code: "too_many_devices" });
    await refused(c, "too_many_devices");
    // The code is gone with its request.
    await expect(approver.request("link.approve", { code: lc.code })).rejects.toMatchObject({ code: "not_found" });
    await approver.close();
  });
});

describe("revocation and replacement", () => {
  test("device.revoke closes the device with `revoked` and its key is refused afterwards", async () => {
    const kj1 = await srv.newDevice("jack");
    const kj2 = await srv.newDevice("jack");
    const revokedBefore = await srv.metric("switchboard_closes_total", '{reason="revoked"}');
    const j1 = await srv.client(kj1);
    const j2 = await rawLogin(srv, kj2, "tls");
    await expect(j1.request("device.revoke", { d: 7 })).rejects.toMatchObject({ code: "unknown_device" });
    await j1.request("device.revoke", { d: 2 });
    await expectClosedWith(j2, "revoked");
    expect(await srv.metric("switchboard_closes_total", '{reason="revoked"}')).toBe(revokedBefore + 1);
    const again = await srv.raw();
    const h = await again.hello();
    again.send({ t: "auth", u: "jack", d: 2, sig: proof(kj2, "auth", h.sid, h.nonce, "jack", 2) });
    await refused(again, "auth_failed");
    // The SDK treats `revoked` as final.
    const kj3 = await srv.newDevice("jack");
    const j3 = await srv.client(kj3);
    const c3 = collect(j3);
    await j1.request("device.revoke", { d: kj3.device });
    await waitFor(() => c3.closes.length === 1, "j3 closed");
    expect(c3.closes[0]).toMatchObject({ reason: "revoked", willReconnect: false });
    // Senders now address jack's remaining device only.
    const kk = await srv.newDevice("kate");
    const k = await rawLogin(srv, kk);
    k.send(msgFrame("r1", "jack", [1, 2]));
    expect(await k.expect("err")).toMatchObject({ e: "devices_mismatch", id: "r1", x: { missing: {}, extra: { jack: [2] } } });
    k.end();
    await j1.close();
  });

  test("a device may revoke itself: it is closed with `revoked`", async () => {
    const k1 = await srv.newDevice("quin");
    const c = await rawLogin(srv, k1);
    c.send({ t: "iq", id: 5, op: "device.revoke", a: { d: k1.device } });
    await expectClosedWith(c, "revoked");
    const again = await srv.raw();
    const h = await again.hello();
    again.send({ t: "auth", u: "quin", d: k1.device, sig: proof(k1, "auth", h.sid, h.nonce, "quin", k1.device) });
    await refused(again, "auth_failed");
  });

  test("a second login of the same device closes the first with `replaced`", async () => {
    const kl = await srv.newDevice("lena");
    const first = await rawLogin(srv, kl);
    const second = await rawLogin(srv, kl, "tls");
    await expectClosedWith(first, "replaced");
    // The second connection is the device now: it gets the device's messages.
    const sender = await rawLogin(srv, await srv.newDevice("mona"));
    sender.send(msgFrame("to-lena", "lena", [1]));
    await sender.expect("sent");
    const m = (await second.expect("msg")) as MsgS;
    expect(m.id).toBe("to-lena");
    expect(msgs(first)).toEqual([]);
    sender.end();
    second.end();
  });
});

test("failed logins from one address are rate limited, even with a valid proof afterwards", async () => {
  const kf = await srvRL.newDevice("nina");
  const limitedBefore = await srvRL.metric("switchboard_logins_total", '{result="rate_limited"}');
  for (let i = 0; i < 3; i++) {
    const { c } = await helloed(srvRL);
    c.send({ t: "auth", u: "nina", d: kf.device, sig: randomSig() });
    await refused(c, "auth_failed");
  }
  const { c, h } = await helloed(srvRL, "tls");
  c.send({ t: "auth", u: "nina", d: kf.device, sig: proof(kf, "auth", h.sid, h.nonce, "nina", kf.device) });
  const e = await c.expect("err");
  expect(e.e).toBe("rate_limited");
  const retry = (e.x as { retry_ms: number }).retry_ms;
  expect(retry).toBeGreaterThan(0);
  expect(retry).toBeLessThanOrEqual(60_000);
  const cl = await expectClosedWith(c, "rate_limited");
  expect(cl.ra).toBe(retry);
  // Every way in is refused unchecked while limited, for any account from this address.
  const k2 = generateDeviceKey();
  const code = srvRL.addUser("olga");
  const { c: c2, h: h2 } = await helloed(srvRL);
  c2.send({ t: "enroll", u: "olga", code, pk: k2.publicKey, sig: proof(k2, "enroll", h2.sid, h2.nonce, "olga", 0) });
  await refused(c2, "rate_limited", "rate_limited");
  expect(await srvRL.metric("switchboard_logins_total", '{result="rate_limited"}')).toBe(limitedBefore + 2);
});
