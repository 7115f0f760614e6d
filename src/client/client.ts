/**
 * The Switchboard SDK: one device's session with a server, over TCP or TLS.
 *
 * - Logs in with the device key (auth), or enrolls / links a new device.
 * - `send()` addresses one payload to each current device of the recipient
 *   and a sync copy to each of our other devices; when the server answers
 *   `devices_mismatch` it refetches the device lists and retries by itself.
 *   It resolves on `sent` (the server holds the message durably).
 * - Incoming messages and receipts are acknowledged after the handlers ran
 *   (at-least-once), duplicates are dropped by (sender, device, id), and each
 *   conversation's messages are emitted in sequence order.
 * - Groups: `createGroup()` and the other group calls, `sendGroup()` (one
 *   payload the server fans out to every member device), and `group` events
 *   for membership changes (in the group's sequence order).
 * - Heartbeats find a dead server; reconnects use jittered exponential
 *   backoff and resend every message not yet `sent` (the server deduplicates).
 *
 * Layers: wire.ts (socket, framing, outbound buffer), session.ts and
 * handshake.ts (login, reconnect, dedup, acks, requests), this file and
 * groups.ts (what the application calls and hears).
 *
 * @example
 * const c = new SwitchboardClient({ host: "127.0.0.1", port: 5222, key: readKeyFile("alice.key") });
 * c.on("message", (m) => console.log(m.from, new TextDecoder().decode(m.payload)));
 * await c.connect();
 * await c.send("bob", "hello");
 */
import { ErrorCode } from "../protocol/errors.ts";
import { isGroupId, type CallC, type Evt, type MsgS, type Rcpt, type ServerStanza } from "../protocol/stanzas.ts";
import { groupEvent } from "./groups.ts";
import { PresenceCalls } from "./presence.ts";
// keys.ts, or in a browser bundle keys-browser.ts (package.json "imports"): node:crypto stays out of pages.
import { fileSigner } from "#node-keys";
import { Session } from "./session.ts";
import { ServerError, type CallSignal, type ClientOptions, type DeviceEvent, type Events, type Receipt, type Sent } from "./types.ts";

export { enrollDevice, linkDevice } from "./handshake.ts";
export { ClientError, ServerError } from "./types.ts";
export type { ClientOptions, CloseInfo, Code, ConnectOptions, DeviceEvent, Events, GroupEvent, GroupInfo, Message, Receipt, Sent } from "./types.ts";

interface Outgoing {
  to: string;
  /** A group message: one payload, fanned out by the server. */
  group: boolean;
  id: string;
  payload: Uint8Array | ((device: number, account: string) => Uint8Array);
  resolve: (s: Sent) => void;
  reject: (e: Error) => void;
  retries: number;
  /** Refused with retry_after: resent, in order with the others, when the retry timer fires. */
  waiting?: boolean;
}

let idCounter = 0;
/** A client message id: unique per device without coordination. */
export function newMessageId(): string {
  return `${Date.now().toString(36)}-${(idCounter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** How often a send refused for a changed device list is prepared and sent again before it fails. */
const DEVICE_RETRIES = 3;

export class SwitchboardClient extends PresenceCalls {
  readonly account: string;
  readonly device: number;
  private readonly session: Session;
  private outgoing = new Map<string, Outgoing>();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private deviceCache = new Map<string, number[]>();
  /** Device-list requests in flight, one per account: 150 sends to a new peer ask once, not 150 times. */
  private deviceFetches = new Map<string, Promise<number[]>>();
  /**
   * 1:1 sends waiting for a device list, in the order they were made. They leave strictly in that order, and
   * while one waits every later send waits behind it. Before this, each send awaited its own lookups, and
   * whichever lookup happened to resolve first went first: with the server's inbound pacing answering
   * requests over several turns, 3 of 150 messages overtook 128 others (test/wire/flow.test.ts, "reads late").
   */
  private preparing: Outgoing[] = [];
  /** Bumped on every `ready`: a pump started for an earlier connection stops. */
  private prepGen = 0;
  /** Generation whose pump is running, or -1. */
  private pumpGen = -1;
  /** Key versions of the devices in deviceCache, by account (0: no keys published). */
  private kvCache = new Map<string, Map<number, number>>();

  constructor(readonly opts: ClientOptions) {
    super();
    this.account = opts.key.account;
    this.device = opts.key.device;
    this.session = new Session(opts, opts.sign ?? fileSigner(opts.key), {
      ready: (info) => {
        this.emit("ready", info);
        this.presenceReady();
        // Resend what was not `sent`, in the order it was made; the server dedups. Whatever waited for a device
        // list on the old connection starts over here, in that same order.
        this.prepGen++;
        this.preparing = [];
        for (const o of this.outgoing.values()) this.transmit(o);
      },
      stanza: (s) => this.onStanza(s),
      close: (info) => this.emit("close", info),
      reconnecting: (info) => this.emit("reconnecting", info),
      ended: (e) => {
        for (const [, o] of this.outgoing) o.reject(e);
        this.outgoing.clear();
      },
    });
  }

  /** Logged in on the current connection. */
  get isReady(): boolean {
    return this.session.isReady;
  }

  /** Server hello of the current connection. */
  get hello() {
    return this.session.hello;
  }

  /**
   * How the current connection logged in: `auth` (the device key) or `resume` (a ticket, §4.11), and whether
   * its TLS handshake resumed the previous connection's session; null before the first `ready`.
   */
  get lastLogin(): { kind: "auth" | "resume"; tlsResumed: boolean } | null {
    return this.session.lastLogin;
  }

  /** Cluster mode: the home node a `redirect` named (host, port, over WebSocket its url; until when it is remembered), or null. */
  get home(): { host: string; port: number; until: number; url?: string } | null {
    return this.session.home;
  }

  /** Connects and logs in; resolves when the session is ready. Rejects on a final failure (bad key, revoked). */
  connect(): Promise<void> {
    return this.session.connect();
  }

  private onStanza(s: ServerStanza): void {
    switch (s.t) {
      case "msg":
        return this.onMessage(s);
      case "rcpt":
        return this.onReceipt(s);
      case "gap":
        return this.emit("gap", { count: s.n, ts: s.ts });
      case "evt":
        return this.onEvent(s);
      case "sent": {
        const o = this.outgoing.get(s.id);
        const sent: Sent = { id: s.id, to: s.to, seq: s.seq, ts: s.ts };
        if (o) {
          this.outgoing.delete(s.id);
          o.resolve(sent);
        }
        this.emit("sent", sent);
        return;
      }
      case "err":
        return this.onError(s.e, s.m, s.id, s.x);
      case "pres":
        return this.onTyping(s);
      case "pst":
        return this.onPst(s);
      case "call": {
        const c: CallSignal = { kind: s.k, id: s.c, from: s.u, ts: s.ts };
        if (s.d !== undefined) c.fromDevice = s.d;
        if (s.p !== undefined) c.payload = s.p;
        if (s.w !== undefined) c.why = s.w;
        if (s.g !== undefined) c.group = s.g;
        return this.emit("call", c);
      }
    }
  }

  /** Sends one call stanza (src/client/calls.ts builds them); false when not connected (signals are never queued). */
  signal(s: CallC): boolean {
    return this.session.send(s);
  }

  private onError(code: string, message: string, id?: string | number, detail?: unknown): void {
    const o = typeof id === "string" ? this.outgoing.get(id) : undefined;
    if (o) {
      if ((code === ErrorCode.DEVICES_MISMATCH || code === ErrorCode.DEVICES_STALE) && o.retries < DEVICE_RETRIES && !o.group) {
        o.retries++;
        this.forgetDevices(o.to);
        this.forgetDevices(this.account);
        this.prepareAndTransmit(o);
        return;
      }
      if (code === ErrorCode.RETRY_AFTER) {
        // Cluster mode: the home shard has no live owner just now; nothing was accepted, so the same id goes again
        // later. One timer for all refused sends, resent in the order they were made: one timer each reordered them.
        o.waiting = true;
        if (this.retryTimer === null) {
          const ms = (detail as { retry_ms?: number } | undefined)?.retry_ms ?? 1000;
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            for (const w of this.outgoing.values()) {
              if (!w.waiting) continue;
              w.waiting = false;
              this.transmit(w);
            }
          }, ms * (1 + Math.random() / 10));
        }
        return;
      }
      this.outgoing.delete(o.id);
      o.reject(new ServerError(code, message, detail));
      return;
    }
    // A read marker the server could not take yet (cluster mode: its peer's home did not answer within the deadline,
    // PROTOCOL.md §4.10); `x` names it. Markers only move forward, so sending it again is harmless: done after retry_ms.
    const read = detail as { retry_ms?: number; u?: unknown; seq?: unknown } | undefined;
    if (code === ErrorCode.RETRY_AFTER && id === undefined && typeof read?.u === "string" && typeof read.seq === "number") {
      const { u, seq } = read as { u: string; seq: number };
      setTimeout(() => this.markRead(u, seq), read.retry_ms ?? 1000);
      return;
    }
    // A login refused while the home shard has no live owner (§4.10: a node down, or the shard moving): `close
    // try_again` follows and the session reconnects after it; nothing failed that the application could act on.
    if (code === ErrorCode.RETRY_AFTER && id === undefined) return;
    this.emit("error", new ServerError(code, message, detail));
  }

  private onMessage(s: MsgS): void {
    const conversation = isGroupId(s.to) || s.from === this.account ? s.to : s.from;
    this.emit("message", { conversation, from: s.from, fromDevice: s.fd, to: s.to, id: s.id, seq: s.seq, ts: s.ts, payload: s.p, sync: s.sync === true, q: s.q });
  }

  private onReceipt(s: Rcpt): void {
    const r: Receipt = { kind: s.k, account: s.u, device: s.d, with: s.w, seq: s.seq, ts: s.ts, q: s.q };
    if (s.id !== undefined) r.id = s.id;
    this.emit("receipt", r);
  }

  private onEvent(s: Evt): void {
    const group = groupEvent(s);
    if (group) this.emit("group", group);
    else if (s.k === "dev" && s.u !== undefined && s.d !== undefined) {
      this.deviceCache.delete(s.u); // our own device list changed
      const ev: DeviceEvent = { op: s.op as DeviceEvent["op"], account: s.u, device: s.d, ts: s.ts };
      if (s.name !== undefined) ev.name = s.name;
      this.emit("device", ev);
    } else if (s.k === "call" && s.u !== undefined && s.c !== undefined) {
      const ev: Events["missedCall"][0] = { from: s.u, fromDevice: s.d ?? 0, id: s.c, ts: s.ts };
      if (s.g !== undefined) ev.group = s.g;
      this.emit("missedCall", ev);
    } else if (s.k === "keys") {
      this.emit("keys", { op: "low", count: s.n ?? 0, ts: s.ts });
    }
  }

  /** Acknowledges deliveries (only needed with autoAck: false). Batched into one `ack` per turn. */
  ack(...qs: number[]): void {
    this.session.ack(...qs);
  }

  /**
   * From a `message`, `receipt` or event handler: the delivery being handled is acknowledged (with autoAck) only
   * once the returned function is called, after the asynchronous work the handler started (SecureClient: the
   * decryption and the save of the new ratchet state). Without autoAck it does nothing.
   */
  holdAck(): () => void {
    return this.session.holdAck();
  }

  /** Sends an iq request; resolves with `r` or rejects with a ServerError. */
  request<T = any>(op: string, args?: Record<string, unknown>): Promise<T> {
    return this.session.request<T>(op, args);
  }

  /** Current device ids of an account (cached until a send is refused with devices_mismatch). */
  async devices(account: string): Promise<number[]> {
    const cached = this.deviceCache.get(account);
    if (cached) return cached;
    let p = this.deviceFetches.get(account);
    if (!p) {
      p = this.fetchDevices(account).finally(() => this.deviceFetches.delete(account));
      this.deviceFetches.set(account, p);
    }
    return p;
  }

  private async fetchDevices(account: string): Promise<number[]> {
    const r = await this.request<{ devices: { d: number; kv?: number }[] }>("devices", { u: account });
    const ids = r.devices.map((d) => d.d);
    this.deviceCache.set(account, ids);
    this.kvCache.set(account, new Map(r.devices.map((d) => [d.d, d.kv ?? 0])));
    return ids;
  }

  /**
   * The key version of a device as last fetched (0: none published). Sends
   * name it, so that a payload encrypted for keys the device has since
   * replaced is refused (`devices_stale`) instead of being undecryptable.
   */
  keyVersion(account: string, device: number): number {
    return this.kvCache.get(account)?.get(device) ?? 0;
  }

  /** Forgets the cached device lists (e.g. after the application fetched fresh key bundles). */
  forgetDevices(account?: string): void {
    if (account === undefined) {
      this.deviceCache.clear();
      this.kvCache.clear();
    } else {
      this.deviceCache.delete(account);
      this.kvCache.delete(account);
    }
  }

  /**
   * Sends a message and resolves when the server holds it durably (`sent`).
   * `payload` is the same bytes for every device, or a function giving each
   * device its own (what end-to-end encryption needs).
   */
  send(to: string, payload: Uint8Array | string | ((device: number, account: string) => Uint8Array), opts: { id?: string } = {}): Promise<Sent> {
    return this.enqueue("send", to, false, payload, opts.id);
  }

  /**
   * Sends one payload to a group (under end-to-end encryption, a sender-key
   * ciphertext); the server queues it for every device of every member.
   * Resolves on `sent`; rejects with not_member, unknown_group, queue_full.
   */
  sendGroup(group: string, payload: Uint8Array | string, opts: { id?: string } = {}): Promise<Sent> {
    if (!isGroupId(group)) return Promise.reject(new Error(`sendGroup: ${JSON.stringify(group)} is not a group id (they start with #); use send() for accounts`));
    return this.enqueue("sendGroup", group, true, payload, opts.id);
  }

  /** Registers a message until its `sent`; transmitted now when ready, else on the next `ready`. */
  private enqueue(call: string, to: string, group: boolean, payload: Outgoing["payload"] | string, id = newMessageId()): Promise<Sent> {
    if (this.outgoing.has(id)) return Promise.reject(new Error(`${call}: message id ${id} is already in flight; use a new id`));
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    return new Promise<Sent>((resolve, reject) => {
      const o: Outgoing = { to, group, id, payload: bytes, resolve, reject, retries: 0 };
      this.outgoing.set(id, o);
      if (!this.isReady) return;
      if (this.retryTimer !== null) {
        o.waiting = true; // behind sends refused with retry_after: it goes after them, not before
        return;
      }
      if (group) this.transmit(o);
      else this.transmit(o);
    });
  }

  /** Queues a 1:1 send behind those waiting for device lists (see `preparing`). */
  private prepareAndTransmit(o: Outgoing): void {
    this.preparing.push(o);
    if (this.pumpGen !== this.prepGen) void this.pump(this.prepGen);
  }

  /** Sends the waiting 1:1 messages in order, each once the device lists it needs are known. */
  private async pump(gen: number): Promise<void> {
    this.pumpGen = gen;
    while (gen === this.prepGen && this.preparing.length > 0) {
      const o = this.preparing[0]!;
      try {
        await this.devices(o.to);
        if (o.to !== this.account) await this.devices(this.account);
      } catch (e) {
        if (gen !== this.prepGen) return;
        this.preparing.shift();
        if (e instanceof ServerError) {
          this.outgoing.delete(o.id);
          o.reject(e);
          continue;
        }
        this.preparing = []; // the connection dropped: `ready` resends everything not `sent`, in order
        break;
      }
      if (gen !== this.prepGen) return;
      // A list forgotten meanwhile (devices_mismatch of another send) is fetched again before this one goes.
      if (!this.hasDevices(o)) continue;
      this.preparing.shift();
      this.frame(o);
    }
    if (this.pumpGen === gen) this.pumpGen = -1;
  }

  private hasDevices(o: Outgoing): boolean {
    return this.deviceCache.has(o.to) && (o.to === this.account || this.deviceCache.has(this.account));
  }

  private transmit(o: Outgoing): void {
    if (!this.isReady) return; // sent on the next `ready`
    if (o.group) return this.put(o, { t: "gmsg", id: o.id, g: o.to, p: o.payload as Uint8Array });
    // Behind any send still waiting for a device list, so that a conversation's messages keep their order.
    if (this.preparing.length > 0 || !this.hasDevices(o)) return this.prepareAndTransmit(o);
    this.frame(o);
  }

  /** A 1:1 message's frame, from the cached device lists (hasDevices(o) holds). */
  private frame(o: Outgoing): void {
    if (!this.isReady) return; // sent on the next `ready`
    const to = this.deviceCache.get(o.to)!;
    const own = this.deviceCache.get(this.account);
    const payloadFor = (d: number, acct: string) => (typeof o.payload === "function" ? o.payload(d, acct) : o.payload);
    const self = o.to === this.account;
    // The key version goes along when known, so that the server can refuse a payload made for replaced keys.
    const entry = (d: number, acct: string) => {
      const kv = this.keyVersion(acct, d);
      return kv ? [d, payloadFor(d, acct), kv] : [d, payloadFor(d, acct)];
    };
    const p = to.filter((d) => !(self && d === this.device)).map((d) => entry(d, o.to));
    const frame: Record<string, unknown> = { t: "msg", id: o.id, to: o.to, p };
    if (!self) {
      const s = own!.filter((d) => d !== this.device).map((d) => entry(d, this.account));
      if (s.length) frame.s = s;
    }
    this.put(o, frame);
  }

  /**
   * Queues a message's frame. Refused here when it would exceed the server's `mf`: the server would close
   * the connection (frame_too_large), and the resend after every reconnect would close it again, forever
   * (each reconnect reached `ready` and reset the backoff: a tight reconnect loop).
   */
  private put(o: Outgoing, frame: object): void {
    const mf = this.session.maxBody;
    if (!this.session.send(frame, mf)) {
      this.outgoing.delete(o.id);
      o.reject(new ServerError(ErrorCode.FRAME_TOO_LARGE, `message ${o.id} is larger than the server accepts (${mf} bytes per frame)`));
    }
  }

  /** Marks everything up to `seq` in the conversation with `peer` as read. */
  markRead(peer: string, seq: number): void {
    this.session.send({ t: "read", u: peer, seq });
  }

  typing(to: string, state: "typing" | "paused" = "typing"): void {
    this.session.send({ t: "pres", to, s: state });
  }

  /**
   * Deliveries the SDK dropped as duplicates of one it had handled (a redelivery after a reconnect, or a
   * sender's resend the server accepted anew after a crash, docs/PROTOCOL.md §6.4): never emitted twice.
   */
  get duplicatesDropped(): number {
    return this.session.duplicates;
  }

  /** The size of the dedup state (src/client/dedup.ts): bounded by counts, however long the session runs. */
  get dedupState(): { conversations: number; keys: number } {
    return this.session.dedupSize;
  }

  /** Messages accepted by `send()` and not yet `sent`. */
  get unsent(): number {
    return this.outgoing.size;
  }

  /** Closes the session for good (no reconnect). */
  close(): Promise<void> {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopPresence();
    return this.session.close();
  }

  /** Cuts the connection as if the network failed (tests, reconnect storms). */
  dropConnection(): void {
    this.session.drop();
  }
}
