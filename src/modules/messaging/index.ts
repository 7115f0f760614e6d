/**
 * 1:1 messages and their receipts.
 *
 * msg: checks the device sets, deduplicates by (sending device, client id),
 * assigns the conversation's next sequence number, and enqueues one item per
 * recipient device and one sync copy per other device of the sender. The
 * sender's `sent` goes out when every item is durable (committed, or already
 * acknowledged by its device): "sent" means the server cannot lose it.
 *
 * delivery:acked on a MESSAGE item: a `dlv` receipt is enqueued for every
 * device of the sender account. read: forward-only marker, `read` receipts to
 * the peer's devices and the reader's other devices.
 */
import { accountTables, type Module, type Registration, type ShardRows } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { ReceiptFacts } from "../../core/facts.ts";
import { SeqAllocator } from "../../core/seq.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { isGroupId, type MsgC, type Payloads, type Read } from "../../protocol/stanzas.ts";
import { ItemKind, type QueueItem } from "../../core/delivery.ts";
import type { Conn } from "../../transport/connection.ts";
import { MESSAGING_SCHEMA, SqliteReadMarks } from "./store.ts";

/** Compares the addressed devices with the current ones; null when they match. */
function mismatch(addressed: Payloads | undefined, expected: readonly number[], except: number): { missing: number[]; extra: number[] } | null {
  // Fast path, no allocation: the common case is one or two devices addressed in the server's order.
  const n = addressed?.length ?? 0;
  if (n === expected.length - (except && expected.includes(except) ? 1 : 0)) {
    let i = 0;
    let same = true;
    for (let j = 0; j < expected.length && same; j++) {
      if (expected[j] === except) continue;
      same = addressed![i++]![0] === expected[j];
    }
    if (same) return null;
  }
  const want = new Set(expected);
  if (except) want.delete(except);
  const seen = new Set<number>();
  const extra: number[] = [];
  for (const [d] of addressed ?? []) {
    if (!want.has(d) || seen.has(d)) extra.push(d);
    seen.add(d);
  }
  const missing = [...want].filter((d) => !seen.has(d));
  return missing.length || extra.length ? { missing, extra } : null;
}

const messaging: Module = {
  name: "messaging",
  version: "1.0.0",
  start(ctx: ModuleContext): Registration[] {
    const marksDb = ctx.database("messaging", MESSAGING_SCHEMA);
    const marks = new SqliteReadMarks(marksDb);
    const m = ctx.metrics;
    const accepted = m.counter("switchboard_messages_accepted_total", "Messages accepted (1:1).");
    const duplicates = m.counter("switchboard_messages_duplicate_total", "Resent messages answered from dedup.");
    const refused = m.counter("switchboard_messages_refused_total", "Messages refused.");
    const delivered = m.counter("switchboard_messages_delivered_total", "Message copies acknowledged by a recipient device.");
    const latency = m.histogram("switchboard_delivery_latency_seconds", "From acceptance to the recipient device's ack.");

    function onMsg(conn: Conn, s: MsgC): void {
      if (ctx.accept.resend(conn, s.id)) return void duplicates.inc();
      // The recipient's and the sender's devices and the rule's answer, kept on the connection while nothing that
      // could change them happened (src/core/facts.ts): no lookup by account for a conversation's next message.
      const facts = ctx.facts.msg(conn, s.to);
      if (facts === null) {
        refused.inc();
        return ctx.sendError(conn, ErrorCode.UNKNOWN_USER, `no account ${s.to}`, s.id);
      }
      const toIds = facts.toIds;
      // A block either way (the presence module's rule, docs/PROTOCOL.md §6.11): refused, nothing accepted or queued.
      const barred = facts.barred;
      if (barred !== null) {
        refused.inc();
        // `failed`: the rule crashed and the check failed closed; the sender may try again (it is not told "blocked").
        return ctx.sendError(conn, barred.refuse === "failed" ? ErrorCode.INTERNAL : ErrorCode.BLOCKED, barred.m ?? `${s.to} does not accept messages from you`, s.id);
      }
      const self = s.to === conn.account;
      const ownIds = facts.ownIds;
      if (!self && toIds.length === 0) {
        refused.inc();
        return ctx.sendError(conn, ErrorCode.NO_DEVICES, `account ${s.to} has no devices yet`, s.id);
      }
      // A note to self with nothing to address: it would be accepted with no copy at all.
      if (self && s.p.length === 0 && !toIds.some((d) => d !== conn.device)) {
        refused.inc();
        return ctx.sendError(conn, ErrorCode.NO_DEVICES, `account ${s.to} has no other device`, s.id);
      }
      // Note to self: the "recipient" devices are the sender's other devices, and there are no sync copies.
      const badTo = mismatch(s.p, toIds, self ? conn.device : 0);
      const badOwn = self ? (s.s?.length ? { missing: [], extra: s.s.map(([d]) => d) } : null) : mismatch(s.s, ownIds, conn.device);
      if (badTo || badOwn) {
        refused.inc();
        const missing: Record<string, number[]> = {};
        const extra: Record<string, number[]> = {};
        if (badTo?.missing.length) missing[s.to] = badTo.missing;
        if (badTo?.extra.length) extra[s.to] = badTo.extra;
        if (badOwn?.missing.length) missing[conn.account] = [...(missing[conn.account] ?? []), ...badOwn.missing];
        if (badOwn?.extra.length) extra[conn.account] = [...(extra[conn.account] ?? []), ...badOwn.extra];
        return ctx.sendError(conn, ErrorCode.DEVICES_MISMATCH, "the message must carry one payload for each current device", s.id, { missing, extra });
      }
      // Key versions, where the sender named them: a payload made for keys a device has since replaced could never be decrypted.
      const stale = staleDevices(s.to, s.p, conn.account, s.s);
      if (stale !== null) {
        refused.inc();
        return ctx.sendError(conn, ErrorCode.DEVICES_STALE, "a device's keys changed since you fetched them; refetch its keys and resend", s.id, { stale });
      }
      // Bounds, checked for every addressed device before anything is accepted: refused whole, never dropped in silence.
      const full = overBounds(s.to, s.p, conn.account, s.s);
      if (full !== null) {
        refused.inc();
        return ctx.sendError(conn, ErrorCode.QUEUE_FULL, "a recipient device has too much waiting; try again later", s.id, { full });
      }
      const seq = ctx.seqs.nextOf(conn.account, s.to);
      const ts = Date.now();
      accepted.inc();
      const send = ctx.accept.accept(conn, s.id, s.to, seq, ts);
      for (const [d, p] of s.p) {
        send.copy(
          s.to, d, self ? ItemKind.SYNC : ItemKind.MESSAGE,
          self
            ? { t: "msg", q: 0, id: s.id, from: conn.account, fd: conn.device, to: s.to, seq, ts, p, sync: true }
            : { t: "msg", q: 0, id: s.id, from: conn.account, fd: conn.device, to: s.to, seq, ts, p },
        );
      }
      if (s.s) {
        for (const [d, p] of s.s) send.copy(conn.account, d, ItemKind.SYNC, { t: "msg", q: 0, id: s.id, from: conn.account, fd: conn.device, to: s.to, seq, ts, p, sync: true });
      }
      send.release(); // every copy is queued
    }

    /** Devices whose key version differs from the one the payload names, by account (with their current versions); null when none. */
    function staleDevices(to: string, p: Payloads, own: string, sync: Payloads | undefined): Record<string, [number, number][]> | null {
      let stale: Record<string, [number, number][]> | null = null;
      const check = (account: string, pairs: Payloads) => {
        for (let i = 0; i < pairs.length; i++) {
          const e = pairs[i]!;
          if (e.length !== 3) continue;
          const kv = ctx.directory.keyVersion(account, e[0]) ?? 0;
          if (kv !== e[2]) ((stale ??= {})[account] ??= []).push([e[0], kv]);
        }
      };
      check(to, p);
      if (sync) check(own, sync);
      return stale;
    }

    /** The devices whose queue would exceed its bound, by account; null when all have room. */
    function overBounds(to: string, p: Payloads, own: string, sync: Payloads | undefined): Record<string, number[]> | null {
      const { maxMessages, maxBytes } = ctx.queues;
      let full: Record<string, number[]> | null = null;
      const check = (account: string, pairs: Payloads) => {
        for (const [d, payload] of pairs) {
          const u = ctx.queues.usage(account, d);
          // 96 bytes: the delivery stanza's fields around the payload, a fair upper estimate.
          if (u.n + 1 > maxMessages || u.bytes + payload.length + 96 > maxBytes) ((full ??= {})[account] ??= []).push(d);
        }
      };
      check(to, p);
      if (sync) check(own, sync);
      return full;
    }

    /** An undelivered message expired: tell every device of its sender (never silent). */
    function onExpired(item: QueueItem): void {
      if (item.kind !== ItemKind.MESSAGE) return;
      receipt(item, "exp");
    }

    /** A recipient device acknowledged a message: tell every device of the sender. */
    function onAcked(item: QueueItem, conn: Conn): void {
      if (item.kind !== ItemKind.MESSAGE) return;
      delivered.inc();
      latency.record((Date.now() - item.ts) * 1000);
      // None to a sender blocked either way, nor beyond the rate to a stranger (§6.11, the receipt-timing probe).
      // The answer and the sender's devices are kept on the acking connection until a change (src/core/facts.ts).
      const f = ctx.facts.receipt(conn, item.account, item.fromAccount);
      if (f === null) return;
      // A write-back hit can be acked before the acceptance is committed: hold the receipt until `sent` is out.
      ctx.accept.afterSent(item.fromAccount, item.fromDevice, item.cid, () => receipt(item, "dlv", f));
    }

    /** A `dlv` or `exp` receipt about one copy, to every device of its sender (`f`: those resolved at the ack). */
    function receipt(item: QueueItem, k: "dlv" | "exp", f?: ReceiptFacts): void {
      const ts = Date.now();
      ctx.accept.toDevices(
        item.fromAccount,
        { kind: ItemKind.RECEIPT, fromAccount: item.account, fromDevice: item.device, cid: item.cid, seq: item.seq, ts },
        { t: "rcpt", q: 0, k, u: item.account, d: item.device, w: item.account, seq: item.seq, id: item.cid, ts },
        0,
        item.unwritten !== true, // a copy acked before it was written: a crash here loses the ack, and so the receipt, as on one node
        f === undefined ? undefined : ctx.facts.receiptIds(f),
      );
    }

    function onRead(conn: Conn, s: Read): void {
      if (isGroupId(s.u)) return ctx.hooks.run("read:group", conn, s);
      if (!ctx.directory.exists(s.u)) return ctx.sendError(conn, ErrorCode.UNKNOWN_USER, `no account ${s.u}`);
      // A marker above the conversation's last sequence number (or in one that has none) names nothing that was sent: ignored (§5.1 read).
      if (s.seq > ctx.seqs.latest(SeqAllocator.conv(conn.account, s.u))) return;
      // Forward only: a marker at or below the stored one changes nothing and tells no one.
      if (!marks.advance(conn.account, s.u, s.seq)) return;
      ctx.trace.read(conn.account, conn.device, s.u, s.seq);
      const ts = Date.now();
      const meta = { kind: ItemKind.RECEIPT, fromAccount: conn.account, fromDevice: conn.device, cid: "", seq: s.seq, ts };
      // None to an account blocked either way (§6.11); the reader's own devices still learn the conversation was read.
      if (s.u !== conn.account && ctx.hooks.check("read", conn.account, s.u) === null) {
        ctx.accept.toDevices(s.u, meta, { t: "rcpt", q: 0, k: "read", u: conn.account, d: conn.device, w: conn.account, seq: s.seq, ts });
      }
      ctx.accept.toDevices(conn.account, meta, { t: "rcpt", q: 0, k: "read", u: conn.account, d: conn.device, w: s.u, seq: s.seq, ts }, conn.device);
    }

    return [
      { stanza: "msg", handle: onMsg },
      { stanza: "read", handle: onRead },
      { hook: "delivery:acked", handle: onAcked },
      { hook: "delivery:expired", handle: onExpired },
      { hook: "account:deleted", handle: (account: string) => void marks.dropAccount(account) },
      { hook: "shard:rows", handle: (o: ShardRows) => accountTables(marksDb, "messaging", [["read_marks", "account"]], o) }, // cluster: with the home shard
    ];
  },
};

export default messaging;
