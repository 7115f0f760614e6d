/**
 * Group messages (see model.ts for how the groups module is split): the
 * fan-out of one `gmsg` to every device of every member, the `dlv` and `exp`
 * receipts of member devices' copies, read marks and the aggregate state of a
 * message (group.state). The rules are in index.ts's header comment
 * (ordering, fan-out, the cost of receipts). Handlers are closures over one
 * start(), as before the split: `load` and `memberOf` are called directly,
 * not through an object per message.
 */
import type { IqReply } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { Config } from "../../core/config.ts";
import type { Counter } from "../../core/metrics.ts";
import { decodeBody } from "../../protocol/codec.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import type { GMsg, Read } from "../../protocol/stanzas.ts";
import { ItemKind, type QueueItem } from "../../core/delivery.ts";
import type { Conn } from "../../transport/connection.ts";
import type { GroupStore } from "./store.ts";
import { isFail, no, notMember, type Group, type Lookup } from "./model.ts";

/** The message handlers of one start(); index.ts registers them (in its one list, so the order is unchanged). */
export interface MessageHandlers {
  onGmsg(conn: Conn, s: GMsg): void;
  messageState(conn: Conn, a: Record<string, unknown>): IqReply;
  onAcked(item: QueueItem): void;
  onExpired(item: QueueItem): void;
  onRead(conn: Conn, s: Read): void;
}

export function groupMessages(
  ctx: ModuleContext<Config["groups"]>,
  store: GroupStore,
  { load, memberOf }: Lookup,
  { accepted, fanout, skipped }: { accepted: Counter; fanout: Counter; skipped: Counter },
): MessageHandlers {
  /**
   * Aggregate state of one message, for its sender: of the N members who
   * were in the group when it was sent (and still are), how many have it
   * on at least one device, and how many read up to it.
   */
  function messageState(conn: Conn, a: Record<string, unknown>): IqReply {
    const g = memberOf(conn, a.g);
    if (isFail(g)) return g;
    if (typeof a.seq !== "number" || !Number.isSafeInteger(a.seq) || a.seq < 1) return no(ErrorCode.BAD_FIELD, "a.seq must be a sequence number");
    const rec = store.message(g.id, a.seq);
    if (!rec) return no(ErrorCode.NOT_FOUND, `no message ${a.seq} in ${g.id} (or it is older than the retention)`);
    if (rec.sender !== conn.account) return no(ErrorCode.FORBIDDEN, "only the sender may ask for a message's state");
    let n = 0;
    let delivered = 0;
    let read = 0;
    for (const [u, x] of g.members) {
      if (u === rec.sender || x.joined >= rec.seq) continue;
      n++;
      if (x.dlv >= rec.seq || x.read >= rec.seq) delivered++;
      if (x.read >= rec.seq) read++;
    }
    return { ok: true, r: { g: g.id, seq: rec.seq, id: rec.cid, n, delivered, read } };
  }

  /**
   * Group messages waiting, per group, for the device lists of members homed on other nodes (their homes are
   * asked over the node links). Waiting in one list per group keeps the group's messages in arrival order.
   */
  const waiting = new Map<string, (() => void)[]>();

  /** True when `run` waits for the members' device lists (it is called again once they are here); false: go on now. */
  function deferredForDevices(g: Group, run: () => void): boolean {
    const q = waiting.get(g.id);
    if (q !== undefined) return void q.push(run), true;
    const p = ctx.directory.ready(g.members.keys());
    if (p === null) return false;
    waiting.set(g.id, [run]);
    void p.then(() => {
      const list = waiting.get(g.id) ?? [];
      waiting.delete(g.id);
      for (const f of list) f(); // each asks again: a list that went stale meanwhile waits anew, in order
    });
    return true;
  }

  function onGmsg(conn: Conn, s: GMsg): void {
    if (ctx.accept.resend(conn, s.id)) return;
    const g = load(s.g);
    if (!g || !g.members.has(conn.account)) return ctx.sendError(conn, ErrorCode.NOT_MEMBER, notMember(conn, s.g), s.id);
    if (deferredForDevices(g, () => onGmsg(conn, s))) return;
    const { maxMessages, maxBytes } = ctx.queues;
    const cost = s.p.length + 128; // the delivery stanza's fields around the payload, a fair upper estimate
    const room = (account: string, d: number) => {
      const u = ctx.queues.usage(account, d);
      return u.n + 1 <= maxMessages && u.bytes + cost <= maxBytes;
    };
    // The sender's own devices must have room (their sync copies are the sender's own record): else refused whole.
    const ownFull = (ctx.directory.deviceIds(conn.account) ?? []).filter((d) => d !== conn.device && !room(conn.account, d));
    if (ownFull.length) return ctx.sendError(conn, ErrorCode.QUEUE_FULL, "one of your own devices has too much waiting; try again later", s.id, { full: { [conn.account]: ownFull } });

    const seq = ctx.seqs.next(g.id);
    const ts = Date.now();
    // No list of targets is built: a 1024-member fan-out would allocate 1023 tuples per message. The Send's own
    // hold, released after the loop, keeps a commit run from inside a copy (commit_rows reached) from writing
    // the acceptance record before every copy is queued.
    accepted.inc();
    const send = ctx.accept.accept(conn, s.id, g.id, seq, ts);
    store.recordMessage({ g: g.id, seq, sender: conn.account, device: conn.device, cid: s.id, ts });
    // One stanza object: enqueue() sets its `q` and encodes it before the next call.
    const stanza: { t: string; q: number; [k: string]: unknown } = { t: "msg", q: 0, id: s.id, from: conn.account, fd: conn.device, to: g.id, seq, ts, p: s.p };
    let full: [string, number][] | null = null;
    let queued = 0;
    for (const account of g.members.keys()) {
      const own = account === conn.account;
      for (const d of ctx.directory.deviceIds(account) ?? []) {
        if (own && d === conn.device) continue;
        if (!own && !room(account, d)) {
          (full ??= []).push([account, d]);
          continue;
        }
        queued++;
        if (own) send.copy(account, d, ItemKind.SYNC, { ...stanza, sync: true });
        else send.copy(account, d, ItemKind.GROUP, stanza);
      }
    }
    send.release(); // every copy is queued
    fanout.inc(queued);
    if (full !== null) {
      skipped.inc(full.length);
      const rmeta = { kind: ItemKind.RECEIPT as ItemKind, fromAccount: g.id, fromDevice: 0, cid: s.id, seq, ts };
      for (const [account, d] of full) ctx.accept.toDevices(conn.account, rmeta, { t: "rcpt", q: 0, k: "full", u: account, d, w: g.id, seq, id: s.id, ts });
    }
  }

  /** The group of a queued group item: its conversation, else (rows stored before items carried one) from the stanza. */
  function groupOf(item: QueueItem): string | null {
    if (item.conv !== "") return item.conv;
    try {
      const to = (decodeBody(item.body) as { to?: unknown }).to;
      return typeof to === "string" ? to : null;
    } catch {
      return null;
    }
  }

  function onAcked(item: QueueItem): void {
    if (item.kind !== ItemKind.GROUP) return;
    const gid = groupOf(item);
    if (gid === null) return;
    const g = load(gid);
    const member = g?.members.get(item.account);
    if (member && item.seq > member.dlv) {
      member.dlv = item.seq;
      store.saveMark(gid, item.account, item.seq, 0);
    }
    // As for 1:1: never a `dlv` before the sender's `sent`.
    ctx.accept.afterSent(item.fromAccount, item.fromDevice, item.cid, () => receipt(item, gid, "dlv"));
  }

  /** A `dlv` or `exp` receipt about one member device's copy, to every device of its sender. */
  function receipt(item: QueueItem, gid: string, k: "dlv" | "exp"): void {
    const ts = Date.now();
    ctx.accept.toDevices(
      item.fromAccount,
      { kind: ItemKind.RECEIPT, fromAccount: item.account, fromDevice: item.device, cid: item.cid, seq: item.seq, ts },
      { t: "rcpt", q: 0, k, u: item.account, d: item.device, w: gid, seq: item.seq, id: item.cid, ts },
    );
  }

  function onExpired(item: QueueItem): void {
    if (item.kind !== ItemKind.GROUP) return;
    const gid = groupOf(item);
    if (gid !== null) receipt(item, gid, "exp");
  }

  /** "Read up to seq" in a group: receipts to the senders of what was newly read, and to the reader's other devices. */
  function onRead(conn: Conn, s: Read): void {
    const g = load(s.u);
    const me = g?.members.get(conn.account);
    if (!g || !me) return ctx.sendError(conn, ErrorCode.NOT_MEMBER, notMember(conn, s.u));
    // A marker above the group's last sequence number names nothing that was sent: ignored (§5.1 read).
    if (s.seq > ctx.seqs.latest(g.id)) return;
    // Forward only; the mark has one owner, this module's store (groups.db), which writes it at once.
    const before = me.read;
    if (s.seq <= before || !store.advanceRead(g.id, conn.account, s.seq)) return;
    me.read = s.seq;
    ctx.trace.read(conn.account, conn.device, g.id, s.seq);
    const ts = Date.now();
    const meta = { kind: ItemKind.RECEIPT as ItemKind, fromAccount: conn.account, fromDevice: conn.device, cid: "", seq: s.seq, ts };
    const rc = { t: "rcpt", q: 0, k: "read", u: conn.account, d: conn.device, w: g.id, seq: s.seq, ts };
    for (const sender of store.senders(g.id, before, s.seq)) if (sender !== conn.account) ctx.accept.toDevices(sender, meta, rc);
    ctx.accept.toDevices(conn.account, meta, rc, conn.device);
  }

  return { onGmsg, messageState, onAcked, onExpired, onRead };
}
