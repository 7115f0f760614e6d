/**
 * One device's end-to-end state, in memory and serializable: its identity,
 * prekeys, the identities it has seen of other devices, a Double Ratchet
 * session per remote device, and group sender keys. No I/O: the caller
 * persists `serialize()` (SecureClient writes it next to the device key file).
 *
 * Sessions per remote device: the current one plus up to PREVIOUS_KEPT older
 * ones. Two devices that start sessions with each other at the same time end
 * up with two; a message that the current session cannot decrypt is tried on
 * the older ones, and the one that works becomes current (as libsignal does),
 * so both sides converge on one session.
 *
 * Identity changes: when a bundle or a prekey message names an identity for
 * a device other than the one seen before, the old sessions are dropped, the
 * new identity is recorded, and the result says `identityChanged` (the
 * application shows "security code changed"). Trust on first use; the safety
 * number is how users check.
 *
 * Asynchronous (the provider is: primitives.ts), and serialised: every
 * operation that reads or changes the state runs after the one before it has
 * finished (`exclusive`), so an encryption cannot interleave with a
 * decryption's ratchet step, and each operation commits its changes in one
 * synchronous stretch at its end (a failed decryption, also one tried on an
 * older session, commits nothing). `serialize()` is synchronous: what it
 * returns is the state after every operation that has resolved.
 */
import { defaultCrypto } from "#e2e-crypto";
import type { AsyncCryptoProvider } from "./async.ts";
import { CryptoError, e2eCrypto, samePublic, toHex, type E2ECrypto, type KeyPair } from "./primitives.ts";
import {
  generateIdentity, generateSignedPreKey, keyVersion, x3dhInitiate, x3dhRespond,
  type Address, type Bundle, type IdentityKeys, type PublicIdentity, type SignedPreKey,
} from "./x3dh.ts";
import {
  initInitiator, initResponder, ratchetDecrypt, ratchetEncrypt, ratchetFromData, ratchetToData,
  type RatchetState, type RatchetStateData,
} from "./ratchet.ts";
import { decodeEnvelope, encodeEnvelope, pack, unpack, type PreKeyEnvelope } from "./envelope.ts";
import type { DecryptOutcome, KnownIdentity, PublishArgs, SessionResult } from "./session-types.ts";

export type { DecryptOutcome, KnownIdentity, PublishArgs, SessionResult } from "./session-types.ts";
import {
  createSenderKey, distributionBytes, installDistribution, parseDistribution, senderContext, senderDecrypt, senderEncrypt,
  senderKeyFromData, senderKeyToData, type GroupDecryptResult, type SenderKeyData, type SenderKeyState,
} from "./senderkeys.ts";

/** Older sessions kept per remote device. */
export const PREVIOUS_KEPT = 4;
/** Signed prekeys kept (the current one and older ones, for prekey messages still in flight after a rotation). */
export const SIGNED_PREKEYS_KEPT = 3;
/** Upper bound on one-time prekeys held (the server takes at most 100 per call). */
export const MAX_ONE_TIME_KEYS = 1000;
const STATE_VERSION = 1;

export interface Session {
  ratchet: RatchetState;
  ad: Uint8Array;
  remote: PublicIdentity;
  /** The initiator's ephemeral key: tells a repeated prekey message for this session from a new session. */
  base: Uint8Array;
  initiator: boolean;
  /** Prekey fields to send with every message until the responder has answered (initiator only). */
  pending?: { e: Uint8Array; s: number; o?: number };
  created: number;
}

interface SessionRecord {
  cur: Session;
  prev: Session[];
}

const addrKey = (a: Address) => `${a.u}\u0000${a.d}`;
const sameIdentity = (a: PublicIdentity, b: PublicIdentity) => samePublic(a.ik, b.ik) && samePublic(a.dh, b.dh);

export class E2EDevice {
  readonly address: Address;
  readonly identity: IdentityKeys;
  /** This device's key version (docs/PROTOCOL.md keys section). */
  readonly kv: number;
  readonly cx: E2ECrypto;
  /** The end of the chain of operations (see exclusive). */
  private tail: Promise<unknown> = Promise.resolve();
  /** Newest first. */
  private spks: SignedPreKey[] = [];
  private otks = new Map<number, KeyPair>();
  private nextOtkId = 1;
  private nextSpkId = 1;
  private identities = new Map<string, KnownIdentity>();
  private sessions = new Map<string, SessionRecord>();
  /** Our own sender key per group. */
  private ownGroupKeys = new Map<string, SenderKeyState>();
  /** Other members' sender keys by group, account, device. */
  private groupKeys = new Map<string, SenderKeyState[]>();

  private constructor(cx: E2ECrypto, address: Address, identity: IdentityKeys, kv: number) {
    this.cx = cx;
    this.address = { u: address.u, d: address.d };
    this.identity = identity;
    this.kv = kv;
  }

  /** A new device identity with a first signed prekey, on `crypto` (node:crypto in Bun and Node, WebCrypto in a browser by default). */
  static async create(address: Address, crypto: AsyncCryptoProvider = defaultCrypto): Promise<E2EDevice> {
    const cx = e2eCrypto(crypto);
    const id = await generateIdentity(cx);
    const dev = new E2EDevice(cx, address, id, await keyVersion(cx, id.ik.pub, id.dh.pub));
    await dev.rotateSignedPreKey();
    return dev;
  }

  /**
   * Runs `f` after every operation queued before it (resolved or not). The state's operations await the
   * provider between reading and committing; two at once on one session would derive the same chain step.
   */
  private exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.tail.then(f);
    this.tail = run.catch(() => undefined);
    return run;
  }

  get publicIdentity(): PublicIdentity {
    return { ik: this.identity.ik.pub, dh: this.identity.dh.pub };
  }

  // ---- prekeys --------------------------------------------------------------------

  /** Makes a new signed prekey current; the previous ones are kept a while. Returns it as `keys.spk` wants it. */
  rotateSignedPreKey(now = Date.now()): Promise<{ id: number; k: Uint8Array; s: Uint8Array }> {
    return this.exclusive(async () => {
      const spk = await generateSignedPreKey(this.cx, this.identity, this.nextSpkId, now);
      this.nextSpkId++;
      this.spks = [spk, ...this.spks].slice(0, SIGNED_PREKEYS_KEPT);
      return { id: spk.id, k: spk.kp.pub, s: spk.s };
    });
  }

  get signedPreKey(): { id: number; k: Uint8Array; s: Uint8Array; created: number } {
    const spk = this.spks[0]!;
    return { id: spk.id, k: spk.kp.pub, s: spk.s, created: spk.created };
  }

  /** Generates `n` one-time prekeys and returns their public halves as `[[id, k], ...]` (for `keys.otk`/`keys.publish`). */
  generateOneTimeKeys(n: number): Promise<[number, Uint8Array][]> {
    if (!Number.isInteger(n) || n < 0) throw new Error(`generateOneTimeKeys: n must be a non-negative integer, got ${n}`);
    return this.exclusive(() => this.makeOneTimeKeys(n));
  }

  private async makeOneTimeKeys(n: number): Promise<[number, Uint8Array][]> {
    const kps = await Promise.all(Array.from({ length: n }, () => this.cx.generateDH()));
    const out: [number, Uint8Array][] = [];
    for (const kp of kps) {
      const id = this.nextOtkId;
      this.nextOtkId = this.nextOtkId >= 0xffffffff ? 1 : this.nextOtkId + 1;
      this.otks.set(id, kp);
      out.push([id, kp.pub]);
    }
    // Bounded: keys the server never handed out (lost publishes) would otherwise pile up.
    while (this.otks.size > MAX_ONE_TIME_KEYS) this.otks.delete(this.otks.keys().next().value!);
    return out;
  }

  get oneTimeKeyCount(): number {
    return this.otks.size;
  }

  /** The arguments of `keys.publish`, with `otk` fresh one-time prekeys. */
  async publishArgs(otk = 100): Promise<PublishArgs> {
    const keys = otk > 0 ? await this.generateOneTimeKeys(otk) : null;
    const spk = this.signedPreKey;
    const a: PublishArgs = { ik: this.identity.ik.pub, dh: this.identity.dh.pub, dhs: this.identity.dhs, spk: { id: spk.id, k: spk.k, s: spk.s } };
    if (keys) a.otk = keys;
    return a;
  }

  // ---- identities and sessions ------------------------------------------------------

  /** The identity we know for a remote device (the one its sessions are bound to). */
  knownIdentity(a: Address): KnownIdentity | undefined {
    return this.identities.get(addrKey(a));
  }

  /** Known identities of an account's devices, by device id. */
  knownIdentities(account: string): Map<number, KnownIdentity> {
    const out = new Map<number, KnownIdentity>();
    const prefix = `${account}\u0000`;
    for (const [k, v] of this.identities) if (k.startsWith(prefix)) out.set(Number(k.slice(prefix.length)), v);
    return out;
  }

  hasSession(a: Address): boolean {
    return this.sessions.has(addrKey(a));
  }

  /** Forgets a device (revoked): its sessions and identity. */
  forgetDevice(a: Address): void {
    this.sessions.delete(addrKey(a));
    this.identities.delete(addrKey(a));
    for (const k of [...this.groupKeys.keys()]) if (k.endsWith(`\u0000${a.u}\u0000${a.d}`)) this.groupKeys.delete(k);
  }

  /** Records the identity of `a` (its key version `kv` computed by the caller, before the commit). */
  private noteIdentity(a: Address, id: PublicIdentity, kv: number, now: number): { changed: boolean; previous?: KnownIdentity } {
    const k = addrKey(a);
    const known = this.identities.get(k);
    if (known && sameIdentity(known, id)) return { changed: false };
    this.identities.set(k, { ik: id.ik, dh: id.dh, kv, since: now });
    if (!known) return { changed: false };
    this.sessions.delete(k); // sessions of the old identity are no use any more
    for (const gk of [...this.groupKeys.keys()]) if (gk.endsWith(`\u0000${a.u}\u0000${a.d}`)) this.groupKeys.delete(gk);
    return { changed: true, previous: known };
  }

  private install(a: Address, s: Session): void {
    const k = addrKey(a);
    const rec = this.sessions.get(k);
    if (!rec) this.sessions.set(k, { cur: s, prev: [] });
    else {
      rec.prev = [rec.cur, ...rec.prev].slice(0, PREVIOUS_KEPT);
      rec.cur = s;
    }
  }

  /**
   * X3DH as the initiator, from a bundle `keys.fetch` returned for device
   * `a`. Replaces the current session (the old one is kept as a previous
   * one). Fails with `bad_bundle`, `bad_signature` or `bad_key`.
   */
  processBundle(a: Address, bundle: Bundle, now = Date.now()): Promise<SessionResult> {
    return this.exclusive(() => this.startSession(a, bundle, now));
  }

  private async startSession(a: Address, bundle: Bundle, now: number): Promise<SessionResult> {
    let r;
    let ratchet: RatchetState;
    try {
      r = await x3dhInitiate(this.cx, this.identity, this.address, bundle, a);
      if (typeof r === "string") return { ok: false, reason: r };
      ratchet = await initInitiator(this.cx, r.sk, bundle.spk.k);
    } catch (e) {
      if (e instanceof CryptoError) return { ok: false, reason: e.reason };
      throw e;
    }
    const kv = await keyVersion(this.cx, r.remote.ik, r.remote.dh);
    const idc = this.noteIdentity(a, r.remote, kv, now);
    const pending: Session["pending"] = { e: r.ek, s: r.spkId };
    if (r.otkId !== undefined) pending.o = r.otkId;
    this.install(a, { ratchet, ad: r.ad, remote: r.remote, base: r.ek, initiator: true, pending, created: now });
    return idc.previous ? { ok: true, identityChanged: idc.changed, previous: idc.previous } : { ok: true, identityChanged: idc.changed };
  }

  /** Encrypts a payload for one remote device. Throws when there is no session: fetch its bundle and call processBundle first. */
  encrypt(a: Address, plaintext: Uint8Array): Promise<Uint8Array> {
    return this.exclusive(() => this.encryptNow(a, plaintext));
  }

  private async encryptNow(a: Address, plaintext: Uint8Array): Promise<Uint8Array> {
    const rec = this.sessions.get(addrKey(a));
    if (!rec) throw new Error(`encrypt: no session with ${a.u} device ${a.d}; fetch its bundle (keys.fetch) and call processBundle first`);
    const s = rec.cur;
    const { header, ciphertext } = await ratchetEncrypt(this.cx, s.ratchet, plaintext, s.ad);
    if (s.pending) {
      const p = this.identity;
      const env: PreKeyEnvelope = { t: 2, ik: p.ik.pub, dh: p.dh.pub, dhs: p.dhs, e: s.pending.e, s: s.pending.s, h: header, c: ciphertext };
      if (s.pending.o !== undefined) env.o = s.pending.o;
      return encodeEnvelope(env);
    }
    return encodeEnvelope({ t: 1, h: header, c: ciphertext });
  }

  /**
   * Decrypts a payload from remote device `a` (the server's `from`/`fd`).
   * Never throws for bad input: `{ok:false, reason}` with reason
   * `bad_envelope`, `bad_version`, `notice` (the sender could not encrypt for
   * us; `notice` says why), `no_session`, `unknown_prekey`, `bad_signature`,
   * `bad_key`, or one of the ratchet's (`duplicate`, `too_many_skipped`,
   * `bad_mac`, `bad_header`).
   */
  decrypt(a: Address, payload: Uint8Array, now = Date.now()): Promise<DecryptOutcome> {
    return this.exclusive(() => this.decryptNow(a, payload, now));
  }

  private async decryptNow(a: Address, payload: Uint8Array, now: number): Promise<DecryptOutcome> {
    const env = decodeEnvelope(payload);
    if ("bad" in env) return { ok: false, reason: env.bad };
    if (env.t === 0) return { ok: false, reason: "notice", notice: env.r };
    const rec = this.sessions.get(addrKey(a));
    if (env.t === 2) {
      const remote = { ik: env.ik, dh: env.dh };
      // A repeat of the prekey message of a session we already have (the initiator sends them until we answer).
      if (rec) {
        const all = [rec.cur, ...rec.prev];
        const i = all.findIndex((s) => samePublic(s.base, env.e) && sameIdentity(s.remote, remote));
        if (i >= 0) return this.decryptWith(a, rec, i, env.h, env.c);
      }
      return this.acceptPreKey(a, env, now);
    }
    if (!rec) return { ok: false, reason: "no_session" };
    return this.decryptWith(a, rec, -1, env.h, env.c);
  }

  /**
   * Tries the session at `only` (or the current one, then the older ones); the one that decrypts becomes current.
   * A session that fails is left as it was (ratchetDecrypt commits only on success), so trying several commits
   * only the attempt that worked.
   */
  private async decryptWith(a: Address, rec: SessionRecord, only: number, h: Uint8Array, c: Uint8Array): Promise<DecryptOutcome> {
    const all = [rec.cur, ...rec.prev];
    const order = only >= 0 ? [only] : all.map((_, i) => i);
    let first: string | null = null;
    for (const i of order) {
      const s = all[i]!;
      const r = await ratchetDecrypt(this.cx, s.ratchet, h, c, s.ad);
      if (r.ok) {
        delete s.pending; // the peer has our session: no more prekey messages
        if (i > 0) {
          rec.prev = all.filter((_, j) => j !== i).slice(0, PREVIOUS_KEPT);
          rec.cur = s;
        }
        return { ok: true, plaintext: r.plaintext, newSession: false, identityChanged: false };
      }
      first ??= r.reason;
    }
    return { ok: false, reason: first ?? "no_session" };
  }

  private async acceptPreKey(a: Address, env: PreKeyEnvelope, now: number): Promise<DecryptOutcome> {
    if (!(await this.cx.verify(env.ik, env.dh, env.dhs))) return { ok: false, reason: "bad_signature" };
    const spk = this.spks.find((s) => s.id === env.s);
    if (!spk) return { ok: false, reason: "unknown_prekey" };
    let otk: KeyPair | null = null;
    if (env.o !== undefined) {
      otk = this.otks.get(env.o) ?? null;
      if (!otk) return { ok: false, reason: "unknown_prekey" };
    }
    const remote = { ik: env.ik, dh: env.dh };
    let sk: Uint8Array, ad: Uint8Array;
    try {
      ({ sk, ad } = await x3dhRespond(this.cx, this.identity, this.address, spk.kp, otk, remote, a, env.e));
    } catch (e) {
      if (e instanceof CryptoError) return { ok: false, reason: e.reason };
      throw e;
    }
    const ratchet = initResponder(sk, spk.kp);
    const r = await ratchetDecrypt(this.cx, ratchet, env.h, env.c, ad);
    if (!r.ok) return r;
    const kv = await keyVersion(this.cx, remote.ik, remote.dh);
    // Committed only now that the message authenticated: a forged prekey message burns no one-time key.
    if (env.o !== undefined) this.otks.delete(env.o);
    const idc = this.noteIdentity(a, remote, kv, now);
    this.install(a, { ratchet, ad, remote, base: env.e, initiator: false, created: now });
    const out: DecryptOutcome = { ok: true, plaintext: r.plaintext, newSession: true, identityChanged: idc.changed };
    if (idc.previous) out.previous = idc.previous;
    return out;
  }

  // ---- groups (sender keys) ------------------------------------------------------------

  /** Our current sender key's distribution message for group `g` (created on first use). Send it 1:1 to each member device. */
  groupDistribution(g: string): Promise<Uint8Array> {
    return this.exclusive(async () => {
      let s = this.ownGroupKeys.get(g);
      if (!s) {
        s = await createSenderKey(this.cx);
        this.ownGroupKeys.set(g, s);
      }
      return distributionBytes(g, s);
    });
  }

  /** A new sender key for group `g` (after a member left); returns its distribution message for the remaining member devices. */
  rotateGroupKey(g: string): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const s = await createSenderKey(this.cx);
      this.ownGroupKeys.set(g, s);
      return distributionBytes(g, s);
    });
  }

  hasGroupKey(g: string): boolean {
    return this.ownGroupKeys.has(g);
  }

  /** Drops our state of a group we left. */
  forgetGroup(g: string): void {
    this.ownGroupKeys.delete(g);
    for (const k of [...this.groupKeys.keys()]) if (k.startsWith(`${g}\u0000`)) this.groupKeys.delete(k);
  }

  /** Installs a distribution message that arrived (decrypted) from device `from`. Returns the group, or null if malformed. */
  processGroupDistribution(from: Address, dm: Uint8Array): string | null {
    const d = parseDistribution(dm);
    if (!d) return null;
    const k = `${d.g}\u0000${from.u}\u0000${from.d}`;
    this.groupKeys.set(k, installDistribution(this.groupKeys.get(k) ?? [], d));
    return d.g;
  }

  hasGroupKeyFrom(g: string, from: Address): boolean {
    return this.groupKeys.has(`${g}\u0000${from.u}\u0000${from.d}`);
  }

  /** Encrypts one group message with our sender key (call groupDistribution first and deliver it). */
  groupEncrypt(g: string, plaintext: Uint8Array): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const s = this.ownGroupKeys.get(g);
      if (!s) throw new Error(`groupEncrypt: no sender key for ${g}; call groupDistribution(g) and send it to the members first`);
      return senderEncrypt(this.cx, s, plaintext, senderContext(g, this.address.u, this.address.d));
    });
  }

  groupDecrypt(g: string, from: Address, msg: Uint8Array): Promise<GroupDecryptResult> {
    return this.exclusive(async () => {
      const states = this.groupKeys.get(`${g}\u0000${from.u}\u0000${from.d}`);
      if (!states) return { ok: false, reason: "no_sender_key" };
      return senderDecrypt(this.cx, states, msg, senderContext(g, from.u, from.d));
    });
  }

  // ---- serialization ----------------------------------------------------------------------

  serialize(): Uint8Array {
    const sess = (s: Session) => {
      const o: Record<string, unknown> = { r: ratchetToData(s.ratchet), ad: s.ad, ik: s.remote.ik, dh: s.remote.dh, b: s.base, i: s.initiator, c: s.created };
      if (s.pending) o.p = s.pending;
      return o;
    };
    const body = pack({
      v: STATE_VERSION,
      a: [this.address.u, this.address.d],
      id: { ik: [this.identity.ik.pub, this.identity.ik.priv], dh: [this.identity.dh.pub, this.identity.dh.priv], dhs: this.identity.dhs },
      spk: this.spks.map((s) => [s.id, s.kp.pub, s.kp.priv, s.s, s.created]),
      otk: [...this.otks].map(([id, kp]) => [id, kp.pub, kp.priv]),
      no: this.nextOtkId,
      ns: this.nextSpkId,
      ids: [...this.identities].map(([k, v]) => [k, v.ik, v.dh, v.since]),
      ses: [...this.sessions].map(([k, r]) => [k, sess(r.cur), r.prev.map(sess)]),
      gown: [...this.ownGroupKeys].map(([g, s]) => [g, senderKeyToData(s)]),
      gin: [...this.groupKeys].map(([k, ss]) => [k, ss.map(senderKeyToData)]),
    });
    return body;
  }

  static async deserialize(bytes: Uint8Array, crypto: AsyncCryptoProvider = defaultCrypto): Promise<E2EDevice> {
    const v = unpack(bytes) as any;
    if (!v || typeof v !== "object" || v.v !== STATE_VERSION) {
      throw new Error(`E2EDevice.deserialize: not an E2E state of version ${STATE_VERSION}${v && typeof v === "object" ? ` (found version ${v.v})` : ""}; the file is corrupt or from another program`);
    }
    const identity: IdentityKeys = { ik: { pub: v.id.ik[0], priv: v.id.ik[1] }, dh: { pub: v.id.dh[0], priv: v.id.dh[1] }, dhs: v.id.dhs };
    const cx = e2eCrypto(crypto);
    const dev = new E2EDevice(cx, { u: v.a[0], d: v.a[1] }, identity, await keyVersion(cx, identity.ik.pub, identity.dh.pub));
    dev.spks = v.spk.map((s: any[]) => ({ id: s[0], kp: { pub: s[1], priv: s[2] }, s: s[3], created: s[4] }));
    for (const [id, pub, priv] of v.otk) dev.otks.set(id, { pub, priv });
    dev.nextOtkId = v.no;
    dev.nextSpkId = v.ns;
    for (const [k, ik, dh, since] of v.ids) dev.identities.set(k, { ik, dh, kv: await keyVersion(cx, ik, dh), since });
    const sess = (o: any): Session => {
      const s: Session = { ratchet: ratchetFromData(o.r as RatchetStateData), ad: o.ad, remote: { ik: o.ik, dh: o.dh }, base: o.b, initiator: o.i, created: o.c };
      if (o.p) {
        s.pending = { e: o.p.e, s: o.p.s };
        if (typeof o.p.o === "number") s.pending.o = o.p.o;
      }
      return s;
    };
    for (const [k, cur, prev] of v.ses) dev.sessions.set(k, { cur: sess(cur), prev: prev.map(sess) });
    for (const [g, d] of v.gown) dev.ownGroupKeys.set(g, senderKeyFromData(d as SenderKeyData));
    for (const [k, ss] of v.gin) dev.groupKeys.set(k, (ss as SenderKeyData[]).map(senderKeyFromData));
    return dev;
  }

  /** For tests and diagnostics: how many skipped message keys the current session with `a` holds. */
  skippedKeyCount(a: Address): number {
    return this.sessions.get(addrKey(a))?.cur.ratchet.skipped.size ?? 0;
  }

  /** For diagnostics: a short id of the current session with `a` (hex of its base key). */
  sessionId(a: Address): string | null {
    const r = this.sessions.get(addrKey(a));
    return r ? toHex(r.cur.base).slice(0, 16) : null;
  }
}
