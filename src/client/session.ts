/**
 * The SDK's session layer: one device's login that outlives connections.
 *
 * - Logs in with the device key (auth), and reconnects with the ticket the
 *   last login gave (resume, sent with the hello: one round trip fewer).
 * - Heartbeats find a dead server; reconnects use jittered exponential
 *   backoff, and the server's retry-after (try_again) is a floor.
 * - Deliveries (msg, rcpt, evt) are handed to the API layer once: a
 *   redelivery of one already handled, by (sender, device, id) for messages,
 *   is acknowledged and not handed on again. With autoAck they are
 *   acknowledged after the handler returned (at-least-once), batched into
 *   one `ack` per turn.
 * - Requests (`iq`) are matched to their `res`; a drop fails the pending ones.
 *
 * What the stanzas mean to the application (messages, receipts, groups,
 * sends and their retries) is the API layer's (client.ts).
 */
import { proofTranscript } from "../protocol/auth.ts";
import { ClientCode, CloseReason, ErrorCode } from "../protocol/errors.ts";
import type { Evt, HelloS, MsgS, Rcpt, ServerStanza } from "../protocol/stanzas.ts";
import { HELLO_TIMEOUT_MS, handshake, redirectTarget } from "./handshake.ts";
import { decodeTicket, encodeTicket, resumeFrame, ticketOf, type Ticket } from "./ticket.ts";
import { Wire } from "./wire.ts";
import { conversationOf, deliveryKey, DeliveryDedup } from "./dedup.ts";
import { ClientError, ServerError, type ClientOptions, type CloseInfo, type Code } from "./types.ts";
import type { AnyWire } from "./handshake.ts";

/** What the session tells the layer above. */
export interface SessionHandlers {
  /** Logged in (again), before connect() resolves: emit `ready`, resend what is not `sent`. */
  ready(info: { account: string; device: number }): void;
  /**
   * A stanza for the API layer: a delivery (msg, rcpt, evt, gap) the first
   * time it arrives (with autoAck it is acknowledged once this returns), and
   * sent, err, pres, pst.
   */
  stanza(s: ServerStanza): void;
  close(info: CloseInfo): void;
  reconnecting(info: { attempt: number; delayMs: number }): void;
  /** The session ended for good (no reconnect) other than by close(): fail what is pending with `e`. */
  ended(e: Error): void;
}

/** Reasons after which reconnecting cannot help (as close reasons, or the same strings as the error before a close). */
const FINAL_REASONS = new Set<Code>([CloseReason.AUTH_FAILED, CloseReason.REVOKED, CloseReason.REPLACED, CloseReason.UNSUPPORTED_VERSION, CloseReason.CLIENT_QUIT, CloseReason.ACCOUNT_DISABLED]);

/** How long close() waits for the server to end the connection after our `close` before cutting it. */
const CLOSE_WAIT_MS = 2000;

type Delivery = MsgS | Rcpt | Evt;

/** A delivery being handled under autoAck: `finish` (remember, ack) runs once `holds` is back to 0 after the handlers. */
interface Dispatch {
  holds: number;
  finish: (() => void) | null;
}

type CloseFrame = { r: Code; m?: string; ra?: number };

/** How many times an iq answered `retry_after {lost}` is sent again (request). */
const LOST_RETRIES = 3;

export class Session {
  private wire: AnyWire | null = null;
  /** Server hello of the current connection. */
  hello: HelloS | null = null;
  isReady = false;
  private iqs = new Map<number, { resolve: (r: any) => void; reject: (e: Error) => void }>();
  private iqId = 0;
  /**
   * Deliveries handled: a redelivery is acknowledged and not emitted again. With autoAck, once the handlers ran
   * (and released any hold). Without it, only when the application acknowledges (ack()): until then a redelivery
   * (after a reconnect) is emitted again, at least once, rather than acknowledged behind the application's back.
   */
  private seen = new DeliveryDedup();
  /** Deliveries dropped as duplicates of one already handled (a redelivery, or a resend the server accepted anew, §6.4). */
  duplicates = 0;
  /** autoAck: false only: queue id -> dedup key of deliveries emitted and not yet acknowledged by the application. */
  private unackedKeys = new Map<number, [conversation: string, key: string]>();
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  /** Bounds a login from its hello to its `ready` (heartbeats start only then). */
  private loginTimer: ReturnType<typeof setTimeout> | null = null;
  private lastHeard = 0;
  private attempts = 0;
  private stopped = false;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private closeWaiters: (() => void)[] = [];
  private pendingAcks: number[] = [];
  private ackScheduled = false;
  /** The delivery whose handlers run now (autoAck only), and how many of them hold its ack (holdAck). */
  private dispatching: Dispatch | null = null;
  /** The server asked for confirmations of `sent` on this connection (its hello's `sc`, §6.2). */
  private confirms = false;
  /** `sent` frames received and handled on this connection, and how many of them the server was told of (`ack {sc}`). */
  private sentHeld = 0;
  private sentTold = 0;
  /** Cluster mode (§4.10): the account's home node from the last `redirect`, dialled instead of opts' address until `until`. */
  home: { host: string; port: number; until: number; url?: string } | null = null;
  /** Redirects in a row without reaching READY: past a few, they wait like any reconnect (two nodes that disagree must not spin). */
  private redirects = 0;
  /** The resumption ticket of the last `ready` (§4.11), and where this connection's login stands. */
  private ticket: Ticket | null = null;
  private resuming: "no" | "sent" | "refused" = "no";
  /** opts.ticketSlot has been read (once: after that the ticket in memory is the newer), and its last write. */
  private ticketLoaded = false;
  private ticketWrite: Promise<void> = Promise.resolve();
  /** How the last login went in: with the device key or a ticket; and whether its TLS handshake resumed a session. */
  lastLogin: { kind: "auth" | "resume"; tlsResumed: boolean } | null = null;
  /** Tickets the server refused (then logged in with `auth`). */
  ticketsRefused = 0;
  private tlsSession: Uint8Array | null = null;

  constructor(
    private readonly opts: ClientOptions,
    /** The device's signature of a login transcript (keys.ts fileSigner, or ClientOptions.sign). */
    private readonly sign: (transcript: Uint8Array) => Uint8Array | Promise<Uint8Array>,
    private readonly on: SessionHandlers,
  ) {}

  /** The largest frame body the server accepts (its hello's `mf`). */
  get maxBody(): number {
    return this.hello?.mf ?? Infinity;
  }

  /** Connects and logs in; resolves when the session is ready. Rejects on a final failure (bad key, revoked). */
  connect(): Promise<void> {
    this.stopped = false;
    const p = new Promise<void>((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
    void this.dial();
    return p;
  }

  private async dial(): Promise<void> {
    let failure: ServerError | null = null;
    let closeFrame: CloseFrame | null = null;
    const { account, device } = this.opts.key;
    try {
      const home = this.home !== null && this.home.until > Date.now() ? this.home : null;
      const tickets = this.opts.tickets !== false;
      if (tickets && !this.ticketLoaded) await this.loadTicket();
      const resume = tickets && this.ticket !== null ? await resumeFrame(this.ticket, account, device, this.opts.rx !== false) : null;
      if (resume === null && this.ticket !== null) {
        this.ticket = null; // (nearly) expired
        if (tickets) this.storeTicket();
      }
      this.resuming = resume === null ? "no" : "sent";
      const { wire, hello } = await handshake(
        home ? { ...this.opts, host: home.host, port: home.port, ...(home.url ? { url: home.url } : {}) } : this.opts,
        (s) => {
          if (s.t === "err" && s.e === ErrorCode.TICKET_REFUSED && this.resuming === "sent") return this.ticketRefused();
          if (s.t === "err" && !this.isReady && s.id === undefined) failure ??= new ServerError(s.e, s.m, s.x);
          if (s.t === "close") closeFrame = { r: s.r, m: s.m, ra: s.ra };
          this.onStanza(s);
        },
        () => this.onDrop(failure, closeFrame),
        this.opts.userAgent,
        this.opts.confirmSent !== false,
        // The hello is taken as it arrives: with a resume the `ready` comes in the same read, before this await returns.
        { tickets, sentRides: true, first: resume, tlsSession: this.tlsSession, onHello: (h, w) => this.opened(h, w) },
      );
      // Sign when no resume went out, or when its refusal came before the hello was taken (ticketRefused).
      if (resume === null || (this.resuming as string) === "refused") await this.auth(wire, hello);
      // A path that dies after the hello (no RST, no byte again) held the attempt until TCP gave up on the auth
      // (~15 min of retransmits), the device away all that time: cut it like a missing hello, and reconnect.
      const ms = this.opts.helloTimeoutMs ?? HELLO_TIMEOUT_MS;
      if (!this.isReady && this.wire === wire) this.loginTimer = setTimeout(() => this.wire === wire && !this.isReady && wire.kill(new ClientError(ClientCode.TIMEOUT, `no ready within ${ms} ms of the hello`)), ms);
    } catch (e) {
      // The remembered home is gone (moved, or down): the next attempt asks the address we were given again.
      if (!(e instanceof ServerError)) this.home = null;
      this.onDrop(e instanceof ServerError ? e : null, null, e as Error);
    }
  }

  private opened(hello: HelloS, wire: AnyWire): void {
    this.wire = wire;
    this.hello = hello;
    // Counted per connection: the server's count of `sent` frames is this connection's.
    this.confirms = hello.sc === true;
    this.sentHeld = 0;
    this.sentTold = 0;
    this.lastHeard = Date.now();
  }

  private async auth(wire: AnyWire, hello: HelloS): Promise<void> {
    const { account, device } = this.opts.key;
    this.resuming = "no";
    const sig = await this.sign(proofTranscript("auth", hello.sid, hello.nonce, account, device));
    wire.send(this.opts.rx === false ? { t: "auth", u: account, d: device, sig, rx: false } : { t: "auth", u: account, d: device, sig });
  }

  /** The server refused the ticket (expired, rotated out, restarted, revoked...): sign this connection's nonce instead. */
  private ticketRefused(): void {
    this.ticket = null;
    this.storeTicket();
    this.ticketsRefused++;
    if (this.wire !== null && this.hello !== null) void this.auth(this.wire, this.hello).catch((e) => this.wire?.kill(e as Error));
    else this.resuming = "refused"; // before the hello was taken: dial() signs once it has it
  }

  /** The address the ticket is stored for: the one given (a redirect's home answers a resume sent there with the redirect again). */
  private get server(): string {
    return this.opts.url ?? `${this.opts.host}:${this.opts.port}`;
  }

  /** The ticket a previous process stored (opts.ticketSlot), if it is this device's for this server and readable; else none, and the login signs. */
  private async loadTicket(): Promise<void> {
    this.ticketLoaded = true;
    const slot = this.opts.ticketSlot;
    if (slot === undefined || this.ticket !== null) return;
    const bytes = await slot.load().catch(() => null); // unreadable: as if there were none, the login signs
    if (bytes === null) return;
    this.ticket = decodeTicket(bytes, this.opts.key.account, this.opts.key.device, this.server);
    if (this.ticket === null) this.storeTicket(); // damaged or another server's: removed
  }

  /** Stores the ticket in memory in opts.ticketSlot, or removes the stored one when there is none. A failed write costs the next process a signed login only. */
  private storeTicket(): void {
    const slot = this.opts.ticketSlot;
    if (slot === undefined) return;
    const t = this.ticket;
    const write = () => (t === null ? slot.remove() : slot.save(encodeTicket(t, this.opts.key.account, this.opts.key.device, this.server)));
    this.ticketWrite = this.ticketWrite.then(write).catch(() => {}); // in order: a removal never overtakes an earlier save
  }

  private onDrop(failure: ServerError | null, close: CloseFrame | null, err?: Error): void {
    const wasReady = this.isReady;
    this.isReady = false;
    this.wire = null;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    for (const [, w] of this.iqs) w.reject(new ClientError(ClientCode.CONNECTION_CLOSED, "connection closed"));
    this.iqs.clear();
    const reason: Code = close?.r ?? failure?.code ?? (err ? ClientCode.CONNECT_ERROR : CloseReason.PEER_CLOSED);
    const final = this.stopped || FINAL_REASONS.has(reason) || (!wasReady && failure !== null && FINAL_REASONS.has(failure.code));
    // A login turned away for load (try_again) is retried after the server's delay, also with reconnect: false.
    const redirected = reason === CloseReason.REDIRECT && this.home !== null; // also a ready session whose shard moved
    const willReconnect = !final && (this.opts.reconnect !== false || ((reason === CloseReason.TRY_AGAIN || redirected) && !wasReady));
    this.on.close({ reason, message: close?.m ?? failure?.message ?? err?.message, willReconnect });
    for (const w of this.closeWaiters.splice(0)) w();
    if (!willReconnect) {
      const e = failure ?? new ServerError(reason, close?.m ?? err?.message ?? "connection closed");
      for (const w of this.readyWaiters.splice(0)) w.reject(e);
      if (!this.stopped) this.on.ended(e);
      return;
    }
    // A redirect is followed at once (the home is known and up), a few times in a row; then with backoff.
    const delay = redirected && ++this.redirects <= 3 ? 0 : this.retryDelay(close, failure);
    this.attempts++;
    this.on.reconnecting({ attempt: this.attempts, delayMs: Math.round(delay) });
    setTimeout(() => {
      if (!this.stopped) void this.dial();
    }, delay);
  }

  /**
   * Full jitter, capped: a server restart does not bring every client back in the same millisecond.
   * The server's retry-after (close `ra`, or `x.retry_ms` of the err before it) is a floor (§4.8): wait it plus up to 10 %.
   */
  private retryDelay(close: CloseFrame | null, failure: ServerError | null): number {
    const ra = close?.ra ?? (failure?.detail as { retry_ms?: number } | undefined)?.retry_ms;
    if (typeof ra === "number") return ra * (1 + Math.random() / 10);
    return Math.min(30_000, 250 * 2 ** Math.min(this.attempts, 7)) * (0.5 + Math.random() / 2);
  }

  private onStanza(s: ServerStanza): void {
    this.lastHeard = Date.now();
    switch (s.t) {
      case "ready": {
        this.isReady = true;
        if (this.loginTimer) clearTimeout(this.loginTimer);
        this.lastLogin = { kind: this.resuming === "sent" ? "resume" : "auth", tlsResumed: this.wire instanceof Wire && this.wire.tlsResumed };
        this.resuming = "no";
        if (this.wire instanceof Wire && this.wire.tlsSession !== null) this.tlsSession = this.wire.tlsSession;
        this.ticket = this.hello === null ? null : ticketOf(s, this.hello.sid, this.ticket);
        if (this.opts.tickets !== false) this.storeTicket();
        this.attempts = 0;
        this.redirects = 0;
        const pingMs = this.opts.pingMs ?? (this.hello?.pi ?? 30) * 1000;
        this.pingTimer = setInterval(() => this.heartbeat(pingMs), pingMs);
        this.on.ready({ account: s.u, device: s.d });
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        return;
      }
      case "rcpt":
        // A receipt with `sts` is also the `sent` of its message (hello `sr`, §6.2): handled as that `sent` first.
        if (s.sts !== undefined && s.id !== undefined) this.onStanza({ t: "sent", id: s.id, to: s.w, seq: s.seq, ts: s.sts });
        return this.onDelivery(s);
      case "msg":
      case "evt":
        return this.onDelivery(s);
      case "gap":
        this.on.stanza(s);
        if (this.opts.autoAck !== false) this.queueAck(s.q);
        return;
      case "res": {
        const w = this.iqs.get(s.id);
        if (!w) return;
        this.iqs.delete(s.id);
        if (s.ok) w.resolve(s.r);
        else w.reject(new ServerError(s.e ?? ErrorCode.INTERNAL, s.m ?? "", s.x));
        return;
      }
      case "sent":
        this.on.stanza(s); // the API layer resolved the send: it will never be resent, so its record may go
        if (this.confirms) {
          this.sentHeld++;
          this.scheduleFlush();
        }
        return;
      case "err":
      case "pres":
      case "pst":
      case "call":
        return this.on.stanza(s);
      case "redirect":
        this.home = { ...redirectTarget(this.opts, s), host: s.host, port: s.port, until: Date.now() + s.ttl * 1000 };
        return;
      case "pong":
      case "hello":
      case "linkcode":
      case "close":
        return;
    }
  }

  private onDelivery(s: Delivery): void {
    const key = deliveryKey(s);
    const conversation = conversationOf(s);
    if (this.seen.has(conversation, key)) {
      this.duplicates++;
      this.queueAck(s.q); // a redelivery of something we already handled: ack again, hand on nothing
      return;
    }
    if (this.opts.autoAck === false) {
      this.unackedKeys.set(s.q, [conversation, key]); // before the handlers: one may ack at once
      this.on.stanza(s);
      return;
    }
    const d: Dispatch = { holds: 0, finish: null };
    this.dispatching = d;
    try {
      this.on.stanza(s);
    } finally {
      this.dispatching = null;
    }
    const wire = this.wire;
    const finish = () => {
      this.seen.add(conversation, key);
      if (this.wire === wire) this.queueAck(s.q); // else the next connection redelivers it, and acks that
    };
    // Held (holdAck): handled, and acknowledged, once every holder has released it. Until then a redelivery
    // (after a reconnect) is handed on again: the holder's work is not done, so it must not be acked unseen.
    if (d.holds === 0) finish();
    else d.finish = finish;
  }

  /**
   * Called from a handler of a delivery (msg, rcpt, evt): with autoAck, that delivery is acknowledged once the
   * returned function has been called (by every handler that held it), not when the handlers return. For work a
   * handler starts that must be done before the ack: SecureClient decrypts asynchronously and saves the new
   * ratchet state first. Without autoAck it does nothing (the application acks).
   */
  holdAck(): () => void {
    const d = this.dispatching;
    if (this.opts.autoAck === false) return () => {};
    if (!d) throw new Error("holdAck: call it from a message, receipt or event handler, while the SDK dispatches the delivery to hold");
    d.holds++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--d.holds === 0 && d.finish) d.finish();
    };
  }

  /** What the dedup state holds (dedup.ts): bounded by counts, whatever the traffic. */
  get dedupSize(): { conversations: number; keys: number } {
    return this.seen.size;
  }

  /** Acknowledges deliveries (only needed with autoAck: false). Batched into one `ack` per turn. */
  ack(...qs: number[]): void {
    for (const q of qs) {
      const held = this.unackedKeys.get(q);
      if (held !== undefined) {
        this.unackedKeys.delete(q);
        this.seen.add(...held);
      }
      this.queueAck(q);
    }
  }

  private queueAck(q: number): void {
    this.pendingAcks.push(q);
    this.scheduleFlush();
  }

  /**
   * One `ack` per turn: the queue ids of the turn, and with them the count of `sent` frames held (§6.2), so a
   * confirmation rides on an ack that goes anyway (a bare `ack {sc}` only in a turn with no ack).
   */
  private scheduleFlush(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    queueMicrotask(() => {
      this.ackScheduled = false;
      // Acks for a connection that is gone are dropped: the server redelivers those items anyway (and
      // a new connection counts its own `sent` frames).
      const wire = this.wire;
      const sc = this.sentHeld;
      const tell = sc !== this.sentTold;
      this.sentTold = sc;
      const carried = tell && this.pendingAcks.length > 0;
      while (this.pendingAcks.length) {
        const q = this.pendingAcks.splice(0, 1024);
        wire?.send(tell && this.pendingAcks.length === 0 ? { t: "ack", q, sc } : { t: "ack", q });
      }
      if (tell && !carried) wire?.send({ t: "ack", sc });
    });
  }

  private heartbeat(pingMs: number): void {
    if (!this.wire) return;
    // Two intervals without a byte from the server: it is gone (or the path is), reconnect.
    if (Date.now() - this.lastHeard > 2 * pingMs + 1000) {
      this.wire.kill(new ClientError(ClientCode.TIMEOUT, "server missed its pongs"));
      return;
    }
    this.wire.send({ t: "ping" });
  }

  /**
   * Queues a stanza on the current connection (none: dropped; what must not
   * be lost is resent on `ready` by the layer above). Returns false, queuing
   * nothing, when its body is larger than `maxBody`.
   */
  send(stanza: object, maxBody = Infinity): boolean {
    return this.wire ? this.wire.send(stanza, maxBody) : true;
  }

  /**
   * Sends an iq request; resolves with `r` or rejects with a ServerError. One answered `retry_after` with
   * `x.lost` (cluster mode: the node running it went away after it got it, before it answered; whether it was
   * done is not known, PROTOCOL.md §4.10) is sent again after `x.retry_ms`, up to LOST_RETRIES times; its answer
   * may then say it was done (`group.add`: already a member).
   */
  async request<T = any>(op: string, args?: Record<string, unknown>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.requestOnce<T>(op, args);
      } catch (e) {
        const x = e instanceof ServerError && e.code === ErrorCode.RETRY_AFTER ? (e.detail as { lost?: unknown; retry_ms?: unknown } | undefined) : undefined;
        if (x?.lost !== true || attempt >= LOST_RETRIES) throw e;
        await new Promise((r) => setTimeout(r, typeof x.retry_ms === "number" ? x.retry_ms : 1000)); // the SDK runs in browsers too: no Bun.sleep
      }
    }
  }

  private requestOnce<T>(op: string, args?: Record<string, unknown>): Promise<T> {
    const wire = this.wire;
    if (!wire || !this.isReady) return Promise.reject(new ClientError(ClientCode.NOT_CONNECTED, `request ${op}: not connected; await connect() first`));
    const id = (this.iqId = (this.iqId + 1) >>> 0);
    return new Promise<T>((resolve, reject) => {
      this.iqs.set(id, { resolve, reject });
      wire.send(args ? { t: "iq", id, op, a: args } : { t: "iq", id, op });
    });
  }

  /** Closes the session for good (no reconnect). */
  async close(): Promise<void> {
    this.stopped = true;
    await this.ticketWrite; // a one-shot process exits after close: the ticket of its login is stored by then
    const w = this.wire;
    if (!w) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = new Promise<void>((res) => {
      this.closeWaiters.push(res);
      timer = setTimeout(res, CLOSE_WAIT_MS);
    });
    w.send({ t: "close", r: CloseReason.CLIENT_QUIT });
    w.end();
    await done;
    clearTimeout(timer);
    w.kill();
  }

  /** Cuts the connection as if the network failed (tests, reconnect storms). */
  drop(): void {
    this.wire?.kill(new Error("dropped by the application"));
  }
}
