/**
 * Per-connection facts about the conversation's peer (issue 20 targets 1 and 3): what a 1:1 message or its `dlv`
 * receipt needs to know of the pair of accounts, resolved once and kept on the connection until something that
 * could change it happens.
 *
 * Why: at 500 pairs each message looked the pair up by account string several times (the recipient's and the
 * sender's device lists, the presence rules of both for the block check, the sender's device list again for the
 * receipt). Every lookup is a cache miss on the account's objects at 1 000 accounts: per 1 000 messages, 10/16 →
 * 500/8, presence `RulesCache.get` 0.07 → 0.28 samples, `Directory.deviceIds` 0.03 → 0.14 (BENCHMARKS.md hotpath).
 * A cheaper lookup does not remove the miss (the per-item usage pointer tried there did not help); reaching the
 * answer from the connection, which the message's own frame has just brought into the cache, removes the chain.
 *
 * Validity: one process-wide change count (`changed()`), bumped by everything that could alter a cached answer:
 * a directory entry dropped (device added, revoked, keys published, account disabled, enabled or deleted, a shard
 * move's rows: Directory.drop), a module added or removed (hot reload: Hooks.add/remove), and what the rule's
 * module reports itself through ctx.facts.changed() (presence: from the one writer of its rules, RulesCache, on
 * every change to blocks, contacts, privacy, a remote block over a cluster link, a shard's rows in or out). Coarse on purpose: such changes are rare against messages, and a
 * bump only costs every connection one fresh resolution. Cluster mode does not cache at all (a shard moving in or
 * out, and the remote directory entries a link refreshes, would need their own bumps; not measured there).
 *
 * Core never imports a module: the `contact:check` answer is cached only when every handler that answered
 * declared it cacheable (ContactCheck.cacheable: data, not code), so the rule stays in its module.
 */
import type { Conn } from "../transport/connection.ts";
import type { ContactCheck } from "./module.ts";
import type { Directory } from "./directory.ts";
import type { Hooks } from "./hooks.ts";

/** Changes so far that could alter a cached fact (the module's `let`: one increment, read per message). */
let epoch = 0;

/** Something that could alter a cached answer about any pair of accounts happened: every connection resolves again. */
export function factsChanged(): void {
  epoch++;
}

/** What a 1:1 message from the connection's account to `to` needs. Immutable once made (a deferred receipt may hold one). */
export interface MsgFacts {
  readonly epoch: number;
  readonly to: string;
  /** The recipient's active devices, ascending. */
  readonly toIds: readonly number[];
  /** The sender's own active devices (toIds for a note to self). */
  readonly ownIds: readonly number[];
  /** The rule's refusal, or null. */
  readonly barred: ContactCheck | null;
}

/** What a `dlv` receipt from `from` (the recipient that acked) to `to` (the sender) needs: allowed, and to which devices. */
export interface ReceiptFacts {
  readonly epoch: number;
  readonly from: string;
  readonly to: string;
  /** The sender's active devices (empty: gone). */
  readonly toIds: readonly number[];
}

/**
 * Core's per-connection state, behind the one `Conn.core` field (null until the connection sends or acks: an idle
 * connection holds none). The acceptance map is here too (src/core/acceptances.ts), so Conn gained no field: it sits
 * at the edge of a JSC size class (18 inline slots, 160 B; one more would be 224 B per connection).
 */
export class ConnCore {
  /** The device's map of recent acceptances in the young generation, and the rotation it was taken in (Acceptances.epoch). */
  acceptIds: Map<string, object> | null = null;
  acceptEpoch = -1;
  /** The last peer this connection wrote to, and the last sender whose message it acked. One each: a chat writes to one peer at a time. */
  msg: MsgFacts | null = null;
  rcpt: ReceiptFacts | null = null;
}

export function connCore(conn: Pick<Conn, "core">): ConnCore {
  return (conn.core ??= new ConnCore()) as ConnCore;
}

export class PeerFacts {
  /** Set in cluster mode (an account's home may be another node): nothing is cached then. */
  cluster = false;

  constructor(
    private directory: Directory,
    private hooks: Hooks,
  ) {}

  /**
   * A message from `conn` to `to`: the device lists and the rule's answer, from the connection when nothing changed
   * since they were resolved; null when `to` is no account (never cached: `user add` creates one behind the directory).
   */
  msg(conn: Conn, to: string): MsgFacts | null {
    const core = conn.core as ConnCore | null;
    const last = core === null ? null : core.msg;
    if (last !== null && last.epoch === epoch && last.to === to) return last;
    const at = epoch; // read before resolving: a change meanwhile leaves the fact stale, never wrongly fresh
    const toIds = this.directory.deviceIds(to);
    if (toIds === null) return null;
    const self = to === conn.account;
    const v = self ? null : this.hooks.verdict("msg", conn.account, to);
    const barred = v === null || v.refuse === undefined ? null : v;
    const f: MsgFacts = { epoch: at, to, toIds, ownIds: self ? toIds : this.directory.deviceIds(conn.account) ?? [], barred };
    if (!this.cluster && (v === null || v.cacheable === true)) connCore(conn).msg = f;
    return f;
  }

  /**
   * A `dlv` receipt from `from` (the account of `conn`, which acked) to `to`: null when the rule refuses it, else the
   * sender's devices. Cached only when the rule declared its answer cacheable (a rate-limited stranger's is not).
   */
  receipt(conn: Conn, from: string, to: string): ReceiptFacts | null {
    const core = conn.core as ConnCore | null;
    const last = core === null ? null : core.rcpt;
    if (last !== null && last.epoch === epoch && last.to === to && last.from === from) return last;
    const at = epoch;
    const v = this.hooks.verdict("receipt", from, to);
    if (v.refuse !== undefined) return null;
    const f: ReceiptFacts = { epoch: at, from, to, toIds: this.directory.deviceIds(to) ?? [] };
    if (!this.cluster && v.cacheable === true) connCore(conn).rcpt = f;
    return f;
  }

  /** The sender's devices for a receipt resolved earlier (`f`), again from the directory if something changed since. */
  receiptIds(f: ReceiptFacts): readonly number[] {
    return f.epoch === epoch ? f.toIds : this.directory.deviceIds(f.to) ?? [];
  }
}
