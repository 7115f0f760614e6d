/**
 * The end-to-end key directory (docs/PROTOCOL.md §5.4). Each device publishes
 * an identity (an Ed25519 signing key `ik` and an X25519 key `dh` signed by
 * it), a signed prekey, and one-time prekeys; a sender fetches an account's
 * bundles, one per current device, each taking one one-time prekey.
 *
 * The server checks every signature against the identity key before storing
 * it, so a bundle it serves is at least self-consistent; whether `ik` really
 * belongs to the account is for the users to verify (safety numbers), as in
 * Signal: the server is trusted to route, not to vouch for keys.
 *
 * Only a device changes its own keys: every operation acts on the calling
 * connection's (account, device), and no argument names another device.
 *
 * Cost: a fetch is one SQLite transaction (per device one SELECT, one DELETE
 * ... RETURNING and at most one COUNT), committed before the answer goes out; fetches
 * are rate-limited per requesting account (token bucket), because each one
 * spends a one-time prekey of someone else.
 */
import { createHash, verify } from "node:crypto";
import { accountTables, type IqReply, type Module, type Registration, type ShardRows } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { Config } from "../../core/config.ts";
import { ItemKind } from "../../core/delivery.ts";
import { ed25519PublicKey } from "../../core/directory.ts";
import { KeyedTokenBuckets } from "../../core/ratelimit.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { ACCOUNT_NAME_RE, LIMITS } from "../../protocol/stanzas.ts";
import type { Conn } from "../../transport/connection.ts";
import { KEYS_SCHEMA, SqliteKeyStore, type Bundle, type OneTimePrekey, type SignedPrekey } from "./store.ts";

/** One-time prekeys in one upload (keys.publish or keys.otk). */
export const OTK_BATCH = 100;

/**
 * Key version of an identity: the first 4 bytes of SHA-256(ik || dh) as a
 * big-endian uint32, and 1 where that is 0 (0 means "no keys").
 */
export function keyVersion(ik: Uint8Array, dh: Uint8Array): number {
  const h = createHash("sha256").update(ik).update(dh).digest();
  return h.readUInt32BE(0) || 1;
}

/** What outlives a reload (ctx.shared): the buckets and their sweep. */
interface State {
  /** Running instances; the sweep stops when the last one stops. */
  users: number;
  /** Fetch allowance per requesting account. */
  buckets: KeyedTokenBuckets;
  sweep: ReturnType<typeof setInterval> | null;
}

/** A malformed argument: turned into `bad_field` by the iq wrapper. */
class BadArg extends Error {}

function bin(v: unknown, len: number, name: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new BadArg(`${name} must be binary (msgpack bin) of ${len} bytes`);
  if (v.length !== len) throw new BadArg(`${name} must be exactly ${len} bytes, got ${v.length}`);
  return v;
}

function uint32(v: unknown, name: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new BadArg(`${name} must be an integer 0..2^32-1`);
  return v;
}

function spkArg(v: unknown): SignedPrekey {
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array) throw new BadArg("a.spk must be a map {id, k, s}");
  const m = v as Record<string, unknown>;
  return { id: uint32(m.id, "a.spk.id"), k: bin(m.k, 32, "a.spk.k"), s: bin(m.s, 64, "a.spk.s") };
}

function otksArg(v: unknown, name: string): OneTimePrekey[] {
  if (!Array.isArray(v)) throw new BadArg(`${name} must be an array of [id, key] pairs`);
  if (v.length > OTK_BATCH) throw new BadArg(`${name} holds ${v.length} one-time prekeys; at most ${OTK_BATCH} per upload`);
  return v.map((e, i) => {
    if (!Array.isArray(e) || e.length !== 2) throw new BadArg(`${name}[${i}] must be an [id, key] pair`);
    return { id: uint32(e[0], `${name}[${i}] id`), k: bin(e[1], 32, `${name}[${i}] key`) };
  });
}

function deviceList(v: unknown): number[] {
  if (!Array.isArray(v) || v.length === 0 || v.length > 64) throw new BadArg("a.d must be an array of 1..64 device ids");
  for (const d of v) if (typeof d !== "number" || !Number.isInteger(d) || d < 1 || d > LIMITS.maxDevice) throw new BadArg("a.d must hold device ids 1..2^31-1");
  return v as number[];
}

/** Ed25519 signature check; a key that is not a valid Ed25519 point fails like a bad signature. */
function verified(ik: Uint8Array, data: Uint8Array, sig: Uint8Array): boolean {
  try {
    return verify(null, data, ed25519PublicKey(ik), sig);
  } catch {
    return false;
  }
}

const bad = (e: ErrorCode, m: string): IqReply => ({ ok: false, e, m });

function bundleOut(b: Bundle): Record<string, unknown> {
  const r: Record<string, unknown> = { d: b.device, kv: b.kv, ik: b.ik, dh: b.dh, dhs: b.dhs, spk: { id: b.spk.id, k: b.spk.k, s: b.spk.s } };
  if (b.otk !== undefined) r.otk = { id: b.otk.id, k: b.otk.k };
  return r;
}

/**
 * The shared state of the running instance, for stop() (which gets no ctx). One
 * server per process: two servers in one process sharing this module object
 * would share this variable too.
 */
let sharedState: State | null = null;

const keys: Module<Config["keys"]> = {
  name: "keys",
  version: "1.0.0",
  start(ctx: ModuleContext<Config["keys"]>): Registration[] {
    const cfg = ctx.options;
    const limits = { maxOtk: cfg.maxOtk, lowOtk: cfg.lowOtk };
    const state = ctx.shared<State>("keys", () => ({ users: 0, buckets: new KeyedTokenBuckets(cfg.fetchRate / 60, cfg.fetchBurst), sweep: null }));
    // keys.db is core's to open and close (ctx.database: the same handle across reloads); the statements are this instance's.
    const keysDb = ctx.database("keys", KEYS_SCHEMA);
    const store = new SqliteKeyStore(keysDb);
    state.users++;
    sharedState = state;
    if (state.sweep === null) {
      state.sweep = setInterval(() => state.buckets.sweep(Date.now()), 60_000);
      state.sweep.unref?.();
    }
    const m = {
      fetches: ctx.metrics.counter("switchboard_keys_fetches_total", "Key bundle fetches answered."),
      limited: ctx.metrics.counter("switchboard_keys_fetches_limited_total", "Key bundle fetches refused by the rate limit."),
      bundles: ctx.metrics.counter("switchboard_keys_bundles_total", "Device bundles served, by whether a one-time prekey was left.", { otk: "yes" }),
      exhausted: ctx.metrics.counter("switchboard_keys_bundles_total", "Device bundles served, by whether a one-time prekey was left.", { otk: "no" }),
      low: ctx.metrics.counter("switchboard_keys_low_notices_total", "Low one-time prekey notices queued."),
    };

    /** Runs a handler, turning a malformed argument into `bad_field`. */
    const guarded = (fn: (conn: Conn, a: Record<string, unknown>) => IqReply) => (conn: Conn, a: Record<string, unknown>): IqReply => {
      try {
        return fn(conn, a);
      } catch (e) {
        if (e instanceof BadArg) return bad(ErrorCode.BAD_FIELD, e.message);
        throw e;
      }
    };

    /** The directory's key version follows the store's (also after a crash between the two writes: the device publishes again). */
    function syncKeyVersion(conn: Conn, kv: number): void {
      if (ctx.directory.keyVersion(conn.account, conn.device) !== kv) ctx.directory.setKeyVersion(conn.account, conn.device, kv);
    }

    function publish(conn: Conn, a: Record<string, unknown>): IqReply {
      const ik = bin(a.ik, 32, "a.ik");
      const dh = bin(a.dh, 32, "a.dh");
      const dhs = bin(a.dhs, 64, "a.dhs");
      const spk = spkArg(a.spk);
      const otk = a.otk === undefined || a.otk === null ? [] : otksArg(a.otk, "a.otk");
      if (!verified(ik, dh, dhs)) return bad(ErrorCode.BAD_SIGNATURE, "a.dhs is not a valid Ed25519 signature by a.ik over a.dh");
      if (!verified(ik, spk.k, spk.s)) return bad(ErrorCode.BAD_SIGNATURE, "a.spk.s is not a valid Ed25519 signature by a.ik over a.spk.k");
      const kv = keyVersion(ik, dh);
      const r = store.publish(conn.account, conn.device, { ik, dh, dhs, kv, spk }, otk, limits);
      if (!r.ok) return bad(r.reason, r.message);
      syncKeyVersion(conn, kv);
      if (r.value.changed) ctx.log.info("device identity published", { account: conn.account, device: conn.device, kv });
      return { ok: true, r: { kv, n: r.value.n } };
    }

    function rotate(conn: Conn, a: Record<string, unknown>): IqReply {
      const spk = spkArg(a.spk);
      const cur = store.get(conn.account, conn.device);
      if (cur === null) return bad(ErrorCode.NOT_FOUND, "this device has published no keys; keys.publish comes first");
      if (!verified(cur.ik, spk.k, spk.s)) return bad(ErrorCode.BAD_SIGNATURE, "a.spk.s is not a valid Ed25519 signature by this device's identity key over a.spk.k");
      const r = store.rotate(conn.account, conn.device, spk);
      return r.ok ? { ok: true, r: {} } : bad(r.reason, r.message);
    }

    function upload(conn: Conn, a: Record<string, unknown>): IqReply {
      const otk = otksArg(a.otk, "a.otk");
      const r = store.addPrekeys(conn.account, conn.device, otk, limits);
      return r.ok ? { ok: true, r: { n: r.value.n } } : bad(r.reason, r.message);
    }

    function count(conn: Conn): IqReply {
      return { ok: true, r: { n: store.count(conn.account, conn.device), max: limits.maxOtk } };
    }

    function fetch(conn: Conn, a: Record<string, unknown>): IqReply {
      const u = a.u;
      if (typeof u !== "string" || !ACCOUNT_NAME_RE.test(u)) return bad(ErrorCode.BAD_FIELD, "a.u must be an account name");
      const only = a.d === undefined || a.d === null ? null : deviceList(a.d);
      // Charged before anything is looked up: probing for accounts costs the same as fetching.
      const now = Date.now();
      const wait = state.buckets.take(conn.account, now);
      if (wait > 0) {
        m.limited.inc();
        return { ok: false, e: ErrorCode.RATE_LIMITED, m: `too many key fetches by ${conn.account}; retry in ${wait} ms`, x: { retry_ms: wait } };
      }
      const current = ctx.directory.deviceIds(u);
      if (current === null) return bad(ErrorCode.UNKNOWN_USER, `no account ${u}`);
      // Syncing one's own other devices: the caller does not encrypt to itself.
      let wanted = u === conn.account ? current.filter((d) => d !== conn.device) : [...current];
      if (only !== null) wanted = wanted.filter((d) => only.includes(d));
      const { bundles, low } = store.take(u, wanted, limits.lowOtk);
      const have = new Set(bundles.map((b) => b.device));
      // A requested id that is not a current device gets no bundle either: listed with the rest.
      const asked = only !== null ? [...new Set(only)].filter((d) => !(u === conn.account && d === conn.device)) : wanted;
      const missing = asked.filter((d) => !have.has(d)).sort((x, y) => x - y);
      m.fetches.inc();
      for (const b of bundles) (b.otk !== undefined ? m.bundles : m.exhausted).inc();
      for (const l of low) {
        // Queued, not just pushed: a device that is offline learns it when it comes back.
        ctx.accept.toDevice(
          u, l.device, { kind: ItemKind.EVENT, fromAccount: u, fromDevice: l.device, cid: "", seq: 0, ts: now },
          { t: "evt", q: 0, k: "keys", op: "low", n: l.n, ts: now },
        );
        m.low.inc();
      }
      return { ok: true, r: { u, bundles: bundles.map(bundleOut), missing } };
    }

    function onRevoked(account: string, device: number): void {
      if (store.drop(account, device)) ctx.log.info("revoked device's keys deleted", { account, device });
    }

    return [
      { iq: "keys.publish", handle: guarded(publish) },
      { iq: "keys.spk", handle: guarded(rotate) },
      { iq: "keys.otk", handle: guarded(upload) },
      { iq: "keys.count", handle: guarded(count) },
      { iq: "keys.fetch", handle: guarded(fetch) },
      { hook: "device:revoked", handle: onRevoked },
      { hook: "account:deleted", handle: (account: string) => void store.dropAccount(account) },
      // Cluster: the bundles and one-time prekeys go with the account's home shard (docs/CLUSTER.md "Moving shards").
      { hook: "shard:rows", handle: (o: ShardRows) => accountTables(keysDb, "keys", [["identities", "account"], ["otks", "account"]], o) },
    ];
  },
  stop() {
    // The sweep stops only when no running instance is left, after the current synchronous
    // stretch: a reload stops the old instance and starts the new one in the same stretch.
    const state = sharedState;
    if (state === null) return;
    state.users--;
    queueMicrotask(() => {
      if (state.users > 0) return;
      if (state.sweep !== null) clearInterval(state.sweep);
      state.sweep = null;
    });
  },
};

export default keys;
