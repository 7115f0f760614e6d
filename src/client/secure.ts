/**
 * End-to-end encryption over the SDK: a layer on a SwitchboardClient that
 * publishes this device's keys, sets up a Double Ratchet session with every
 * device it talks to (X3DH from the server's key directory, docs/PROTOCOL.md
 * §5.4), encrypts one payload per device, decrypts what arrives, and does
 * groups with sender keys. The server only ever sees ciphertext.
 *
 * - State (identity, prekeys, sessions, sender keys) lives in one file next
 *   to the device key file (`<key file>.e2e` by convention), mode 0600, or
 *   in a StateStorage record (IndexedDB in a browser), replaced atomically
 *   (and fsynced) after every change and before the change's bytes reach the
 *   socket or the delivery is acknowledged: a ratchet that rolled back after
 *   a crash would reuse message keys (secure-state.ts).
 * - The crypto is asynchronous (WebCrypto is): incoming messages are
 *   decrypted one at a time in arrival order (a sender key that came 1:1 is
 *   installed before the group message it opens), each one's new state saved
 *   before its ack (SwitchboardClient.holdAck) and before its event.
 * - A device whose identity key changes (reinstalled, or a server handing out
 *   other keys) gets a new session, and `identityChanged` is emitted: show
 *   "security code changed" and let the user compare `safetyNumber()`.
 * - The device list of every account we encrypt to is remembered (in the
 *   state file): when it changes (a device added or removed: linked,
 *   enrolled, revoked, or one the server slipped in) `devicesChanged` is
 *   emitted, however we learn of it (a fetched list, a send refused with
 *   `devices_mismatch`, a message from a device we did not know, `evt dev`).
 *   A server that adds a device of its own to an account is seen this way.
 * - A payload the sender could not encrypt for a device (no session yet: a
 *   device the sender did not know of) is a short unencrypted notice; the
 *   sender then fetches that device's keys and sends the message again to it
 *   alone (the others get a "skip" notice that is dropped silently).
 * - One-time prekeys are refilled on `evt keys low` and after connecting;
 *   the signed prekey is rotated when older than `spkMaxAgeMs`.
 * - Groups: one sender-key ciphertext per message (`gmsg`); the sender key
 *   goes to each member device 1:1 through its pairwise session before the
 *   first message it needs, and is replaced after a member leaves or is
 *   removed, or a member's device disappears (docs/E2E.md).
 *
 * @example
 * const c = new SwitchboardClient({ host, port, key: readKeyFile("alice.key") });
 * const s = await SecureClient.open(c, { statePath: "alice.key.e2e" });   // before connect: sees every message
 * s.on("message", (m) => console.log(m.from, m.text));
 * s.on("attachment", (a) => void s.download(a.attachment, `/tmp/${safeFileName(a.attachment)}`));
 * await c.connect();
 * await s.send("bob", "hello, privately");
 * await s.sendFile("bob", "photo.jpg", { type: "image/jpeg" });   // encrypted, uploaded, key sent 1:1
 */
import { TypedEmitter } from "./emitter.ts";
import { isGroupId } from "../protocol/stanzas.ts";
import { newMessageId, type DeviceEvent, type GroupEvent, type Message, type Sent, type SwitchboardClient } from "./client.ts";
import { E2EDevice, encodeEnvelope, pack, type Address, type Bundle, type DecryptOutcome, type GroupDecryptResult } from "./crypto/index.ts";
import { KeyUpkeep } from "./secure-keys.ts";
import { encodeState, readState, slotOf, StateSaver, type SecureState } from "./secure-state.ts";
import { AckHolds, interpret } from "./secure-receive.ts";
import { safetyNumberWith } from "./secure-verify.ts";
import { devKey, Round } from "./secure-round.ts";
import { downloadAttachment, uploadAttachment } from "#media-files";
import { mediaTls, type Attachment, type DownloadOptions, type MediaTls, type UploadOptions } from "./media-format.ts";
import type { UploadSource } from "./media.ts";
import { fetchBytes, uploadBytes } from "./media-web.ts";
import { recipientDevices } from "./secure-media.ts";
import type { DevicesChange, IdentityChange, SecureEvents, SecureMessage, SecureOptions, Undecryptable } from "./secure-types.ts";

export type { DevicesChange, IdentityChange, SecureAttachment, SecureMessage, SecureOptions, Undecryptable } from "./secure-types.ts";
export { MediaError, safeFileName, type Attachment, type DownloadOptions, type MediaTls, type Progress, type UploadOptions } from "./media-format.ts";
export type { UploadSource } from "./media.ts";
export { statePathFor, type SecureState } from "./secure-state.ts";

/** Payload for a device that already has this message (a resend to others): dropped silently by the receiver. */
const SKIP = encodeEnvelope({ t: 0, r: "skip" });
/** Most sends of one message (the first, plus resends to devices that had no session). */
const MAX_ROUNDS = 3;

const te = new TextEncoder();
/** A group decryption's result in the shape of a 1:1 one (no session, no identity involved). */
const groupOutcome = (r: GroupDecryptResult): DecryptOutcome => (r.ok ? { ok: true, plaintext: r.plaintext, newSession: false, identityChanged: false } : r);

export class SecureClient extends TypedEmitter<SecureEvents> {
  readonly e2e: E2EDevice;
  private readonly saver: StateSaver;
  /** The end of the chain of incoming work (messages, group and device events), in arrival order. */
  private rx: Promise<void> = Promise.resolve();
  /** The last save failed: the state in memory is ahead of the stored one. */
  private unsaved = false;
  /** The application's holds on the ack of the incoming delivery whose event is emitted (holdAck). */
  private readonly holds = new AckHolds();
  /** Devices that hold our current sender key, by group: `account\0device\0kv`. */
  private distributed = new Map<string, Set<string>>();
  /** The device list last seen of each account we encrypt to (our own device excluded), persisted. */
  private knownDevices = new Map<string, number[]>();
  /** `account\0device` of senders not in knownDevices whose account's list was refetched once already. */
  private checkedSenders = new Set<string>();
  private fetching = new Map<string, Promise<void>>();
  /** The end of the chain of send preparations (see inOrder). */
  private prepared: Promise<unknown> = Promise.resolve();
  /** This device's keys on the server: published on each connection, topped up (secure-keys.ts). */
  private keys: KeyUpkeep;

  /**
   * Loads (or creates, and saves) this device's state, then attaches to `client`. Call it before `connect()`
   * to see every message. Rejects, with the fix, for a state that is not this device's.
   */
  static async open(client: SwitchboardClient, opts: SecureOptions): Promise<SecureClient> {
    return new SecureClient(client, opts, await SecureClient.load(client, opts));
  }

  /** The state open() starts from (for a caller that constructs itself, like the CLI's event filter). */
  static async load(client: SwitchboardClient, opts: SecureOptions): Promise<SecureState> {
    const me = { u: client.account, d: client.device };
    const slot = slotOf(opts);
    const state = await readState(slot, me, opts.crypto);
    if (state !== null) return state;
    const fresh: SecureState = { e2e: await E2EDevice.create(me, opts.crypto), distributed: new Map(), knownDevices: new Map() };
    await slot.save(encodeState(fresh)); // the identity exists before anyone can see it
    return fresh;
  }

  /** Attaches a state from SecureClient.load to `client`; SecureClient.open does both. */
  constructor(readonly client: SwitchboardClient, readonly opts: SecureOptions, state: SecureState) {
    super();
    this.e2e = state.e2e;
    this.distributed = state.distributed;
    this.knownDevices = state.knownDevices;
    this.saver = new StateSaver(slotOf(opts), () => encodeState({ e2e: this.e2e, distributed: this.distributed, knownDevices: this.knownDevices }));
    this.keys = new KeyUpkeep(client, this.e2e, opts, () => this.save(), (e) => this.emit("error", e));
    client.on("message", (m) => this.onMessage(m));
    client.on("ready", () => this.keys.onReady());
    client.on("keys", (k) => void this.keys.refill(k.count).catch((e) => this.emit("error", e as Error)));
    client.on("group", (ev) => this.incoming(() => this.onGroupEvent(ev)));
    client.on("device", (ev) => this.incoming(() => this.onDeviceEvent(ev)));
    if (client.isReady) this.keys.onReady();
  }

  /**
   * Resolves when this device's keys are published and topped up (on the latest connection; before the first
   * one, once it is). Rejects with the server's error when it refuses them.
   */
  whenPublished(): Promise<void> {
    return this.keys.whenPublished();
  }

  // ---- persistence (the format: secure-state.ts) ------------------------------

  /** Stores the state; resolves once a snapshot taken now or later is stored (atomically: the old state or the new one after a crash). */
  save(): Promise<void> {
    return this.saver.save().then(
      () => void (this.unsaved = false),
      (e) => {
        this.unsaved = true;
        throw e;
      },
    );
  }

  /** A save nobody waits for (a change that gates no bytes): its failure is an `error` event. */
  private dirty(): void {
    this.save().catch((e) => this.emit("error", e as Error));
  }

  /**
   * Runs `work` after the incoming work before it, holding the delivery's ack until it is done: the state it
   * changed is saved before the server may drop the delivery (called from a client handler, synchronously).
   */
  private incoming(work: () => Promise<void>): void {
    const release = this.client.holdAck();
    this.rx = this.rx
      .then(async () => {
        if (this.unsaved) await this.save(); // a save failed before: nothing is acknowledged until one succeeds
        await work();
      })
      .then(release, (e) => void this.emit("error", e as Error)); // not acknowledged: the next connection redelivers it
  }

  // ---- sessions -------------------------------------------------------------------------------

  /**
   * Makes sure we have a session with every current device of `account` that
   * published keys, for its current key version: fetches bundles for the
   * devices that lack one (only those, so no other one-time prekey is spent).
   */
  async ensureSessions(account: string): Promise<void> {
    const c = this.client;
    const ids = await c.devices(account);
    this.noteDevices(account, ids);
    const need: number[] = [];
    for (const d of ids) {
      if (account === c.account && d === c.device) continue;
      const kv = c.keyVersion(account, d);
      if (kv === 0) continue; // no keys published: it gets a notice
      const addr = { u: account, d };
      if (!this.e2e.hasSession(addr) || this.e2e.knownIdentity(addr)?.kv !== kv) need.push(d);
    }
    if (need.length) await this.fetchBundles(account, need);
  }

  /** One fetch per account at a time: concurrent sends must not each spend a one-time prekey of the same devices. */
  private fetchBundles(account: string, devices: number[]): Promise<void> {
    const running = this.fetching.get(account);
    if (running) return running.then(() => this.ensureSessions(account));
    const p = (async () => {
      const r = await this.client.request<{ bundles: (Bundle & { d: number; kv: number })[] }>("keys.fetch", { u: account, d: devices });
      let stale = false;
      for (const b of r.bundles) {
        const addr = { u: account, d: b.d };
        const res = await this.e2e.processBundle(addr, b);
        if (!res.ok) {
          this.emit("error", new Error(`key bundle of ${account} device ${b.d} refused: ${res.reason}`));
          continue;
        }
        if (res.identityChanged) this.emit("identityChanged", { account, device: b.d, kv: b.kv, previousKv: res.previous?.kv ?? 0 });
        if (b.kv !== this.client.keyVersion(account, b.d)) stale = true;
      }
      if (stale) this.client.forgetDevices(account); // the client's key versions are older than the bundles
      await this.save();
    })().finally(() => this.fetching.delete(account));
    this.fetching.set(account, p);
    return p;
  }

  /**
   * Sends `inner` 1:1 to every device of `to` (and our other devices), in up to MAX_ROUNDS rounds: devices the
   * first round could not encrypt for get the message in a later one, the others a skip notice.
   */
  private async sendInner(
    to: string,
    inner: Uint8Array,
    only?: (account: string, d: number, kv: number) => boolean,
    prepared = false,
  ): Promise<{ sent: Sent; reached: Set<string> }> {
    const c = this.client;
    let first: Sent | null = null;
    let targets: Set<string> | null = null;
    const reached = new Set<string>();
    for (let attempt = 0; attempt < MAX_ROUNDS; attempt++) {
      // prepared: the caller has just set up the sessions (inOrder), so the first round transmits at once.
      if (attempt > 0 || !prepared) await this.ensureSessions(to);
      if ((attempt > 0 || !prepared) && to !== c.account) await this.ensureSessions(c.account);
      const t = targets;
      const want = (account: string, d: number) => (!t || t.has(devKey(account, d))) && (!only || only(account, d, c.keyVersion(account, d)));
      const round = new Round(c, this.e2e);
      if (await round.seal(to, inner, want)) await this.save(); // the ratchet steps are stored before any ciphertext leaves
      const sent = await c.send(to, (d, account) => (want(account, d) ? round.pick(account, d) : SKIP), { id: newMessageId() });
      first ??= sent;
      // The payloads of a refused transmission (devices_mismatch, devices_stale) were made for an older device
      // list: count only devices of the list the accepted one used (the client's cache, refreshed by the refusal).
      const live = new Set<string>();
      for (const a of to === c.account ? [to] : [to, c.account]) {
        const ids = await c.devices(a); // refetched when the send was refused with devices_mismatch
        this.noteDevices(a, ids);
        for (const d of ids) live.add(devKey(a, d));
      }
      for (const k of round.encrypted) if (live.has(k.slice(0, k.lastIndexOf("\u0000")))) reached.add(k);
      const missed = new Set([...round.missed].filter((k) => live.has(k)));
      if (missed.size === 0) break;
      targets = missed;
      if (attempt === MAX_ROUNDS - 1) {
        const who = [...missed].map((k) => k.replace("\u0000", " device ")).join(", ");
        this.emit("error", new Error(`message ${first.id} to ${to}: no session could be set up with ${who}; those devices did not get it`));
      }
    }
    return { sent: first!, reached };
  }

  /** Sends an end-to-end encrypted message; resolves on the server's `sent` for it. */
  send(to: string, body: string | Uint8Array): Promise<Sent> {
    return this.sendContent(to, pack({ k: "m", b: typeof body === "string" ? te.encode(body) : body }));
  }

  /**
   * Encrypts a file (a path, or a stream; or bytes in hand, a Uint8Array or a Blob: media-web.ts, the way in a
   * browser) under a fresh key, uploads the ciphertext to the server (media.ts:
   * tus, resumed after a dropped connection or a server restart) and sends its key, digest and size to `to` (an
   * account or a group) in an end-to-end encrypted message. Resolves on the message's `sent`; rejects with a
   * MediaError (`too_large`, `quota`, ...) or the send's error. The server never sees the key, the type or the name;
   * only one that deletes blobs after their downloads (hello `dd`) learns how many devices get it (secure-media.ts).
   */
  async sendFile(to: string, source: UploadSource | Uint8Array | Blob, opts: UploadOptions = {}): Promise<{ sent: Sent; attachment: Attachment }> {
    const n = opts.recipients ?? (this.client.hello?.dd ? await recipientDevices(this.client, to, (a) => this.ensureSessions(a)) : undefined);
    opts = { tls: mediaTls(this.client.opts), ...opts }; // the blob URL is trusted as the connection is (MediaTls)
    const request = <T>(op: string, args?: Record<string, unknown>) => this.client.request<T>(op, args);
    let attachment: Attachment;
    if (typeof Blob !== "undefined" && source instanceof Blob) {
      const name = opts.name ?? ((source as { name?: unknown }).name as string | undefined) ?? undefined;
      attachment = await uploadBytes(this.e2e.cx, request, new Uint8Array(await source.arrayBuffer()), { ...opts, name, type: opts.type ?? (source.type || undefined), recipients: n });
    } else if (source instanceof Uint8Array) attachment = await uploadBytes(this.e2e.cx, request, source, { ...opts, recipients: n });
    else attachment = await uploadAttachment(request, source as UploadSource, { ...opts, recipients: n });
    const sent = await this.sendContent(to, pack({ k: "att", att: attachment }));
    return { sent, attachment };
  }

  /**
   * Downloads an attachment an `attachment` event gave, checks its digest and MAC, and writes the plaintext to
   * `dest` (nothing is written when a check fails: a MediaError `bad_digest`, `bad_mac`, `gone`, ...).
   */
  download(att: Attachment, dest: string, opts: DownloadOptions = {}): Promise<{ path: string; size: number }> {
    return downloadAttachment(att, dest, { tls: mediaTls(this.client.opts), ...opts });
  }

  /** Downloads an attachment into memory and resolves with its plaintext once checked (digest, MAC): a browser's download. */
  fetchAttachment(att: Attachment, opts: { stallMs?: number; tls?: MediaTls } = {}): Promise<Uint8Array> {
    return fetchBytes(this.e2e.cx, att, { tls: mediaTls(this.client.opts), ...opts });
  }

  /** Sends packed content (`{k: ...}`) 1:1 or to a group, in the order of the calls. */
  private async sendContent(to: string, inner: Uint8Array): Promise<Sent> {
    if (isGroupId(to)) {
      const { p } = await this.inOrder(() => this.prepareGroup(to, inner));
      return p;
    }
    const { p } = await this.inOrder(async () => {
      await this.ensureSessions(to);
      if (to !== this.client.account) await this.ensureSessions(this.client.account);
      return { p: this.sendInner(to, inner, undefined, true) };
    });
    return (await p).sent;
  }

  /**
   * Runs a send's preparation (device lists, sessions, key distribution) after every earlier send's, and its
   * first transmission inside it, so that messages leave in the order send() was called. Without it, whichever
   * preparation finished first went first (a bundle fetch for one send, a cache hit for the next one), and a
   * client could reorder its own conversation. `step` returns its send's promise wrapped, so that the chain
   * waits for the transmission, not for the `sent`.
   */
  private inOrder<T extends { p: Promise<unknown> }>(step: () => Promise<T>): Promise<T> {
    const run = this.prepared.then(step);
    this.prepared = run.then(
      (r) => void r.p.catch(() => {}), // the caller awaits r.p and sees its rejection
      () => undefined,
    );
    return run;
  }

  // ---- groups ---------------------------------------------------------------------------------

  /**
   * Sends an end-to-end encrypted group message: hands our sender key to
   * member devices that lack it (1:1, through their sessions), then sends one
   * sender-key ciphertext for the server to fan out.
   */
  sendGroup(g: string, body: string | Uint8Array): Promise<Sent> {
    return this.sendContent(g, pack({ k: "m", b: typeof body === "string" ? te.encode(body) : body }));
  }

  /** sendGroup's work up to the transmission (inOrder): key hand-outs first, then the sender-key ciphertext. */
  private async prepareGroup(g: string, inner: Uint8Array): Promise<{ p: Promise<Sent> }> {
    const c = this.client;
    const info = await c.groupInfo(g);
    const accounts = [...new Set([...info.members.map((m) => m.u), c.account])];
    await Promise.all(accounts.map((a) => this.ensureSessions(a)));
    const current = new Set<string>();
    for (const a of accounts) for (const d of await c.devices(a)) if (!(a === c.account && d === c.device)) current.add(devKey(a, d));

    let have = this.distributed.get(g);
    // Someone who held our key is gone (left, removed, a device revoked): a new key they do not get.
    if (have && this.e2e.hasGroupKey(g) && [...have].some((k) => !current.has(k.slice(0, k.lastIndexOf("\u0000"))))) {
      await this.e2e.rotateGroupKey(g);
      have = undefined;
    }
    if (!have || !this.e2e.hasGroupKey(g)) {
      have = new Set();
      this.distributed.set(g, have);
    }
    const dm = pack({ k: "skd", d: await this.e2e.groupDistribution(g) });
    await this.save(); // our sender key is stored before any of its messages can leave
    const holders = have;
    for (const a of accounts) {
      const lacking = (await c.devices(a)).filter((d) => !(a === c.account && d === c.device) && c.keyVersion(a, d) !== 0 && !holders.has(`${devKey(a, d)}\u0000${c.keyVersion(a, d)}`));
      if (lacking.length === 0) continue;
      // To `a` (its devices that lack the key); our own other devices ride along as sync copies when they lack it too.
      const { reached } = await this.sendInner(a, dm, (acct, d, kv) => !holders.has(`${devKey(acct, d)}\u0000${kv}`) && (acct === a || acct === c.account));
      for (const k of reached) holders.add(k);
      this.dirty();
    }
    const ct = await this.e2e.groupEncrypt(g, inner);
    await this.save(); // the chain step is stored before the ciphertext leaves
    return { p: c.sendGroup(g, ct) };
  }

  private async onGroupEvent(ev: GroupEvent): Promise<void> {
    const me = this.client.account;
    if ((ev.op === "remove" || ev.op === "leave") && ev.members.includes(me)) {
      this.e2e.forgetGroup(ev.group);
      this.distributed.delete(ev.group);
      await this.save();
    } else if ((ev.op === "remove" || ev.op === "leave") && this.e2e.hasGroupKey(ev.group)) {
      // Whoever left holds our current key: the next message goes under a new one.
      await this.e2e.rotateGroupKey(ev.group);
      this.distributed.delete(ev.group);
      await this.save();
    }
    // add: nothing to do now; new member devices get our current key before our next message (from its current position only).
  }

  private async onDeviceEvent(ev: DeviceEvent): Promise<void> {
    if (ev.op === "revoked") {
      this.e2e.forgetDevice({ u: ev.account, d: ev.device });
      await this.save();
    }
    this.recheckDevices(ev.account);
  }

  /**
   * Reports how the device list of `account` changed, from a list fetched now. The client's cached list is
   * dropped (its next send fetches one) rather than replaced by this one: a device announced by `evt dev
   * linked` may not have published its keys yet, and a cached key version 0 would keep sending it notices.
   */
  private recheckDevices(account: string): void {
    const c = this.client;
    c.forgetDevices(account);
    c.request<{ devices: { d: number }[] }>("devices", { u: account }).then(
      (r) => this.noteDevices(account, r.devices.map((x) => x.d)),
      (e) => {
        if (c.isReady) this.emit("error", e as Error); // else: seen again on the next send or list
      },
    );
  }

  /**
   * Compares a device list of `account` just fetched with the one remembered, and remembers it: emits
   * `devicesChanged` when devices came or went. The first list of an account is taken as it is.
   */
  private noteDevices(account: string, ids: readonly number[]): void {
    const c = this.client;
    const now = ids.filter((d) => !(account === c.account && d === c.device));
    const before = this.knownDevices.get(account);
    if (before && before.length === now.length && before.every((d, i) => d === now[i])) return;
    this.knownDevices.set(account, [...now]);
    this.dirty();
    if (!before) return;
    const added = now.filter((d) => !before.includes(d));
    const removed = before.filter((d) => !now.includes(d));
    if (added.length || removed.length) this.emit("devicesChanged", { account, added, removed });
  }

  // ---- receiving ----------------------------------------------------------------------------

  private onMessage(m: Message): void {
    // A device we did not know of wrote: its account's list changed (once per device, the list is fetched again).
    const known = this.knownDevices.get(m.from);
    const sender = devKey(m.from, m.fromDevice);
    if (known && !known.includes(m.fromDevice) && !(m.from === this.client.account && m.fromDevice === this.client.device) && !this.checkedSenders.has(sender)) {
      this.checkedSenders.add(sender);
      this.recheckDevices(m.from);
    }
    this.incoming(() => this.receive(m));
  }

  /** Decrypts one message (after the ones before it), emits what it carried, and stores the new state (then incoming acks). */
  private async receive(m: Message): Promise<void> {
    const from: Address = { u: m.from, d: m.fromDevice };
    const base = { conversation: m.conversation, from: m.from, fromDevice: m.fromDevice, id: m.id, seq: m.seq };
    const group = isGroupId(m.to);
    const r: DecryptOutcome = group ? groupOutcome(await this.e2e.groupDecrypt(m.to, from, m.payload)) : await this.e2e.decrypt(from, m.payload);
    if (!r.ok) {
      // A skip notice is a resend meant for other devices; no_session is followed by a resend once the sender
      // has our keys (it reports the devices it could not reach); a duplicate is a redelivery of what we already decrypted.
      if (r.reason === "duplicate") return;
      if (r.reason === "notice" && (r.notice === "skip" || r.notice === "no_session")) return;
      this.emit("undecryptable", { ...base, reason: r.reason === "notice" ? `notice:${r.notice}` : r.reason });
      return;
    }
    const emit = interpret(m, r.plaintext, group, (dm) => this.e2e.processGroupDistribution(from, dm) !== null);
    if (r.identityChanged) {
      this.client.forgetDevices(m.from);
      this.emit("identityChanged", { account: m.from, device: m.fromDevice, kv: this.e2e.knownIdentity(from)!.kv, previousKv: r.previous?.kv ?? 0 });
    }
    // Emitted before the save, acknowledged after it: a failed save leaves it unacknowledged, and its redelivery
    // (a duplicate to the ratchet in memory) is acknowledged once a save succeeds; seen once either way. The
    // handlers' holds first: a process gone before they release has stored neither, so the redelivery decrypts.
    await this.holds.during(() => emit && (this.emit as (...a: unknown[]) => boolean)(...emit));
    await this.save();
  }

  /**
   * From a handler of an incoming message's event (message, attachment, reaction…), while it runs: the delivery
   * is acknowledged, and its ratchet state stored, once the returned function is called, so that the
   * application's own save (a page's history) is done first; call it after a failed save too (nothing after
   * it is decrypted until then). docs/E2E.md, "Holding the ack".
   */
  holdAck(): () => void {
    return this.holds.take();
  }

  // ---- verification -----------------------------------------------------------------------------

  /**
   * The 60-digit safety number with `account` (crypto/safety.ts): covers every current device with keys of both
   * accounts, so it changes when either side adds, removes or re-keys a device. Compare it out of band.
   */
  async safetyNumber(account: string): Promise<string> {
    return safetyNumberWith(this.client, this.e2e, (a) => this.ensureSessions(a), account);
  }

  /** Waits for the incoming work queued so far, then stores the state; detaches nothing. Call before exiting (it is also saved after every change). */
  async close(): Promise<void> {
    await this.rx;
    await this.save();
  }
}
