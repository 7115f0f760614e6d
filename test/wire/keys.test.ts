/**
 * The end-to-end key directory over real sockets (docs/PROTOCOL.md §5.4):
 * signatures checked on upload, bundles and one-time prekeys handed out each
 * once (also to fetches that arrive together), the signed prekey alone when
 * none are left, the low notice (queued, once per crossing), only the device
 * changing its own keys, key versions in `iq devices`, the per-account fetch
 * rate limit, revocation, and `kill -9`.
 *
 * Keys are made here with node:crypto, independently of the SDK, and the key
 * version is computed here from its definition.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { appendFileSync, cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KeyFile } from "../../src/client/keys.ts";
import { ServerError, type SwitchboardClient } from "../../src/client/client.ts";
import { encodeFrame } from "../../src/protocol/codec.ts";
import type { Evt, Res, ServerStanza } from "../../src/protocol/stanzas.ts";
import { KEYS_SCHEMA, SqliteKeyStore } from "../../src/modules/keys/store.ts";
import { openVersioned } from "../../src/store/schema.ts";
import { ROOT, startServer, type RawConn, type TestServer } from "../helpers/harness.ts";
import { barrier, moduleLoaded, rawLogin } from "./util.ts";

/** low_otk 3 and max_otk 20, so that both are reached with a handful of keys; no practical fetch limit. */
let srv: TestServer;
/** Three fetches at once, then one a minute. */
let srvRL: TestServer;
/** Killed with SIGKILL and restarted. */
let srvCrash: TestServer;

beforeAll(async () => {
  [srv, srvRL, srvCrash] = await Promise.all([
    startServer({ args: ["--keys-low-otk", "3", "--keys-max-otk", "20", "--keys-fetch-burst", "100000"] }),
    startServer({ args: ["--keys-fetch-burst", "3", "--keys-fetch-rate", "1"] }),
    startServer(),
  ]);
});
afterAll(() => {
  srv?.cleanup();
  srvRL?.cleanup();
  srvCrash?.cleanup();
});

// ---- keys, made the way a client makes them ---------------------------------

const raw = (k: KeyObject) => new Uint8Array(Buffer.from((k.export({ format: "jwk" }) as { x: string }).x, "base64url"));
const x25519 = () => raw(generateKeyPairSync("x25519").publicKey);

interface Identity {
  ik: Uint8Array;
  dh: Uint8Array;
  dhs: Uint8Array;
  sk: KeyObject;
  /** A signed prekey signed by this identity. */
  spk(id: number): { id: number; k: Uint8Array; s: Uint8Array };
}

function identity(): Identity {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const dh = x25519();
  return {
    ik: raw(publicKey),
    dh,
    dhs: new Uint8Array(sign(null, dh, privateKey)),
    sk: privateKey,
    spk(id) {
      const k = x25519();
      return { id, k, s: new Uint8Array(sign(null, k, privateKey)) };
    },
  };
}

/** `n` one-time prekeys with ids from `from`. */
const otks = (from: number, n: number): [number, Uint8Array][] => Array.from({ length: n }, (_, i) => [from + i, x25519()]);

/** The key version by its definition: the first 4 bytes of SHA-256(ik || dh), big-endian; 1 instead of 0. */
function kvOf(id: Identity): number {
  return createHash("sha256").update(id.ik).update(id.dh).digest().readUInt32BE(0) || 1;
}

const publishArgs = (id: Identity, spkId: number, otk?: [number, Uint8Array][]) => {
  const a: Record<string, unknown> = { ik: id.ik, dh: id.dh, dhs: id.dhs, spk: id.spk(spkId) };
  if (otk) a.otk = otk;
  return a;
};

const same = (a: Uint8Array | undefined, b: Uint8Array) => a !== undefined && Buffer.from(a).equals(Buffer.from(b));

interface BundleR {
  d: number;
  kv: number;
  ik: Uint8Array;
  dh: Uint8Array;
  dhs: Uint8Array;
  spk: { id: number; k: Uint8Array; s: Uint8Array };
  otk?: { id: number; k: Uint8Array };
}
interface FetchR {
  u: string;
  bundles: BundleR[];
  missing: number[];
}

/** The code a request was refused with. */
async function refusal(p: Promise<unknown>): Promise<ServerError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ServerError) return e;
    throw e;
  }
  throw new Error("the request succeeded; a refusal was expected");
}

const clients: SwitchboardClient[] = [];
async function connect(s: TestServer, kf: KeyFile): Promise<SwitchboardClient> {
  const c = await s.client(kf);
  clients.push(c);
  return c;
}
afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
});

let iqN = 1000;
/** An iq on a raw connection; resolves with its `res`. */
async function rawIq(c: RawConn, op: string, a: Record<string, unknown>): Promise<Res> {
  const id = iqN++;
  c.send({ t: "iq", id, op, a });
  return (await c.expect((s) => s.t === "res" && s.id === id)) as Res;
}

const evts = (c: RawConn) => c.received.filter((s: ServerStanza): s is Evt => s.t === "evt" && s.k === "keys");

// ---- tests -----------------------------------------------------------------------

describe("keys.publish", () => {
  test("signatures that do not verify against ik are refused with bad_signature, and nothing is stored", async () => {
    const [ann, bob] = await Promise.all([srv.newDevice("ann"), srv.newDevice("bob")]);
    const [a, b] = await Promise.all([connect(srv, ann), connect(srv, bob)]);
    const id = identity();
    const other = identity();

    // dhs made by another identity key.
    let e = await refusal(a.request("keys.publish", { ...publishArgs(id, 1), dhs: other.dhs }));
    expect(e.code).toBe("bad_signature");
    expect(e.message).toContain("dhs");
    // dhs right, but over another dh.
    e = await refusal(a.request("keys.publish", { ...publishArgs(id, 1), dh: other.dh }));
    expect(e.code).toBe("bad_signature");
    // The signed prekey signed by another key.
    e = await refusal(a.request("keys.publish", { ...publishArgs(id, 1), spk: other.spk(1) }));
    expect(e.code).toBe("bad_signature");
    expect(e.message).toContain("spk");
    // spk.s over another k.
    const spk = id.spk(1);
    e = await refusal(a.request("keys.publish", { ...publishArgs(id, 1), spk: { ...spk, k: x25519() } }));
    expect(e.code).toBe("bad_signature");
    // Malformed fields are bad_field.
    expect((await refusal(a.request("keys.publish", { ...publishArgs(id, 1), ik: id.ik.slice(1) }))).code).toBe("bad_field");
    expect((await refusal(a.request("keys.publish", { ...publishArgs(id, 1), spk: [1, spk.k, spk.s] }))).code).toBe("bad_field");
    expect((await refusal(a.request("keys.publish", publishArgs(id, 1, otks(1, 101))))).code).toBe("bad_field");

    // Nothing of it was stored.
    expect(await a.request("keys.count")).toMatchObject({ n: 0 });
    const own = await a.request("devices");
    expect(own.devices[0].kv).toBe(0);
    const f: FetchR = await b.request("keys.fetch", { u: "ann" });
    expect(f).toEqual({ u: "ann", bundles: [], missing: [ann.device] });

    // The same identity with correct signatures goes in (control).
    expect(await a.request("keys.publish", publishArgs(id, 1))).toEqual({ kv: kvOf(id), n: 0 });
  });
});

describe("keys.fetch", () => {
  test("publish and fetch round trip: the bundle is what was published, the key version is in iq devices", async () => {
    const [cal, dee] = await Promise.all([srv.newDevice("cal"), srv.newDevice("dee")]);
    const [c, d] = await Promise.all([connect(srv, cal), connect(srv, dee)]);
    const id = identity();
    const args = publishArgs(id, 7, otks(40, 3));
    expect(await c.request("keys.publish", args)).toEqual({ kv: kvOf(id), n: 3 });

    const devs = await d.request("devices", { u: "cal" });
    expect(devs.devices).toEqual([{ d: cal.device, created: expect.any(Number), kv: kvOf(id) }]);

    const f: FetchR = await d.request("keys.fetch", { u: "cal" });
    expect(f.u).toBe("cal");
    expect(f.missing).toEqual([]);
    expect(f.bundles).toHaveLength(1);
    const b = f.bundles[0]!;
    expect(b.d).toBe(cal.device);
    expect(b.kv).toBe(kvOf(id));
    expect(same(b.ik, id.ik) && same(b.dh, id.dh) && same(b.dhs, id.dhs)).toBe(true);
    const spk = args.spk as { id: number; k: Uint8Array; s: Uint8Array };
    expect(b.spk.id).toBe(7);
    expect(same(b.spk.k, spk.k) && same(b.spk.s, spk.s)).toBe(true);
    const sent = args.otk as [number, Uint8Array][];
    expect(b.otk!.id).toBe(40);
    expect(same(b.otk!.k, sent[0]![1])).toBe(true);
    // The one handed out is gone.
    expect(await c.request("keys.count")).toEqual({ n: 2, max: 20 });
    const again: FetchR = await d.request("keys.fetch", { u: "cal" });
    expect(again.bundles[0]!.otk!.id).toBe(41);
  });

  test("fetches that arrive together (each client's in one TCP write, the clients' writes back to back) never get the same one-time prekey", async () => {
    const [eli, ...fetchers] = await Promise.all([srv.newDevice("eli"), srv.newDevice("fin"), srv.newDevice("gil"), srv.newDevice("hana")]);
    const e = await connect(srv, eli);
    const stored = otks(1, 10);
    await e.request("keys.publish", publishArgs(identity(), 1, stored));
    const conns = await Promise.all(fetchers.map((kf) => rawLogin(srv, kf)));
    // 3 clients x 4 fetches = 12 fetches for 10 keys, all written before the server reads any.
    const ids: number[][] = [];
    for (const c of conns) {
      const mine = [iqN++, iqN++, iqN++, iqN++];
      ids.push(mine);
      const frames = mine.map((id) => encodeFrame({ t: "iq", id, op: "keys.fetch", a: { u: "eli" } }));
      expect(c.sendBytes(Buffer.concat(frames))).toBe(frames.reduce((n, f) => n + f.length, 0));
    }
    const answers = await Promise.all(conns.flatMap((c, i) => ids[i]!.map((id) => c.expect((s) => s.t === "res" && s.id === id) as Promise<Res>)));
    const bundles = answers.map((r) => {
      expect(r.ok).toBe(true);
      return (r.r as FetchR).bundles[0]!;
    });
    const got = bundles.filter((b) => b.otk !== undefined).map((b) => b.otk!.id);
    expect(got).toHaveLength(10);
    expect(new Set(got).size).toBe(10); // no key twice
    expect([...got].sort((x, y) => x - y)).toEqual(stored.map(([id]) => id));
    // Every key went out with the key it was stored with.
    for (const b of bundles) if (b.otk) expect(same(b.otk.k, stored.find(([id]) => id === b.otk!.id)![1])).toBe(true);
    expect(bundles.filter((b) => b.otk === undefined)).toHaveLength(2);
    expect(await e.request("keys.count")).toMatchObject({ n: 0 });
    for (const c of conns) c.end();
  });

  test("a device without one-time prekeys left still gets a bundle: its signed prekey alone", async () => {
    const [ida, jo] = await Promise.all([srv.newDevice("ida"), srv.newDevice("jo")]);
    const [i, j] = await Promise.all([connect(srv, ida), connect(srv, jo)]);
    const id = identity();
    await i.request("keys.publish", publishArgs(id, 3, otks(1, 1)));
    const first: FetchR = await j.request("keys.fetch", { u: "ida" });
    expect(first.bundles[0]!.otk?.id).toBe(1);
    for (let n = 0; n < 2; n++) {
      const f: FetchR = await j.request("keys.fetch", { u: "ida" });
      expect(f.missing).toEqual([]);
      expect(f.bundles).toHaveLength(1);
      const b = f.bundles[0]!;
      expect("otk" in b).toBe(false);
      expect(b.spk.id).toBe(3);
      expect(same(b.ik, id.ik)).toBe(true);
      expect(b.kv).toBe(kvOf(id));
    }
  });

  test("unknown and malformed accounts; a fetch of one's own account leaves out the caller; d restricts; missing lists devices without a bundle", async () => {
    const kay1 = await srv.newDevice("kay");
    const kay2 = await srv.newDevice("kay");
    const kay3 = await srv.newDevice("kay");
    const lou = await srv.newDevice("lou");
    const [k1, k3, l] = await Promise.all([connect(srv, kay1), connect(srv, kay3), connect(srv, lou)]);
    await k1.request("keys.publish", publishArgs(identity(), 1, otks(1, 5)));
    await k3.request("keys.publish", publishArgs(identity(), 1, otks(1, 5)));

    expect((await refusal(l.request("keys.fetch", { u: "nobody" }))).code).toBe("unknown_user");
    expect((await refusal(l.request("keys.fetch", { u: "Not A Name" }))).code).toBe("bad_field");
    expect((await refusal(l.request("keys.fetch", {}))).code).toBe("bad_field");
    expect((await refusal(l.request("keys.fetch", { u: "kay", d: [] }))).code).toBe("bad_field");

    const all: FetchR = await l.request("keys.fetch", { u: "kay" });
    expect(all.bundles.map((b) => b.d)).toEqual([kay1.device, kay3.device]);
    expect(all.missing).toEqual([kay2.device]); // enrolled, no keys published

    const own: FetchR = await k1.request("keys.fetch", { u: "kay" });
    expect(own.bundles.map((b) => b.d)).toEqual([kay3.device]);
    expect(own.missing).toEqual([kay2.device]);

    const some: FetchR = await l.request("keys.fetch", { u: "kay", d: [kay3.device, 99] });
    expect(some.bundles.map((b) => b.d)).toEqual([kay3.device]);
    expect(some.missing).toEqual([99]);
    // Only the devices fetched spent a key: kay1 gave one (to lou's full fetch), kay3 three.
    expect(await k1.request("keys.count")).toMatchObject({ n: 4 });
    expect(await k3.request("keys.count")).toMatchObject({ n: 2 });
  });
});

describe("one-time prekey stock", () => {
  test("keys.otk: at most 100 per call, a cap per device refusing the whole batch, resends skipped, clashing ids refused", async () => {
    const max = await srv.newDevice("max");
    const m = await connect(srv, max);
    expect((await refusal(m.request("keys.otk", { otk: otks(1, 1) }))).code).toBe("not_found"); // no identity yet
    await m.request("keys.publish", publishArgs(identity(), 1));
    expect((await refusal(m.request("keys.otk", { otk: otks(1, 101) }))).code).toBe("bad_field");
    expect((await refusal(m.request("keys.otk", { otk: [[1, x25519().slice(1)]] }))).code).toBe("bad_field");
    const first = otks(1, 15);
    expect(await m.request("keys.otk", { otk: first })).toEqual({ n: 15 });
    const over = await refusal(m.request("keys.otk", { otk: otks(100, 6) })); // 21 > 20
    expect(over.code).toBe("too_many_keys");
    expect(over.message).toContain("room for 5");
    expect(await m.request("keys.count")).toEqual({ n: 15, max: 20 });
    // A resend of stored keys costs no room; 5 new ones fill it.
    expect(await m.request("keys.otk", { otk: [...first.slice(0, 5), ...otks(100, 5)] })).toEqual({ n: 20 });
    expect((await refusal(m.request("keys.otk", { otk: [[1, x25519()]] }))).code).toBe("bad_field"); // id 1 with another key
    expect((await refusal(m.request("keys.otk", { otk: [[200, x25519()], [200, x25519()]] }))).code).toBe("bad_field");
    expect(await m.request("keys.count")).toEqual({ n: 20, max: 20 });
  });

  test("the low notice: queued while the device is offline, once per crossing, again after a refill", async () => {
    const [nia, oz] = await Promise.all([srv.newDevice("nia"), srv.newDevice("oz")]);
    const n = await srv.client(nia);
    await n.request("keys.publish", publishArgs(identity(), 1, otks(1, 5)));
    await n.close(); // nia is offline from here
    const o = await connect(srv, oz);
    for (let i = 0; i < 5; i++) await o.request("keys.fetch", { u: "nia" }); // 4, 3, 2 (crossed), 1, 0

    const c = await rawLogin(srv, nia);
    const first = (await c.expect((s) => s.t === "evt")) as Evt;
    expect(first).toMatchObject({ k: "keys", op: "low", n: 2 });
    expect(typeof first.ts).toBe("number");
    await barrier(c);
    expect(evts(c)).toHaveLength(1); // not one per fetch below the threshold
    c.send({ t: "ack", q: [first.q] });

    // Still below: no notice. Refilled to 4 (at least 3): the next crossing is reported, live.
    expect((await rawIq(c, "keys.otk", { otk: otks(10, 2) })).r).toEqual({ n: 2 });
    await o.request("keys.fetch", { u: "nia" }); // 1
    await barrier(c);
    expect(evts(c)).toHaveLength(1);
    expect((await rawIq(c, "keys.otk", { otk: otks(20, 3) })).r).toEqual({ n: 4 });
    await o.request("keys.fetch", { u: "nia" }); // 3
    await barrier(c);
    expect(evts(c)).toHaveLength(1);
    await o.request("keys.fetch", { u: "nia" }); // 2: crossed again
    await barrier(c);
    expect(evts(c)).toHaveLength(2);
    expect(evts(c)[1]).toMatchObject({ k: "keys", op: "low", n: 2 });
    await o.request("keys.fetch", { u: "nia" }); // 1
    await barrier(c);
    expect(evts(c)).toHaveLength(2);
    c.send({ t: "ack", q: [evts(c)[1]!.q] });
    await barrier(c);
    c.end();
    // Acknowledged notices are gone for good.
    const again = await rawLogin(srv, nia);
    await barrier(again);
    expect(evts(again)).toHaveLength(0);
    again.end();
  });
});

describe("who changes what", () => {
  test("a device changes only its own keys: publish, keys.otk and keys.spk of one device leave its sibling's alone", async () => {
    const pam1 = await srv.newDevice("pam");
    const pam2 = await srv.newDevice("pam");
    const quin = await srv.newDevice("quin");
    const [p1, p2, q] = await Promise.all([connect(srv, pam1), connect(srv, pam2), connect(srv, quin)]);
    const a1 = identity();
    const a2 = identity();
    await p1.request("keys.publish", publishArgs(a1, 1, otks(1, 4)));
    await p2.request("keys.publish", publishArgs(a2, 1, otks(1, 4)));
    const before: FetchR = await q.request("keys.fetch", { u: "pam", d: [pam1.device] });
    const spk1 = before.bundles[0]!.spk;

    // Device 2 publishes a new identity, naming device 1 and another account in every way it could: ignored.
    const b2 = identity();
    expect(await p2.request("keys.publish", { ...publishArgs(b2, 2, otks(50, 2)), d: pam1.device, u: "quin", account: "quin", device: pam1.device })).toEqual({
      kv: kvOf(b2),
      n: 2,
    });
    await p2.request("keys.otk", { otk: otks(60, 3), d: pam1.device });
    await p2.request("keys.spk", { spk: b2.spk(3), d: pam1.device });
    // quin publishing changes quin's keys only.
    await q.request("keys.publish", publishArgs(identity(), 1, otks(1, 1)));

    const after: FetchR = await q.request("keys.fetch", { u: "pam" });
    const d1 = after.bundles.find((b) => b.d === pam1.device)!;
    const d2 = after.bundles.find((b) => b.d === pam2.device)!;
    expect(d1.kv).toBe(kvOf(a1));
    expect(same(d1.ik, a1.ik) && same(d1.dh, a1.dh)).toBe(true);
    expect(d1.spk.id).toBe(spk1.id);
    expect(same(d1.spk.k, spk1.k)).toBe(true);
    expect(d2.kv).toBe(kvOf(b2));
    expect(same(d2.ik, b2.ik)).toBe(true);
    expect(d2.spk.id).toBe(3);
    expect(await p1.request("keys.count")).toMatchObject({ n: 2 }); // 4, minus the two fetches
    expect(await p2.request("keys.count")).toMatchObject({ n: 4 }); // 2 + 3, minus one fetch
    const devs = await q.request("devices", { u: "pam" });
    expect(devs.devices.map((d: { kv: number }) => d.kv)).toEqual([kvOf(a1), kvOf(b2)]);
  });

  test("a new identity changes the key version in iq devices and drops the old one-time prekeys; the same identity keeps both", async () => {
    const [rae, sam] = await Promise.all([srv.newDevice("rae"), srv.newDevice("sam")]);
    const [r, s] = await Promise.all([connect(srv, rae), connect(srv, sam)]);
    const a = identity();
    expect(await r.request("keys.publish", publishArgs(a, 1, otks(1, 3)))).toEqual({ kv: kvOf(a), n: 3 });
    expect((await s.request("devices", { u: "rae" })).devices[0].kv).toBe(kvOf(a));
    // The same identity again (a new signed prekey, more one-time prekeys): same kv, keys appended.
    expect(await r.request("keys.publish", publishArgs(a, 2, otks(4, 2)))).toEqual({ kv: kvOf(a), n: 5 });
    const b = identity();
    expect(kvOf(b)).not.toBe(kvOf(a));
    expect(await r.request("keys.publish", publishArgs(b, 1, otks(100, 1)))).toEqual({ kv: kvOf(b), n: 1 });
    expect((await s.request("devices", { u: "rae" })).devices[0].kv).toBe(kvOf(b));
    expect((await r.request("devices")).devices[0].kv).toBe(kvOf(b));
    const f: FetchR = await s.request("keys.fetch", { u: "rae" });
    expect(f.bundles[0]!.kv).toBe(kvOf(b));
    expect(same(f.bundles[0]!.ik, b.ik)).toBe(true);
    expect(f.bundles[0]!.otk!.id).toBe(100); // the old identity's keys 1..5 are gone
    const last: FetchR = await s.request("keys.fetch", { u: "rae" });
    expect(last.bundles[0]!.otk).toBeUndefined();
  });

  test("keys.spk rotates the signed prekey, checked against the stored identity key; fetches get the newest", async () => {
    const [tia, uma] = await Promise.all([srv.newDevice("tia"), srv.newDevice("uma")]);
    const [t, u] = await Promise.all([connect(srv, tia), connect(srv, uma)]);
    const id = identity();
    expect((await refusal(t.request("keys.spk", { spk: id.spk(2) }))).code).toBe("not_found");
    await t.request("keys.publish", publishArgs(id, 1));
    expect((await refusal(t.request("keys.spk", { spk: identity().spk(2) }))).code).toBe("bad_signature");
    expect((await refusal(t.request("keys.spk", { spk: { id: 2, k: x25519() } }))).code).toBe("bad_field");
    const next = id.spk(2);
    expect(await t.request("keys.spk", { spk: next })).toEqual({});
    const f: FetchR = await u.request("keys.fetch", { u: "tia" });
    expect(f.bundles[0]!.spk.id).toBe(2);
    expect(same(f.bundles[0]!.spk.k, next.k) && same(f.bundles[0]!.spk.s, next.s)).toBe(true);
    expect(f.bundles[0]!.kv).toBe(kvOf(id)); // rotation is not a new identity
    expect((await u.request("devices", { u: "tia" })).devices[0].kv).toBe(kvOf(id));
  });

  test("a revoked device's keys are deleted, not just hidden", async () => {
    const vic1 = await srv.newDevice("vic");
    const vic2 = await srv.newDevice("vic");
    const wes = await srv.newDevice("wes");
    const [v1, v2, w] = await Promise.all([connect(srv, vic1), connect(srv, vic2), connect(srv, wes)]);
    await v1.request("keys.publish", publishArgs(identity(), 1, otks(1, 3)));
    await v2.request("keys.publish", publishArgs(identity(), 1, otks(1, 3)));
    await v1.request("device.revoke", { d: vic2.device });
    void v2;
    const f: FetchR = await w.request("keys.fetch", { u: "vic" });
    expect(f.bundles.map((b) => b.d)).toEqual([vic1.device]);
    expect(f.missing).toEqual([]);
    // Read the server's key file beside it (WAL: a second reader is fine).
    const store = new SqliteKeyStore(openVersioned(join(srv.dataDir, "keys.db"), "process", KEYS_SCHEMA));
    try {
      expect(store.get("vic", vic2.device)).toBeNull();
      expect(store.count("vic", vic2.device)).toBe(0);
      expect(store.get("vic", vic1.device)).not.toBeNull(); // control
    } finally {
      store.close();
    }
  });
});

describe("rate limit", () => {
  test("fetches are limited per requesting account, all its devices together; a refused fetch spends no key", async () => {
    const xia = await srvRL.newDevice("xia");
    const yan1 = await srvRL.newDevice("yan");
    const yan2 = await srvRL.newDevice("yan");
    const zed = await srvRL.newDevice("zed");
    const [x, y1, y2, z] = await Promise.all([connect(srvRL, xia), connect(srvRL, yan1), connect(srvRL, yan2), connect(srvRL, zed)]);
    await x.request("keys.publish", publishArgs(identity(), 1, otks(1, 50)));
    for (let i = 0; i < 3; i++) await y1.request("keys.fetch", { u: "xia" });
    const e = await refusal(y1.request("keys.fetch", { u: "xia" }));
    expect(e.code).toBe("rate_limited");
    expect(e.message).toMatch(/retry in \d+ ms/);
    const retry = (e.detail as { retry_ms: number }).retry_ms; // the same delay, machine-readable in the res's `x`
    expect(Number.isInteger(retry) && retry > 0).toBe(true);
    expect(e.message).toContain(`retry in ${retry} ms`);
    expect((await refusal(y2.request("keys.fetch", { u: "xia" }))).code).toBe("rate_limited"); // same account, other device
    expect((await refusal(y2.request("keys.fetch", { u: "nobody" }))).code).toBe("rate_limited"); // charged before the lookup
    expect(await x.request("keys.count")).toMatchObject({ n: 47 });
    // Another account has its own bucket.
    const f: FetchR = await z.request("keys.fetch", { u: "xia" });
    expect(f.bundles[0]!.otk!.id).toBe(4);
    // Managing one's own keys is not a fetch.
    expect(await y1.request("keys.count")).toMatchObject({ n: 0 });
  });
});

describe("durability", () => {
  test("keys and what fetches took survive kill -9 and a restart", async () => {
    const [ava, ben] = await Promise.all([srvCrash.newDevice("ava"), srvCrash.newDevice("ben")]);
    const id = identity();
    let a = await srvCrash.client(ava);
    let b = await srvCrash.client(ben);
    await a.request("keys.publish", publishArgs(id, 5, otks(1, 4)));
    const first: FetchR = await b.request("keys.fetch", { u: "ava" });
    expect(first.bundles[0]!.otk!.id).toBe(1);
    await srvCrash.kill9();
    await Promise.all([a.close().catch(() => {}), b.close().catch(() => {})]);
    await srvCrash.restart();
    a = await connect(srvCrash, ava);
    b = await connect(srvCrash, ben);
    const f: FetchR = await b.request("keys.fetch", { u: "ava" });
    const bd = f.bundles[0]!;
    expect(bd.kv).toBe(kvOf(id));
    expect(same(bd.ik, id.ik) && same(bd.dh, id.dh) && same(bd.dhs, id.dhs)).toBe(true);
    expect(bd.spk.id).toBe(5);
    expect(bd.otk!.id).toBe(2); // 1 went out before the crash, never again
    expect(await a.request("keys.count")).toMatchObject({ n: 2 });
    expect((await b.request("devices", { u: "ava" })).devices[0].kv).toBe(kvOf(id));
  });
});

describe("hot reload", () => {
  test("a reload of the keys module keeps the store and the fetch allowance: keys, spent keys and the rate limit carry on", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "sb-keys-reload-"));
    const mods = join(tmp, "modules");
    cpSync(join(ROOT, "src/modules"), mods, { recursive: true });
    const s = await startServer({ args: ["--modules-dir", mods, "--keys-fetch-burst", "3", "--keys-fetch-rate", "1"] });
    try {
      const [amy, bo] = await Promise.all([s.newDevice("amy"), s.newDevice("bo")]);
      const [a, b] = await Promise.all([connect(s, amy), connect(s, bo)]);
      const id = identity();
      await a.request("keys.publish", publishArgs(id, 1, otks(1, 5)));
      for (let i = 1; i <= 2; i++) expect(((await b.request("keys.fetch", { u: "amy" })) as FetchR).bundles[0]!.otk!.id).toBe(i);

      appendFileSync(join(mods, "keys", "index.ts"), `\nkeys.version = "1.0.1-reloaded"; // appended by test/wire/keys.test.ts\n`);
      s.proc.kill("SIGHUP");
      await moduleLoaded(s, "keys", "1.0.1-reloaded");

      // The same connections, the new code: the third fetch of the burst gets the next key,
      // the fourth is refused (a fresh allowance would have let it through).
      const f: FetchR = await b.request("keys.fetch", { u: "amy" });
      expect(f.bundles[0]!.otk!.id).toBe(3);
      expect(same(f.bundles[0]!.ik, id.ik)).toBe(true);
      expect((await refusal(b.request("keys.fetch", { u: "amy" }))).code).toBe("rate_limited");
      expect(await a.request("keys.count")).toMatchObject({ n: 2 });
      await a.request("keys.otk", { otk: otks(10, 2) });
      expect(await a.request("keys.count")).toMatchObject({ n: 4 });
    } finally {
      s.cleanup();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
