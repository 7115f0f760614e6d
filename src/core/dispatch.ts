/**
 * Dispatch: a valid stanza to what handles it, by the session's state
 * (docs/PROTOCOL.md §4.1). Login stanzas go to Sessions, acks to Delivery,
 * everything a module registered to the hooks (iq ops, `link.approve`
 * included, and msg/gmsg/read/pres). Refusals go back through the
 * transport's `reject`, which charges the error budget.
 */
import { CloseReason, ErrorCode } from "../protocol/errors.ts";
import { echoableId, isGroupId, type ClientStanza } from "../protocol/stanzas.ts";
import { ConnState, type Conn } from "../transport/connection.ts";
import type { Accept } from "./accept.ts";
import type { Config } from "./config.ts";
import { log } from "./log.ts";
import type { Delivery } from "./delivery.ts";
import type { Hooks } from "./hooks.ts";
import type { Counter } from "./metrics.ts";
import type { IqReply, Registration, ShardRows } from "./module.ts";
import type { KeyedTokenBuckets } from "./ratelimit.ts";
import type { Sessions } from "./session.ts";
import { COMMIT_RETRY_MS, type StorageAlarm } from "../store/errors.ts";

type Reject = (conn: Conn, code: ErrorCode, message: string, id?: string | number) => void;

/** Cluster mode's gates (src/core/cluster/node.ts): true when they answered and the stanza goes no further. */
export interface ClusterGates {
  login(conn: Conn, account: string): boolean;
  /**
   * A send: true when answered; false to go on now; or a wait for another node (the conversation's number), which
   * gives the wrapper to run the module in (null: answered meanwhile). Later sends of the connection wait behind it.
   */
  send(conn: Conn, to: string | null, id: string): boolean | Promise<SendPass | null>;
  /** A send queued behind one that was refused on the same connection: refused too (retry_after), to keep the order. */
  refuseBehind(conn: Conn, id: string): void;
  /** Before an iq or a `read`: a wait for what another node must answer first (a remote account's devices), or null. */
  prefetch(op: string, a: Record<string, unknown> | undefined, caller: string): Promise<void> | null;
  /** Before a group operation: true when it went to the group's node (or was refused with retry_after). */
  group(conn: Conn, gid: string, s: ClientStanza): boolean;
  /** Before an iq: true when it went to another node (a group's, a remote account's home) or was refused with retry_after. */
  iq(conn: Conn, s: Extract<ClientStanza, { t: "iq" }>): boolean;
  /** Counts an iq or `read` answered retry_after after waiting cluster.iq_timeout for another node (a metric). */
  waitTimedOut(what: "iq" | "read"): void;
}

/** Runs a send's module dispatch (`go`) with what the cluster gate fetched for it (ClusterGates.send). */
export type SendPass = (go: () => void) => void;

export class Dispatch {
  /** Set by the server in cluster mode; null on a single node, where it costs one null check per login and per send. */
  cluster: ClusterGates | null = null;
  /** Per connection, the last send waiting at the cluster gate: its later sends wait behind it, in order. */
  private waiting = new WeakMap<Conn, { p: Promise<void>; refused: boolean }>();

  constructor(
    private readonly config: Config,
    private readonly sessions: Sessions,
    private readonly delivery: Delivery,
    private readonly hooks: Hooks,
    private readonly reject: Reject,
    /** Per-account send rate (limits.send_rate), or null when unlimited. */
    private readonly sendLimit: KeyedTokenBuckets | null,
    private readonly refusedSends: Counter,
    /** Store files that cannot commit: new sends are refused while there are any. */
    private readonly storage: StorageAlarm | null = null,
    /** The acceptance service, for confirmations of `sent` (`ack {sc}`). */
    private readonly accept: Accept | null = null,
  ) {}

  /** Core's own iq ops, registered to the hooks like a module's, so that every stanza takes one path. */
  static coreRegistrations(sessions: Sessions): Registration[] {
    return [
      {
        iq: "link.approve",
        handle: (conn: Conn, a: Record<string, unknown>): IqReply => {
          const code = a.code;
          if (typeof code !== "string") return { ok: false, e: ErrorCode.BAD_FIELD, m: "a.code must be a string" };
          const r = sessions.approve(conn, code);
          return r.ok ? { ok: true, r: { d: r.device } } : { ok: false, e: r.e, m: r.m };
        },
      },
      // Cluster: a moving shard's ticket keys and replay record go with it (tickets.ts), so its devices resume at the new home.
      { hook: "shard:rows", handle: (o: ShardRows) => sessions.tickets.shardRows(o) },
    ];
  }

  stanza(conn: Conn, s: ClientStanza): void {
    switch (conn.state) {
      case ConnState.HELLO:
        if (s.t !== "hello") {
          conn.sendError(ErrorCode.HELLO_REQUIRED, "the first frame must be hello");
          conn.close(CloseReason.PROTOCOL_ERROR, "the first frame must be hello");
          return;
        }
        return this.sessions.hello(conn, s);
      case ConnState.AUTH:
        switch (s.t) {
          case "auth": if (this.cluster?.login(conn, s.u)) return; return this.sessions.auth(conn, s);
          case "resume": if (this.cluster?.login(conn, s.u)) return; return this.sessions.resume(conn, s);
          case "enroll": if (this.cluster?.login(conn, s.u)) return; return this.sessions.enroll(conn, s);
          case "link": if (this.cluster?.login(conn, s.u)) return; return this.sessions.link(conn, s);
          case "ping": return conn.send(pong(s.n));
          case "close": return conn.close(CloseReason.CLIENT_QUIT);
          default: return this.reject(conn, ErrorCode.NOT_AUTHENTICATED, `${s.t} is not allowed before authentication`, idOf(s));
        }
      case ConnState.LINKING:
        switch (s.t) {
          case "ping": return conn.send(pong(s.n));
          case "close": return conn.close(CloseReason.CLIENT_QUIT);
          default: return this.reject(conn, ErrorCode.NOT_AUTHENTICATED, "waiting for the link to be approved", idOf(s));
        }
      case ConnState.READY:
        switch (s.t) {
          // A non-receiving session was pushed nothing: its acks name none of its items, and are ignored as foreign ids are.
          case "ack": {
            // `sc`: the sender holds that many `sent` frames of this connection (§6.2), also a non-receiving one's.
            if (s.sc !== undefined && this.accept !== null && !this.accept.confirm(conn, s.sc)) {
              this.reject(conn, ErrorCode.BAD_FIELD, `ack.sc ${s.sc} counts more sent frames than this connection was sent`);
            }
            if (s.q === undefined) {
              if (s.sc === undefined) this.reject(conn, ErrorCode.BAD_FIELD, "ack needs q (queue ids) or sc (sent frames held), or both");
              return;
            }
            return conn.rx ? this.delivery.ack(conn, s.q) : undefined;
          }
          case "ping": return conn.send(pong(s.n));
          case "iq": {
            const id = s.id;
            if (this.cluster !== null && this.cluster.iq(conn, s)) return; // a group's op, or one only a remote account's home answers
            const pre = this.cluster === null ? null : this.cluster.prefetch(s.op, s.a, conn.account); // a remote account's devices: from its home first
            if (pre !== null) return this.afterPrefetch(conn, s, pre);
            void this.hooks.dispatchIq(s.op, conn, s.a ?? {}).then((r) => conn.send(resOf(id, r)));
            return;
          }
          case "close": return conn.close(CloseReason.CLIENT_QUIT);
          case "hello": case "auth": case "resume": case "enroll": case "link":
            return this.reject(conn, ErrorCode.ALREADY_AUTHENTICATED, `${s.t} is only valid before authentication`);
          default:
            if (this.sendLimit !== null && (s.t === "msg" || s.t === "gmsg") && this.sendLimited(conn, s.id)) return;
            if (this.cluster !== null && (s.t === "msg" || s.t === "gmsg")) return this.clusterSend(conn, s, s.t === "msg" ? s.to : null, s.id);
            if (this.cluster !== null && s.t === "read") {
              const pre = this.cluster.prefetch("read", { u: s.u }, conn.account); // a remote peer's entry: from its home first
              if (pre !== null) return this.afterPrefetchRead(conn, s, pre);
            }
            return this.toModule(conn, s);
        }
    }
  }

  /**
   * An iq that waits for another node's answer first (ClusterGates.prefetch: the devices of accounts homed there). A
   * hung node (SIGSTOPped, stuck) keeps its link up, so no drop ends that wait: after cluster.iq_timeout the iq is
   * answered retry_after instead (the module never ran: nothing was done), as a forwarded one is (cluster/ops.ts).
   */
  private afterPrefetch(conn: Conn, s: Extract<ClientStanza, { t: "iq" }>, pre: Promise<void>): void {
    this.deadline(pre, (ok, ms, retry) => {
      if (ok) return void this.hooks.dispatchIq(s.op, conn, s.a ?? {}).then((r) => conn.send(resOf(s.id, r)));
      this.cluster?.waitTimedOut("iq");
      conn.send({ t: "res", id: s.id, ok: false, e: ErrorCode.RETRY_AFTER, m: `another node did not answer within ${ms} ms what ${s.op} needs from it; nothing was done: send it again (in ${retry} ms)`, x: { retry_ms: retry } });
    });
  }

  /**
   * A `read` marker whose peer's entry is asked of its home first: the same deadline. It has no id and no answer on
   * success, so the refusal is an `err retry_after` without id that names the marker (`x.u`, `x.seq`): the SDK sends
   * that marker again after `retry_ms` (markers only move forward, so a resend is harmless), instead of the marker
   * waiting without end behind a hung node.
   */
  private afterPrefetchRead(conn: Conn, s: Extract<ClientStanza, { t: "read" }>, pre: Promise<void>): void {
    this.deadline(pre, (ok, ms, retry) => {
      if (conn.state !== ConnState.READY) return;
      if (ok) return this.toModule(conn, s);
      this.cluster?.waitTimedOut("read");
      conn.send({ t: "err", e: ErrorCode.RETRY_AFTER, m: `the home of ${s.u} did not answer within ${ms} ms; the read marker was not taken: send it again (in ${retry} ms)`, x: { retry_ms: retry, u: s.u, seq: s.seq } });
    });
  }

  /** `then(true)` once `pre` resolves, or `then(false)` after cluster.iq_timeout (with a retry delay of 0.5-1 s). */
  private deadline(pre: Promise<void>, then: (ok: boolean, ms: number, retry: number) => void): void {
    const ms = this.config.cluster.iqTimeout;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
    void Promise.race([pre.then(() => true), late]).then((ok) => {
      clearTimeout(timer);
      then(ok, ms, 500 + Math.floor(Math.random() * 500));
    });
  }

  private toModule(conn: Conn, s: ClientStanza): void {
    if (this.cluster !== null && (s.t === "gmsg" || (s.t === "read" && isGroupId(s.u))) && this.cluster.group(conn, s.t === "gmsg" ? s.g : s.u, s)) return;
    if (this.storage?.active && (s.t === "msg" || s.t === "gmsg")) return this.storageRefused(conn, s.id);
    if (!this.hooks.dispatchStanza(s.t, conn, s)) this.reject(conn, ErrorCode.UNKNOWN_KIND, `no module handles ${s.t}`, idOf(s));
  }

  /**
   * A send in cluster mode, through the gate. One that waits for another node (its conversation's number) holds the
   * connection's later sends behind it, so a conversation's messages are numbered in the order they were sent; once
   * a send of that chain is refused, the ones behind it are refused too (`refuseBehind`), or they would overtake its
   * resend.
   */
  private clusterSend(conn: Conn, s: ClientStanza, to: string | null, id: string): void {
    const gate = (chain: { refused: boolean } | null): Promise<void> | void => {
      if (conn.state !== ConnState.READY) return; // closed while waiting: the client resends the same id
      if (chain?.refused) return this.cluster!.refuseBehind(conn, id);
      const g = this.cluster!.send(conn, to, id);
      if (g === true) {
        if (chain) chain.refused = true;
        return;
      }
      if (g === false) return this.toModule(conn, s);
      return g.then((pass) => {
        if (pass === null) chain!.refused = true;
        else if (conn.state === ConnState.READY) pass(() => this.toModule(conn, s));
      });
    };
    let chain = this.waiting.get(conn);
    if (chain === undefined) {
      const c = { p: Promise.resolve(), refused: false };
      const r = gate(c);
      if (r === undefined) return;
      c.p = r;
      chain = c;
    } else {
      const c = chain;
      c.p = c.p.then(() => gate(c));
    }
    const c = chain;
    const p = (c.p = c.p.catch((err) => log.error("cluster send gate failed; the stanza was dropped", { account: conn.account, id, err: err as Error })));
    this.waiting.set(conn, c);
    void p.then(() => {
      if (c.p === p && this.waiting.get(conn) === c) this.waiting.delete(conn);
    });
  }

  /**
   * While a store file cannot commit (disk full, I/O error: src/store/errors.ts), a new message could be
   * delivered from memory but never made durable, so it is not accepted: `err storage_unavailable` with its
   * id, `x: {cause, retry_ms}`; the connection stays. What was accepted before keeps waiting for its commit.
   */
  private storageRefused(conn: Conn, id: string): void {
    const f = this.storage!.first()!;
    const why = f.cause === "disk_full" ? "its disk is full" : "its disk reports I/O errors";
    conn.sendError(ErrorCode.STORAGE_UNAVAILABLE, `the server cannot store messages now (${why}); nothing was accepted, try again later`, id, { cause: f.cause, retry_ms: COMMIT_RETRY_MS });
  }

  /**
   * The per-account send rate (limits.send_rate), checked here in core
   * before any module sees the message, so every kind of send is covered by
   * one bucket per account. An expected failure: `err rate_limited` with the
   * message's id and `x.retry_ms`; the connection stays and nothing was accepted.
   */
  private sendLimited(conn: Conn, id: string): boolean {
    const wait = this.sendLimit!.take(conn.account, Date.now());
    if (wait === 0) return false;
    this.refusedSends.inc();
    conn.sendError(ErrorCode.RATE_LIMITED, `account ${conn.account} sends more than ${this.config.limits.sendRate} messages a second; try again in ${wait} ms`, id, { retry_ms: wait });
    return true;
  }
}

/**
 * The answer to a ping. `== null`, not `=== undefined`: a nil `n` counts as absent (§3), and the
 * validator lets nil optionals through, so `ping {n: nil}` was answered `pong {n: nil}`.
 */
function pong(n: number | null | undefined): { t: "pong"; n?: number } {
  return n == null ? { t: "pong" } : { t: "pong", n };
}

/** The `res` frame answering iq `id` with `r`. */
export function resOf(id: string | number, r: IqReply): object {
  if (r.ok) return r.r === undefined ? { t: "res", id, ok: true } : { t: "res", id, ok: true, r: r.r };
  return r.x === undefined ? { t: "res", id, ok: false, e: r.e, m: r.m } : { t: "res", id, ok: false, e: r.e, m: r.m, x: r.x };
}

/** The stanza's id if an `err` may echo it (§2.3): an `ack` or `read` may carry any value as an unknown `id` field. */
function idOf(s: ClientStanza): string | number | undefined {
  return "id" in s ? echoableId(s.id) : undefined;
}
