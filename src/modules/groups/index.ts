/**
 * Groups: membership, group messages fanned out on write, receipts and the
 * aggregate state of a message.
 *
 * Ordering: membership events and messages of a group share one sequence,
 * and every change is applied synchronously on the event loop before the
 * next stanza is read. So a message accepted after a removal is not
 * queued for the removed member's devices, and a member added at seq N
 * gets nothing below N: the member list at acceptance decides. Every event
 * goes, as a queued `evt`, to every device of every member (removed ones
 * included, for their own removal), so clients can rotate sender keys.
 *
 * Fan-out: one `gmsg` becomes one queue item per device of every member
 * but the sending device (the sender's other devices get sync copies),
 * through the same per-device queues as 1:1 messages; `sent` goes out when
 * all of them and the acceptance record are durable. A member device whose
 * queue is at its bound is skipped, and the sender is told with a queued
 * `rcpt {k: "full"}` for it: one offline member cannot block a group, and
 * the skip is never silent.
 *
 * Cost of receipts: every member device's ack becomes one `dlv` receipt
 * queued to each of the sender's devices (as WhatsApp does), so a message
 * to a 1024-member group costs about 2 x 1023 queue items.
 *
 * Where things live: this file is the module (state, start, stop) and
 * membership (the group.* iqs that create, change or list groups, and the
 * events they queue); messages.ts is group messages (fan-out, receipts, read
 * marks, group.state); model.ts the shapes both share. See model.ts for why.
 */
import { randomBytes } from "node:crypto";
import { accountTables, touchedAccounts, type Module, type Registration, type IqReply, type ShardRows } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { Config } from "../../core/config.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { ACCOUNT_NAME_RE, GROUP_ID_RE, LIMITS } from "../../protocol/stanzas.ts";
import { ItemKind } from "../../core/delivery.ts";
import { GROUPS_SCHEMA, Role, SqliteGroupStore } from "./store.ts";
import type { Conn } from "../../transport/connection.ts";
import { isFail, no, notMember, type Fail, type Group, type State } from "./model.ts";
import { groupMessages } from "./messages.ts";

/** Groups per page of a shard move's export (cluster/chunks.ts): their members and messages are held together. */
const GROUP_PAGE = 32;
/** Group ids: "#" and 16 characters of [a-z0-9] (80 bits). */
const ID_CHARS = "abcdefghijklmnopqrstuvwxyz234567";
function newGroupId(): string {
  const b = randomBytes(16);
  let s = "#";
  for (let i = 0; i < 16; i++) s += ID_CHARS[b[i]! & 31];
  return s;
}

/** The running instance's state, so that `stop` can write what is buffered. */
let running: State | null = null;

const groups: Module<Config["groups"]> = {
  name: "groups",
  version: "1.0.0",
  start(ctx: ModuleContext<Config["groups"]>): Registration[] {
    const state = ctx.shared<State>("groups", () => ({
      store: new SqliteGroupStore(ctx.database("groups", GROUPS_SCHEMA), undefined, ctx.storage),
      groups: new Map(),
      expireTimer: null,
    }));
    const store = state.store;
    const db = ctx.database("groups", GROUPS_SCHEMA); // the store's handle (ctx.database keeps one per file): for shard moves
    running = state;
    const m = ctx.metrics;
    const accepted = m.counter("switchboard_group_messages_accepted_total", "Group messages accepted.");
    const fanout = m.counter("switchboard_group_deliveries_queued_total", "Group message copies queued for member devices.");
    const skipped = m.counter("switchboard_group_deliveries_full_total", "Group message copies not queued because a member device's queue was at its bound.");
    const events = m.counter("switchboard_group_events_total", "Group membership events.");
    const { maxMembers, maxPerAccount } = ctx.options;

    // Message rows of a group live as long as the queue's retention: read receipts and the aggregate state need no older ones.
    if (state.expireTimer === null) {
      state.expireTimer = setInterval(() => {
        try {
          store.expireMessages(Date.now() - ctx.queues.retention * 1000);
        } catch (e) {
          ctx.log.error("group message expiry failed", { err: e as Error });
        }
      }, ctx.queues.expireEvery * 1000);
      state.expireTimer.unref?.();
    }

    function load(id: string): Group | null {
      let g = state.groups.get(id);
      if (g) return g;
      const r = store.get(id);
      if (!r) return null;
      g = { id: r.id, name: r.name, created: r.created, creator: r.creator, members: new Map() };
      for (const x of r.members) g.members.set(x.account, { role: x.role, joined: x.joined, dlv: x.dlv, read: x.read });
      state.groups.set(id, g);
      return g;
    }

    /**
     * Cluster: the groups homed in a moving shard (by their id's shard, not by the moving accounts) go with it,
     * their members, marks and message rows; what is cached of them is dropped (docs/CLUSTER.md "Moving shards").
     * The export goes GROUP_PAGE groups per page (the `page`-th, `more` while some are left); an import replaces
     * the groups whose row it brings, and adds the members and messages it brings (in chunks, a group's members
     * can come after its row).
     */
    function onShardRows(o: ShardRows): void {
      store.flush(); // buffered marks and message rows first
      const tables = [["groups", "id"], ["members", "g"], ["gmsgs", "g"]] as const;
      const imported = o.op === "import" ? ((o.rows.groups as { groups?: { id: string }[] } | undefined)?.groups ?? []).map((r) => r.id) : null;
      let ids = imported ?? (db.query("SELECT id FROM groups ORDER BY id").all() as { id: string }[]).map((r) => r.id).filter(o.inShard);
      if (o.op === "export" && o.page !== undefined) {
        o.more ||= ids.length > (o.page + 1) * GROUP_PAGE;
        ids = ids.slice(o.page * GROUP_PAGE, (o.page + 1) * GROUP_PAGE);
      }
      accountTables(db, "groups", tables, { ...o, accounts: ids });
      for (const id of o.op === "import" ? touchedAccounts("groups", tables, { ...o, accounts: ids }) : ids) state.groups.delete(id);
    }

    /** The group, if the caller is a member; otherwise the failure to answer with. */
    function memberOf(conn: Conn, id: unknown, admin = false): Group | Fail {
      if (typeof id !== "string" || !GROUP_ID_RE.test(id)) return no(ErrorCode.BAD_FIELD, "a.g must be a group id (# and up to 31 of a-z0-9)");
      const g = load(id);
      const me = g?.members.get(conn.account);
      if (!g || !me) return no(ErrorCode.NOT_MEMBER, notMember(conn, id));
      if (admin && me.role !== Role.ADMIN) return no(ErrorCode.FORBIDDEN, `only admins of ${id} may do that`);
      return g;
    }

    /** A list of account names from `a.m`: present, deduplicated, existing. */
    function accountsArg(v: unknown, what = "a.m"): string[] | Fail {
      if (!Array.isArray(v) || v.length === 0 || v.length > LIMITS.groupBatch) return no(ErrorCode.BAD_FIELD, `${what} must be an array of 1..${LIMITS.groupBatch} account names`);
      const out = new Set<string>();
      for (const x of v) {
        if (typeof x !== "string" || !ACCOUNT_NAME_RE.test(x)) return no(ErrorCode.BAD_FIELD, `${what} entries must be account names`);
        out.add(x);
      }
      const unknown = [...out].filter((a) => !ctx.directory.exists(a));
      if (unknown.length) return { ok: false, e: ErrorCode.UNKNOWN_USER, m: `no account ${unknown.join(", ")}` };
      return [...out];
    }

    function nameArg(v: unknown): string | Fail {
      if (typeof v !== "string" || v.length === 0 || Buffer.byteLength(v) > LIMITS.groupName) return no(ErrorCode.BAD_FIELD, `a.name must be 1..${LIMITS.groupName} bytes`);
      return v;
    }

    /** Accounts that would pass their per-account group cap by joining; empty when all fit. */
    function overGroupCap(accounts: string[]): string[] {
      return accounts.filter((a) => store.groupsOf(a).length + ctx.peers.groupsElsewhere(a) >= maxPerAccount); // groups on other cluster nodes too
    }

    /**
     * Queues one membership event to every device of `to` (the members, and
     * for a removal the removed too). Takes the group's next sequence number.
     */
    function announce(g: Group, seq: number, to: Iterable<string>, ev: { op: string; by: string; m?: string[]; name?: string }): void {
      const ts = Date.now();
      const stanza: { t: string; q: number; [k: string]: unknown } = { t: "evt", q: 0, k: "grp", op: ev.op, g: g.id, seq, by: ev.by, ts };
      if (ev.m) stanza.m = ev.m;
      if (ev.name !== undefined) stanza.name = ev.name;
      const meta = { kind: ItemKind.EVENT, fromAccount: ev.by, fromDevice: 0, cid: "", seq, ts };
      for (const account of to) {
        ctx.accept.toDevices(account, meta, stanza);
      }
      events.inc();
    }

    /** Accounts a block keeps out of the caller's groups (the presence module's rule, docs/PROTOCOL.md §6.11). */
    function barred(conn: Conn, accounts: string[]): Fail | null {
      let failed: string | undefined; // the rule crashed: refused (fails closed), but not reported as a block
      const b = accounts.filter((x) => {
        const c = x === conn.account ? null : ctx.hooks.check("invite", conn.account, x);
        if (c?.refuse === "failed") failed = c.m;
        return c !== null;
      });
      if (failed !== undefined) return no(ErrorCode.INTERNAL, failed);
      return b.length ? no(ErrorCode.BLOCKED, `a block keeps ${b.join(", ")} out of your groups`) : null;
    }

    function create(conn: Conn, a: Record<string, unknown>): IqReply {
      const name = nameArg(a.name);
      if (isFail(name)) return name;
      let others: string[] = [];
      if (a.m !== undefined) {
        const r = accountsArg(a.m);
        if (isFail(r)) return r;
        others = r.filter((x) => x !== conn.account);
      }
      const barredOut = barred(conn, others);
      if (barredOut) return barredOut;
      if (others.length + 1 > maxMembers) return no(ErrorCode.GROUP_FULL, `a group may have at most ${maxMembers} members`);
      const capped = overGroupCap([conn.account, ...others]);
      if (capped.length) return no(ErrorCode.TOO_MANY_GROUPS, `already in ${maxPerAccount} groups: ${capped.join(", ")}`);
      let id = localGroupId();
      const ts = Date.now();
      let seq = ctx.seqs.next(id);
      // 80 random bits: a collision is practically impossible, but the store refuses rather than merges.
      while (!store.create(id, name, conn.account, others, seq, ts)) seq = ctx.seqs.next((id = localGroupId()));
      const g = load(id)!;
      announce(g, seq, g.members.keys(), { op: "create", by: conn.account, m: [conn.account, ...others], name });
      return { ok: true, r: { g: id, seq } };
    }

    function add(conn: Conn, a: Record<string, unknown>): IqReply {
      const g = memberOf(conn, a.g, true);
      if (isFail(g)) return g;
      const r = accountsArg(a.m);
      if (isFail(r)) return r;
      const fresh = r.filter((x) => !g.members.has(x));
      if (fresh.length === 0) return no(ErrorCode.BAD_FIELD, "every account named is already a member");
      const barredOut = barred(conn, fresh);
      if (barredOut) return barredOut;
      if (g.members.size + fresh.length > maxMembers) return no(ErrorCode.GROUP_FULL, `${g.id} would have ${g.members.size + fresh.length} members; at most ${maxMembers}`);
      const capped = overGroupCap(fresh);
      if (capped.length) return no(ErrorCode.TOO_MANY_GROUPS, `already in ${maxPerAccount} groups: ${capped.join(", ")}`);
      const seq = ctx.seqs.next(g.id);
      store.addMembers(g.id, fresh, seq);
      for (const x of fresh) g.members.set(x, { role: Role.MEMBER, joined: seq, dlv: 0, read: 0 });
      announce(g, seq, g.members.keys(), { op: "add", by: conn.account, m: fresh });
      return { ok: true, r: { seq, m: fresh } };
    }

    /** Removes members (an admin's `remove`, or one's own `leave`); the last admin leaving promotes the longest-standing member. */
    function removeMembers(g: Group, gone: string[], by: string, op: "remove" | "leave"): number {
      const seq = ctx.seqs.next(g.id);
      const to = [...g.members.keys()]; // the removed hear of their removal too
      store.removeMembers(g.id, gone);
      for (const x of gone) g.members.delete(x);
      announce(g, seq, to, { op, by, m: gone });
      if (g.members.size === 0) {
        store.delete(g.id);
        state.groups.delete(g.id);
        return seq;
      }
      if (![...g.members.values()].some((x) => x.role === Role.ADMIN)) {
        const [heir] = [...g.members.entries()].sort((x, y) => x[1].joined - y[1].joined || (x[0] < y[0] ? -1 : 1))[0]!;
        const pseq = ctx.seqs.next(g.id);
        store.setRole(g.id, [heir], Role.ADMIN);
        g.members.get(heir)!.role = Role.ADMIN;
        announce(g, pseq, g.members.keys(), { op: "promote", by, m: [heir] });
      }
      return seq;
    }

    /** A deleted account leaves each of its groups, as by group.leave: the members are told, an heir promoted. */
    function onDeleted(account: string): void {
      for (const id of store.groupsOf(account)) {
        const g = load(id);
        if (g?.members.has(account)) removeMembers(g, [account], account, "leave");
      }
    }

    function remove(conn: Conn, a: Record<string, unknown>): IqReply {
      const g = memberOf(conn, a.g, true);
      if (isFail(g)) return g;
      const r = accountsArg(a.m);
      if (isFail(r)) return r;
      const gone = r.filter((x) => g.members.has(x));
      if (gone.length === 0) return no(ErrorCode.BAD_FIELD, "no account named is a member");
      return { ok: true, r: { seq: removeMembers(g, gone, conn.account, "remove"), m: gone } };
    }

    function leave(conn: Conn, a: Record<string, unknown>): IqReply {
      const g = memberOf(conn, a.g);
      if (isFail(g)) return g;
      return { ok: true, r: { seq: removeMembers(g, [conn.account], conn.account, "leave") } };
    }

    function setRole(role: Role, op: "promote" | "demote") {
      return (conn: Conn, a: Record<string, unknown>): IqReply => {
        const g = memberOf(conn, a.g, true);
        if (isFail(g)) return g;
        const r = accountsArg(a.m);
        if (isFail(r)) return r;
        const notMembers = r.filter((x) => !g.members.has(x));
        if (notMembers.length) return no(ErrorCode.NOT_MEMBER, `not members of ${g.id}: ${notMembers.join(", ")}`);
        const change = r.filter((x) => g.members.get(x)!.role !== role);
        if (change.length === 0) return no(ErrorCode.BAD_FIELD, `every account named is already ${role === Role.ADMIN ? "an admin" : "not an admin"}`);
        if (role === Role.MEMBER && ![...g.members].some(([x, v]) => v.role === Role.ADMIN && !change.includes(x))) {
          return no(ErrorCode.FORBIDDEN, "a group must keep at least one admin; promote another member first");
        }
        const seq = ctx.seqs.next(g.id);
        store.setRole(g.id, change, role);
        for (const x of change) g.members.get(x)!.role = role;
        announce(g, seq, g.members.keys(), { op, by: conn.account, m: change });
        return { ok: true, r: { seq, m: change } };
      };
    }

    function rename(conn: Conn, a: Record<string, unknown>): IqReply {
      const g = memberOf(conn, a.g, true);
      if (isFail(g)) return g;
      const name = nameArg(a.name);
      if (isFail(name)) return name;
      const seq = ctx.seqs.next(g.id);
      store.rename(g.id, name);
      g.name = name;
      announce(g, seq, g.members.keys(), { op: "rename", by: conn.account, name });
      return { ok: true, r: { seq } };
    }

    function info(conn: Conn, a: Record<string, unknown>): IqReply {
      const g = memberOf(conn, a.g);
      if (isFail(g)) return g;
      const members = [...g.members].map(([u, x]) => ({ u, admin: x.role === Role.ADMIN, since: x.joined }));
      return { ok: true, r: { g: g.id, name: g.name, created: g.created, creator: g.creator, members } };
    }

    function list(conn: Conn): IqReply {
      const out = store.groupsOf(conn.account).map((id) => {
        const g = load(id)!;
        return { g: id, name: g.name, n: g.members.size };
      });
      return { ok: true, r: { groups: out } };
    }

    /**
     * In a cluster, a group lives on the node its id is homed on (an id is drawn until it is homed where the group
     * is created, about as many draws as there are nodes), and the other nodes forward its operations there
     * (src/core/cluster/forward.ts). On a single node the first draw is taken.
     */
    function localGroupId(): string {
      let id = newGroupId();
      while (!ctx.accept.homedHere(id)) id = newGroupId();
      return id;
    }

    const { onGmsg, messageState, onAcked, onExpired, onRead } = groupMessages(ctx, store, { load, memberOf }, { accepted, fanout, skipped });

    return [
      { stanza: "gmsg", handle: onGmsg },
      { iq: "group.create", handle: create },
      { iq: "group.add", handle: add },
      { iq: "group.remove", handle: remove },
      { iq: "group.leave", handle: leave },
      { iq: "group.promote", handle: setRole(Role.ADMIN, "promote") },
      { iq: "group.demote", handle: setRole(Role.MEMBER, "demote") },
      { iq: "group.rename", handle: rename },
      { iq: "group.info", handle: info },
      { iq: "group.list", handle: list },
      { iq: "group.state", handle: messageState },
      { hook: "delivery:acked", handle: onAcked },
      { hook: "delivery:expired", handle: onExpired },
      { hook: "read:group", handle: onRead },
      { hook: "account:deleted", handle: onDeleted },
      { hook: "shard:rows", handle: onShardRows },
    ];
  },
  stop() {
    // The store stays open across reloads (ctx.shared); what is buffered is written now.
    running?.store.flush();
  },
};

export default groups;
