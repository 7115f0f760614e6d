/**
 * Operations of connections here forwarded to other nodes (forward.ts items `o`, answered by `x`): the
 * connections' numbers (the `c` of `o` and `x`), the `gmsg`s waiting for their `sent` or `err` (resent while the
 * link is idle, answered `err retry_after {lost}` after cluster.iq_timeout), the iqs
 * waiting for their `res` (answered `retry_after {lost}` when their node's link drops after it acked them, or when
 * no answer came within cluster.iq_timeout), and which nodes each connection used (told with `z` when it closes, so
 * they drop its ProxyConn).
 */
import type { ClientStanza } from "../../protocol/stanzas.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { ConnState, type Conn } from "../../transport/connection.ts";

/** A forwarded `gmsg` not answered (no `sent`, no `err`) after this long, with the link idle, is sent again. */
export const GROUP_RESEND_MS = 3_000;

/** Why a forwarded iq was answered here with `retry_after {lost}` (the label of switchboard_cluster_iqs_lost_total). */
export type LostWhy = "link_dropped" | "timeout" | "gmsg_timeout";

export interface OpLinks<Item> {
  send(node: string, item: Item): Promise<void>;
  /** Batches sent to `node` not acknowledged yet. */
  lag(node: string): number;
  /** Whether `node` has a heartbeat in the view. */
  up(node: string): boolean;
  /** The `z` item telling a node that connection `c` closed. */
  closed(c: number): Item;
}

export class ForwardedOps<Item> {
  private conns = new Map<number, WeakRef<Conn>>();
  private connNo = new WeakMap<Conn, number>();
  private nextConn = 0;
  /** The nodes each connection here sent operations to. */
  private connNodes = new Map<number, Set<string>>();
  /** Forwarded `gmsg`s with no `sent`/`err` back yet, by (account, device, id). */
  private pendingGroup = new Map<string, { node: string; item: Item; conn: number; id: string; at: number; since: number }>();
  /** Forwarded iqs not answered yet, by (connection number, iq id); `acked` once the link acked them; `at` sent. */
  private pendingIq = new Map<string, { node: string; conn: number; id: unknown; acked: boolean; at: number }>();
  /** Called for each forwarded iq answered here with `retry_after {lost}` (a metric). */
  onLost: (why: LostWhy) => void = () => {};

  constructor(
    private readonly links: OpLinks<Item>,
    /** cluster.iq_timeout: a forwarded iq not answered within it is answered `retry_after {lost}` (sweep). */
    private readonly iqTimeoutMs = 15_000,
  ) {}

  /** The number of `conn` in `o` items (given at its first operation). */
  numberOf(conn: Conn): number {
    let c = this.connNo.get(conn);
    if (c === undefined) {
      this.connNo.set(conn, (c = ++this.nextConn));
      this.conns.set(c, new WeakRef(conn));
    }
    return c;
  }

  /** The connection numbered `c`, while it is open. */
  conn(c: number): Conn | undefined {
    const conn = this.conns.get(c)?.deref();
    return conn !== undefined && conn.state !== ConnState.CLOSED ? conn : undefined;
  }

  /** Sends the `o` item of `conn`'s stanza `s` to `node`, and keeps what its answer must settle. */
  send(node: string, conn: Conn, c: number, s: ClientStanza, item: Item): void {
    let nodes = this.connNodes.get(c);
    if (nodes === undefined) this.connNodes.set(c, (nodes = new Set()));
    nodes.add(node);
    if (s.t === "gmsg") this.pendingGroup.set(`${conn.account}\u0000${conn.device}\u0000${s.id}`, { node, item, conn: c, id: s.id, at: performance.now(), since: performance.now() });
    const sent = this.links.send(node, item);
    if (s.t !== "iq") return;
    const p = { node, conn: c, id: s.id, acked: false, at: performance.now() };
    this.pendingIq.set(`${c}\u0000${s.id}`, p);
    void sent.then(() => (p.acked = true));
  }

  /** A frame `r` of an `x` for connection `c` (account `a`, device `d`): a `sent`/`err` or `res` settles its op. */
  answered(c: number, a: string, d: number, r: { t?: unknown; id?: unknown }): void {
    if ((r.t === "sent" || r.t === "err") && typeof r.id === "string") this.pendingGroup.delete(`${a}\u0000${d}\u0000${r.id}`);
    else if (r.t === "res") this.pendingIq.delete(`${c}\u0000${r.id}`);
  }

  /**
   * The link to `node` dropped (it died, or the network broke): the iqs it had acked and not answered are
   * answered here with `retry_after` and `x.lost` (the SDK sends them again), not left to time out in silence:
   * an iq is not resent by the link once acked, since it is not idempotent (`add` twice answers "already a
   * member"), and the group's node keeps nothing of it across a crash. Whether it was done is not known: a
   * retry may find it done. An answer that still comes later (a network break, not a crash) is forwarded too,
   * and the SDK ignores it (that id was answered). Unacked ones are resent by the link after the reconnect.
   */
  linkDropped(node: string): void {
    for (const [key, p] of this.pendingIq) if (p.node === node && p.acked) this.lost(key, p, "link_dropped", `node ${node} went away before it answered`);
  }

  /**
   * A forwarded iq answered here with `retry_after {lost}`: its link dropped after the ack, or (`timeout`) no answer
   * came within cluster.iq_timeout, acked or not, while the link stayed up (the node is hung: SIGSTOPped, or stuck
   * waiting), so no drop will ever tell. Unacked, it still goes when the node is back, and may run then (as a lost
   * one may have run): the client is told that whether it was done is not known. Its late answer, if any, is
   * forwarded as it comes (`answered` finds nothing to settle); it carries the old id, which the SDK no longer waits for.
   */
  private lost(key: string, p: { node: string; conn: number; id: unknown }, why: LostWhy, what: string): void {
    this.pendingIq.delete(key);
    const conn = this.conn(p.conn);
    if (conn === undefined) return;
    this.onLost(why);
    const retry = 500 + Math.floor(Math.random() * 500);
    const m = `${what}; whether it was done is not known: send it again (in ${retry} ms)`;
    conn.send({ t: "res", id: p.id as number, ok: false, e: ErrorCode.RETRY_AFTER, m, x: { retry_ms: retry, lost: true } });
  }

  /**
   * A forwarded `gmsg` with no `sent` or `err` back within cluster.iq_timeout (its group's node hung, its link up):
   * answered `err retry_after {lost}` here, as an iq is, so the client is not left waiting on a node that may never
   * answer. It may still be accepted there (it went, or goes when the node is back): the SDK sends the same id again
   * after `retry_ms`, and the group's node dedups it by the sender's message id (its acceptance record answers the
   * resend with the first `sent`), so every member gets it once. A late `sent` of the first is forwarded as it comes
   * (`answered` finds nothing to settle); the SDK resolves the send with whichever `sent` comes first.
   */
  private groupLost(key: string, p: { node: string; conn: number; id: string }): void {
    this.pendingGroup.delete(key);
    const conn = this.conn(p.conn);
    if (conn === undefined) return;
    this.onLost("gmsg_timeout");
    const retry = 500 + Math.floor(Math.random() * 500);
    const m = `node ${p.node} did not answer within ${this.iqTimeoutMs} ms; whether it was accepted is not known: send it again with the same id (in ${retry} ms)`;
    conn.send({ t: "err", id: p.id, e: ErrorCode.RETRY_AFTER, m, x: { retry_ms: retry, lost: true } });
  }

  /**
   * Every GROUP_RESEND_MS / 3: closed connections are forgotten, and the nodes they used told (`z`, to nodes up:
   * one down lost its ProxyConns, or drops them by generation); forwarded iqs unanswered for cluster.iq_timeout
   * are answered `retry_after {lost}`; forwarded `gmsg`s still unanswered while their link has nothing
   * unacknowledged are sent again (forward.ts, `o`), and answered `err retry_after {lost}` after cluster.iq_timeout.
   */
  sweep(): void {
    const now = performance.now();
    for (const c of this.conns.keys()) {
      if (this.conn(c) !== undefined) continue;
      this.conns.delete(c);
      for (const n of this.connNodes.get(c) ?? []) if (this.links.up(n)) void this.links.send(n, this.links.closed(c));
      this.connNodes.delete(c);
    }
    for (const [key, p] of this.pendingIq) {
      if (!this.conns.has(p.conn)) this.pendingIq.delete(key);
      else if (now - p.at >= this.iqTimeoutMs) this.lost(key, p, "timeout", `node ${p.node} did not answer within ${this.iqTimeoutMs} ms`);
    }
    for (const [key, p] of this.pendingGroup) {
      // Its device's connection is gone: the client sends it again when it reconnects, and is answered then.
      if (!this.conns.has(p.conn)) this.pendingGroup.delete(key);
      else if (now - p.since >= this.iqTimeoutMs) this.groupLost(key, p);
      else if (now - p.at >= GROUP_RESEND_MS && this.links.lag(p.node) === 0) {
        p.at = now;
        void this.links.send(p.node, p.item);
      }
    }
  }
}
