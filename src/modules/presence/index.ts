/**
 * Presence, contacts, privacy, blocking and typing (docs/PROTOCOL.md §6.6,
 * §6.10, §6.11).
 *
 * - Contacts, blocks and each account's privacy policy live in the module's
 *   own store (store.ts, presence.db); rules.ts decides who sees what.
 * - Online means in use: a device says `active` or `idle` (presence.state);
 *   an account is online while any device is active (live.ts).
 * - Devices subscribe to the accounts whose chats are open (presence.sub, at
 *   most presence.max_subs, leased); changes are pushed as `pst` frames.
 * - Blocks are enforced where messages and invitations are accepted: the
 *   messaging and groups modules ask `contact:check` (Hooks.check), which
 *   this module answers; core knows neither side.
 * - Typing is relayed to the target's connected devices only, never stored
 *   or queued, and only between acquainted accounts that do not block each
 *   other; typing, probes of strangers and receipts to strangers are
 *   rate-limited (the receipt-timing attack, "Careless Whisper").
 */
import { accountTables, touchedAccounts, type IqReply, type Module, type Registration, type ContactCheck, type ShardRows } from "../../core/module.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { Config } from "../../core/config.ts";
import { KeyedTokenBuckets } from "../../core/ratelimit.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { ACCOUNT_NAME_RE, type PresC } from "../../protocol/stanzas.ts";
import { ConnState, type Conn } from "../../transport/connection.ts";
import { Live, newLiveData, type LiveData } from "./live.ts";
import { ASK_TIMEOUT_MS, PresencePeers, type Answer } from "./cluster.ts";
import { blockedEitherWay, blocks, half, knows, policyName, policyOf, RulesCache } from "./rules.ts";
import { PRESENCE_SCHEMA, PresenceStore, Policy } from "./store.ts";

type Fail = { ok: false; e: ErrorCode; m: string; x?: Record<string, unknown> };
const no = (e: ErrorCode, m: string, x?: Record<string, unknown>): Fail => (x ? { ok: false, e, m, x } : { ok: false, e, m });
const isFail = (v: unknown): v is Fail => typeof v === "object" && v !== null && (v as Fail).ok === false;

interface State {
  store: PresenceStore;
  rules: RulesCache;
  live: LiveData;
}

let stopRunning: (() => void) | null = null;

const presence: Module = {
  name: "presence",
  version: "2.0.0",
  start(ctx: ModuleContext<Config["presence"]>): Registration[] {
    const cfg = ctx.options;
    const state = ctx.shared<State>("presence", () => {
      const store = new PresenceStore(ctx.database("presence", PRESENCE_SCHEMA));
      const def = policyOf(cfg.defaultPolicy) ?? Policy.CONTACTS;
      return { store, rules: new RulesCache(store, { lastSeen: def, online: def }, cfg.rulesCache), live: newLiveData() };
    });
    const { store, rules } = state;
    // Every write of the rules bumps the facts epoch in RulesCache (connections keep the rule's answers: src/core/facts.ts).
    rules.onChange = () => ctx.facts.changed();
    const m = ctx.metrics;
    const frames = m.counter("switchboard_presence_frames_total", "Presence frames (pst) sent to subscribed devices.");
    const changes = m.counter("switchboard_presence_changes_total", "Announced online/offline changes of accounts.");
    const cpu = m.counter("switchboard_presence_cpu_seconds_total", "Event-loop time spent in the presence module (handlers and its tick), seconds.");
    const typingOut = m.counter("switchboard_typing_relayed_total", "Typing notifications relayed to a connected device.");
    const dropped = (reason: string) => m.counter("switchboard_typing_dropped_total", "Typing notifications dropped, by reason.", { reason });
    const refused = (kind: string) => m.counter("switchboard_presence_limited_total", "Requests and receipts refused or dropped by the stranger and typing rate limits, by kind.", { kind });
    m.gauge("switchboard_presence_subscriptions", "Live presence subscriptions.", () => {
      let n = 0;
      for (const s of state.live.subs.values()) n += s.size;
      return n;
    });
    m.gauge("switchboard_presence_rules_cached", "Accounts whose rules (contacts, blocks, privacy) are in memory; at most presence.rules_cache.", () => rules.size);
    m.gauge("switchboard_presence_online_accounts", "Accounts announced online (a device active, or within the grace).", () => state.live.online.size);

    const live = new Live(state.live, rules, store, {
      graceMs: cfg.graceMs,
      coalesceMs: cfg.coalesceMs,
      leaseMs: cfg.leaseMs,
      lastSeenWriteMs: cfg.lastSeenWrite * 1000,
      lastSeenFlushMs: cfg.lastSeenFlushMs,
    }, { frames, changes }, ctx.storage);
    // Cluster mode: accounts homed on other nodes (cluster.ts); inert on a single node (home() is always null).
    const peerItems = (kind: string) => m.counter("switchboard_presence_peer_items_total", "Presence items sent to other nodes of the cluster, by kind (s subscribe or watcher change, r renew, g look, answer to s/g, v views pushed on a change, t typing).", { kind });
    const peers = new PresencePeers(ctx.peers, live, cfg.leaseMs, {
      knows: (target, viewer) => knows(rules.get(target), viewer),
      exists: (a) => ctx.directory.exists(a),
      typing: (from, device, to, st, fb, fk) => relay(from, device, to, st, fb, fk),
      blockedBy: (node, account, by, on) => rules.setBlockedBy(account, by, node, on),
      replaceBlockedBy: (node, rows, clear) => rules.replaceBlockedBy(node, rows, clear),
    }, { items: peerItems, dropped: m.counter("switchboard_presence_peer_items_dropped_total", "Cluster: presence items not sent because their node had presence.peer_backlog unacknowledged (down or cut off).") }, cfg.peerBacklog);
    // Cluster mode: once the cluster node exists (it is made after the modules start), this node's blocks of accounts
    // of other nodes go to their homes once, repairing any `b` lost with a crash (cluster.ts `B`). One read of the
    // blocks table per start.
    let resynced = false;
    function resync(): void {
      if (resynced || ctx.peers.nodes().length === 0) return;
      resynced = true;
      peers.resync(store.allBlocks());
    }
    live.peer = peers;
    /**
     * Cluster: the rules of a moving home shard's accounts go with it (docs/CLUSTER.md "Moving shards"); what is
     * cached of them is dropped, and the blocks between accounts of two nodes are stated again to every peer (`B`),
     * since a block between two accounts of one node became one between two nodes, or the other way round.
     */
    function onShardRows(o: ShardRows): void {
      live.flush(Date.now()); // the held last-seen values go with the rows
      accountTables(store.db, "presence", PRESENCE_TABLES, o);
      if (o.op === "export") return;
      const touched = touchedAccounts("presence", PRESENCE_TABLES, o); // a shipment in chunks: rows of accounts an earlier chunk named
      if (touched.length === 0) return;
      for (const a of touched) rules.forget(a);
      peers.resync(store.allBlocks());
    }
    m.gauge("switchboard_presence_peer_interests", "Cluster: (account of this node, interested node) pairs: node-level subscriptions held here.", () => peers.counts().interests);
    m.gauge("switchboard_presence_peer_backlog", "Cluster: presence items sent to other nodes and not acknowledged yet (at most presence.peer_backlog per node).", () => peers.backlogSize());
    m.gauge("switchboard_presence_peer_watchers", "Cluster: watcher accounts on other nodes behind those subscriptions.", () => peers.counts().watchers);

    const typingBuckets = new KeyedTokenBuckets(cfg.typingRate, cfg.typingRate * 4);
    const strangerBuckets = new KeyedTokenBuckets(cfg.strangerRate / 60, cfg.strangerRate);
    const receiptBuckets = new KeyedTokenBuckets(cfg.strangerReceipts / 60, cfg.strangerReceipts);

    /** Wall time of synchronous work on the event loop is its CPU time: ~40 ns for the two clock reads. */
    function timed<A extends unknown[], R>(fn: (...a: A) => R): (...a: A) => R {
      return (...a: A) => {
        const t0 = performance.now();
        try {
          return fn(...a);
        } finally {
          cpu.inc((performance.now() - t0) / 1000);
        }
      };
    }

    // One tick for grace, coalescing, leases and last-seen writes: a quarter of the shortest duration, 10 ms..1 s.
    const tickMs = Math.max(10, Math.min(1000, Math.floor(Math.min(cfg.graceMs || 1000, cfg.coalesceMs || 1000, cfg.leaseMs / 4) / 4)));
    let lastSweep = Date.now();
    const timer = setInterval(timed(() => {
      const now = Date.now();
      try {
        live.tick(now);
        resync();
        peers.tick(now);
        retryTalk(now);
      } catch (e) {
        ctx.log.error("presence tick failed", { err: e as Error, stack: (e as Error).stack });
      }
      if (now - lastSweep >= 60_000) {
        lastSweep = now;
        for (const b of [typingBuckets, strangerBuckets, receiptBuckets]) b.sweep(now);
      }
    }), tickMs);
    timer.unref?.();
    stopRunning = () => {
      clearInterval(timer);
      live.writeOnline(Date.now());
    };

    /** `a.u` as a list of distinct existing account names, 1..max. */
    function accounts(v: unknown, max: number, mustExist = true): string[] | Fail {
      const list = typeof v === "string" ? [v] : v;
      if (!Array.isArray(list) || list.length === 0 || list.length > max) return no(ErrorCode.BAD_FIELD, `a.u must be an account name or an array of 1..${max} account names`);
      const out = new Set<string>();
      for (const x of list) {
        if (typeof x !== "string" || !ACCOUNT_NAME_RE.test(x)) return no(ErrorCode.BAD_FIELD, `a.u entries must be account names, got ${JSON.stringify(x)?.slice(0, 40)}`);
        out.add(x);
      }
      if (mustExist) {
        const unknown = [...out].filter((a) => !ctx.directory.exists(a));
        if (unknown.length) return no(ErrorCode.UNKNOWN_USER, `no account ${unknown.join(", ")}`);
      }
      return [...out];
    }

    function oneAccount(conn: Conn, v: unknown): string | Fail {
      if (typeof v !== "string" || !ACCOUNT_NAME_RE.test(v)) return no(ErrorCode.BAD_FIELD, "a.u must be an account name");
      if (v === conn.account) return no(ErrorCode.BAD_FIELD, "a.u is your own account");
      if (!ctx.directory.exists(v)) return no(ErrorCode.UNKNOWN_USER, `no account ${v}`);
      return v;
    }

    // ---- contacts -----------------------------------------------------------

    function contactsAdd(conn: Conn, a: Record<string, unknown>): IqReply {
      const list = accounts(a.u, 256);
      if (isFail(list)) return list;
      if (list.includes(conn.account)) return no(ErrorCode.BAD_FIELD, "a.u names your own account");
      const r = rules.get(conn.account);
      const fresh = list.filter((x) => !r.contacts.has(x));
      if (r.contacts.size + fresh.length > cfg.maxContacts) return no(ErrorCode.TOO_MANY_CONTACTS, `at most ${cfg.maxContacts} contacts; you have ${r.contacts.size}`);
      const n = rules.addContacts(conn.account, fresh);
      live.recheck(conn.account);
      return { ok: true, r: { n } };
    }

    function contactsRemove(conn: Conn, a: Record<string, unknown>): IqReply {
      const list = accounts(a.u, 256, false);
      if (isFail(list)) return list;
      const n = rules.removeContacts(conn.account, list);
      live.recheck(conn.account); // a watcher no longer a contact loses what "contacts" showed it, at once
      return { ok: true, r: { n } };
    }

    const sorted = (s: ReadonlySet<string>) => [...s].sort();

    // ---- privacy ------------------------------------------------------------

    function privacyOf(account: string) {
      const r = rules.get(account);
      return { ls: policyName(r.lastSeen), online: policyName(r.online) };
    }

    function privacySet(conn: Conn, a: Record<string, unknown>): IqReply {
      if (a.ls === undefined && a.online === undefined) return no(ErrorCode.BAD_FIELD, "give a.ls, a.online or both: everyone, contacts or nobody");
      const r = rules.get(conn.account);
      const ls = a.ls === undefined ? r.lastSeen : policyOf(a.ls);
      const online = a.online === undefined ? r.online : policyOf(a.online);
      if (ls === null) return no(ErrorCode.BAD_FIELD, `a.ls must be everyone, contacts or nobody, got ${JSON.stringify(a.ls)?.slice(0, 40)}`);
      if (online === null) return no(ErrorCode.BAD_FIELD, `a.online must be everyone, contacts or nobody, got ${JSON.stringify(a.online)?.slice(0, 40)}`);
      rules.setPrivacy(conn.account, ls, online);
      live.recheck(conn.account);
      return { ok: true, r: privacyOf(conn.account) };
    }

    // ---- blocking -----------------------------------------------------------

    function blockAdd(conn: Conn, a: Record<string, unknown>): IqReply | Promise<IqReply> {
      const u = oneAccount(conn, a.u);
      if (isFail(u)) return u;
      if (rules.block(conn.account, u, true)) live.recheck(conn.account); // ends the subscriptions both ways
      return toHome(u, conn.account, true);
    }

    function blockRemove(conn: Conn, a: Record<string, unknown>): IqReply | Promise<IqReply> {
      if (typeof a.u !== "string" || !ACCOUNT_NAME_RE.test(a.u)) return no(ErrorCode.BAD_FIELD, "a.u must be an account name");
      rules.block(conn.account, a.u, false);
      return toHome(a.u, conn.account, false);
    }

    /**
     * Cluster mode: a block of an account of another node goes to its home (cluster.ts `b`), which checks that
     * account's messages, receipts and invitations. The answer waits for its ack, so the block holds there once the
     * blocker sees ok; a home that does not ack within ASK_TIMEOUT_MS (down: its accounts send nothing meanwhile)
     * gets it when it is back (the link retries; the start resync repairs a loss), and the blocker its ok now.
     */
    function toHome(u: string, by: string, on: boolean): IqReply | Promise<IqReply> {
      if (!peers.remote(u)) return { ok: true };
      const acked = peers.block(by, u, on);
      return Promise.race([acked, Bun.sleep(ASK_TIMEOUT_MS)]).then((): IqReply => ({ ok: true }));
    }

    // ---- presence -----------------------------------------------------------

    /** Strangers (who never wrote to the viewer and do not have it as a contact) cost a token each. */
    function strangerLimit(viewer: string, targets: string[], now: number, known = (t: string) => knows(rules.get(t), viewer)): Fail | null {
      for (const t of targets) {
        if (t === viewer || known(t)) continue;
        const wait = strangerBuckets.take(viewer, now);
        if (wait > 0) {
          refused("stranger_presence").inc();
          return no(ErrorCode.RATE_LIMITED, `too many presence requests about accounts that do not know you; retry in ${wait} ms`, { retry_ms: wait });
        }
      }
      return null;
    }

    /** A remote account's home did not answer in time (its node is down or the link is): retry_after. */
    const noAnswer = (t: string): Fail => no(ErrorCode.RETRY_AFTER, `the home node of ${t} did not answer within ${ASK_TIMEOUT_MS} ms; try again later`, { retry_ms: 1000 });

    function query(conn: Conn, a: Record<string, unknown>): IqReply | Promise<IqReply> {
      if (typeof a.u !== "string" || !ACCOUNT_NAME_RE.test(a.u)) return no(ErrorCode.BAD_FIELD, "a.u must be an account name");
      if (!ctx.directory.exists(a.u)) return no(ErrorCode.UNKNOWN_USER, `no account ${a.u}`);
      const u = a.u;
      if (peers.remote(u)) {
        return peers.ask(conn.account, half(conn.account, rules.get(conn.account), u), u, false).then((ans): IqReply => {
          if (ans === null) return noAnswer(u);
          const limited = strangerLimit(conn.account, [u], Date.now(), () => ans.known);
          return limited ?? { ok: true, r: ans.v ?? {} };
        });
      }
      const limited = strangerLimit(conn.account, [a.u], Date.now());
      if (limited) return limited;
      return { ok: true, r: live.view(conn.account, a.u) ?? {} };
    }

    function setState(conn: Conn, a: Record<string, unknown>): IqReply {
      if (a.s !== "active" && a.s !== "idle") return no(ErrorCode.BAD_FIELD, `a.s must be active or idle, got ${JSON.stringify(a.s)?.slice(0, 40)}`);
      if (conn.rx === false) return no(ErrorCode.FORBIDDEN, "a non-receiving session (auth rx: false) has no presence; use the device's receiving session");
      live.setState(conn, a.s === "active", Date.now());
      return { ok: true };
    }

    function subscribe(conn: Conn, a: Record<string, unknown>): IqReply | Promise<IqReply> {
      const list = accounts(a.u, cfg.maxSubs);
      if (isFail(list)) return list;
      const fresh = list.filter((t) => !live.isSubscribed(conn, t));
      const have = live.subscriptionCount(conn);
      if (have + fresh.length > cfg.maxSubs) {
        return no(ErrorCode.TOO_MANY_SUBSCRIPTIONS, `a device may watch at most ${cfg.maxSubs} accounts (it watches ${have}); unsubscribe from closed chats first`);
      }
      const remote = list.filter((t) => peers.remote(t));
      if (remote.length > 0) return subscribeRemote(conn, list, fresh, remote);
      const now = Date.now();
      const limited = strangerLimit(conn.account, fresh, now);
      if (limited) return limited;
      const p: Record<string, unknown>[] = [];
      const denied: string[] = [];
      for (const t of list) {
        const v = live.subscribe(conn, t, now);
        if (v === null) denied.push(t);
        else p.push({ u: t, ...v });
      }
      return { ok: true, r: { lease: cfg.leaseMs, p, no: denied } };
    }

    /** presence.sub naming accounts of other nodes: their homes decide their views (cluster.ts), then as above. */
    async function subscribeRemote(conn: Conn, list: string[], fresh: string[], remote: string[]): Promise<IqReply> {
      const rv = rules.get(conn.account);
      const answers = new Map<string, Answer | null>();
      await Promise.all(remote.map(async (t) => answers.set(t, await peers.ask(conn.account, half(conn.account, rv, t), t, true))));
      const giveUp = () => {
        for (const t of remote) if (!live.isSubscribed(conn, t)) peers.unwatched(t); // the home drops the viewer it was asked about
      };
      const missing = remote.find((t) => answers.get(t) === null);
      if (missing !== undefined) return giveUp(), noAnswer(missing);
      const now = Date.now();
      const limited = strangerLimit(conn.account, fresh, now, (t) => answers.get(t)?.known ?? knows(rules.get(t), conn.account));
      if (limited || conn.state === ConnState.CLOSED) return giveUp(), limited ?? no(ErrorCode.INTERNAL, "the connection closed");
      const p: Record<string, unknown>[] = [];
      const denied: string[] = [];
      for (const t of list) {
        const ans = answers.get(t);
        const v = ans === undefined ? live.subscribe(conn, t, now) : live.put(conn, t, ans!.v, now);
        if (v === null) denied.push(t);
        else p.push({ u: t, ...v });
      }
      giveUp(); // a denied remote target: the home forgets the viewer
      return { ok: true, r: { lease: cfg.leaseMs, p, no: denied } };
    }

    function unsubscribe(conn: Conn, a: Record<string, unknown>): IqReply {
      const list = accounts(a.u, cfg.maxSubs, false);
      if (isFail(list)) return list;
      for (const t of list) live.unsubscribe(conn, t);
      return { ok: true };
    }

    // ---- typing -------------------------------------------------------------

    function onPres(conn: Conn, s: PresC): void {
      const from = conn.account;
      if (s.to === from) return void dropped("unknown").inc();
      const rf = rules.get(from);
      const fb = rf.blocks.has(s.to) || rf.blockedBy.has(s.to);
      if (fb) return void dropped("blocked").inc();
      if (typingBuckets.take(from, Date.now()) > 0) return void dropped("rate").inc();
      // An account of another node: its home has the rest of the rule (its blocks, whether it knows the sender).
      if (peers.remote(s.to)) return peers.typing(from, conn.device, s.to, s.s, fb, knows(rf, s.to));
      relay(from, conn.device, s.to, s.s, fb, knows(rf, s.to));
    }

    /** Typing to a local account, given the sender's half (it blocks the target, it knows it). */
    function relay(from: string, device: number, to: string, st: "typing" | "paused", fromBlocks: boolean, fromKnows: boolean): void {
      if (!ctx.directory.exists(to)) return void dropped("unknown").inc();
      const rt = rules.get(to);
      if (fromBlocks || rt.blocks.has(from) || rt.blockedBy.has(from)) return void dropped("blocked").inc();
      if (!fromKnows && !knows(rt, from)) return void dropped("stranger").inc();
      // Only connected devices: never stored, never queued, never pushed.
      for (const target of ctx.registry.devices(to)) {
        target.send({ t: "pres", u: from, d: device, s: st });
        typingOut.inc();
      }
    }

    // ---- the rule other modules ask -----------------------------------------

    // On every 1:1 message and dlv receipt. Measured 0.18-0.24 µs a check (this handler through Hooks.check, with
    // timed(), 1000 warm pairs; an empty chain costs 0.02-0.05 µs) on the 2-core machine of BENCHMARKS.md, whose
    // 1:1 message costs 16.9 µs of server CPU: about 1.5 %. A pair's first check also writes its talked row (once).

    // Every answer below is cacheable (c.cacheable: core may keep it on the asking connection until ctx.facts.changed(),
    // src/core/facts.ts) but a receipt to a stranger, which a rate limit decides. What the answers read: blocks and
    // remote blocks (RulesCache bumps on every change), contacts and talked (knows: contacts bumped; talked only ever grows,
    // and a growing `knows` turns no cached answer wrong: a stranger's receipt is never cached).
    function onCheck(c: ContactCheck): void {
      if (c.from === c.to) return void (c.cacheable = true);
      const rf = rules.get(c.from);
      const rt = rules.get(c.to);
      if (c.kind === "read") {
        // A read receipt is the reader's own act: no stranger limit, only blocks (§6.11).
        if (blockedEitherWay(c.from, rf, c.to, rt)) c.refuse = "blocked";
        c.cacheable = true;
        return;
      }
      if (c.kind === "receipt") {
        // A dlv receipt from c.from (the recipient) to c.to (the sender).
        if (blockedEitherWay(c.from, rf, c.to, rt)) (c.refuse = "blocked", (c.cacheable = true));
        else if (knows(rf, c.to)) c.cacheable = true;
        else if (receiptBuckets.take(`${c.from}\u0000${c.to}`, Date.now()) > 0) {
          refused("stranger_receipt").inc();
          c.refuse = "limited";
        }
        return;
      }
      c.cacheable = true; // blocks only; a message's pass records the pair as talked first, once
      if (blocks(c.from, rf, c.to, rt)) {
        c.refuse = "blocked";
        c.m = c.kind === "msg" ? `you blocked ${c.to}; unblock them to write to them` : `you blocked ${c.to}; unblock them to add them`;
      } else if (blocks(c.to, rt, c.from, rf)) {
        c.refuse = "blocked";
        c.m = c.kind === "msg" ? `${c.to} does not accept messages from you` : `${c.to} cannot be added to a group by you`;
      } else if (c.kind === "msg") talked(c.from, c.to);
    }

    /**
     * "These two have written to each other" rows a full disk refused: the rule already holds them in memory (so
     * it answers the same way meanwhile) and a later tick writes them. Without this a SQLITE_FULL escaped the
     * contact:check hook on every first message of a conversation (issue 17). No alarm of their own: the row
     * only spares a pair the stranger limits, it is written again by the pair's next message after a crash, and
     * the message itself meets the disk in its own commit, which raises the alarm and refuses what is not durable.
     */
    const unwrittenTalk: [string, string][] = [];
    function talked(from: string, to: string): void {
      try {
        rules.talked(from, to);
      } catch (e) {
        if (ctx.storage.cause(e) === null) throw e;
        unwrittenTalk.push([from, to]);
      }
    }
    let lastTalkRetry = 0;
    function retryTalk(now: number): void {
      if (unwrittenTalk.length === 0 || now - lastTalkRetry < ctx.storage.retryMs) return;
      lastTalkRetry = now;
      try {
        for (const [from, to] of unwrittenTalk) store.talked(from, to);
      } catch (e) {
        if (ctx.storage.cause(e) === null) throw e;
        return;
      }
      unwrittenTalk.length = 0;
    }

    return [
      { stanza: "pres", handle: timed(onPres) },
      { iq: "contacts.add", handle: timed(contactsAdd) },
      { iq: "contacts.remove", handle: timed(contactsRemove) },
      { iq: "contacts.list", handle: (conn: Conn): IqReply => ({ ok: true, r: { u: sorted(rules.get(conn.account).contacts) } }) },
      { iq: "privacy.get", handle: (conn: Conn): IqReply => ({ ok: true, r: privacyOf(conn.account) }) },
      { iq: "privacy.set", handle: timed(privacySet) },
      { iq: "block.add", handle: timed(blockAdd) },
      { iq: "block.remove", handle: timed(blockRemove) },
      { iq: "block.list", handle: (conn: Conn): IqReply => ({ ok: true, r: { u: sorted(rules.get(conn.account).blocks) } }) },
      { iq: "presence", handle: timed(query) },
      { iq: "presence.state", handle: timed(setState) },
      { iq: "presence.sub", handle: timed(subscribe) },
      { iq: "presence.unsub", handle: timed(unsubscribe) },
      { hook: "contact:check", handle: timed(onCheck) },
      { hook: "session:closed", handle: timed((conn: Conn) => live.closed(conn, Date.now())) },
      { hook: "account:deleted", handle: (account: string) => (live.forget(account), rules.drop(account)) },
      { hook: "peer:presence", handle: timed((from: string, body: unknown) => peers.received(from, body, Date.now())) },
      { hook: "shard:rows", handle: onShardRows },
    ];
  },
  stop() {
    stopRunning?.();
    stopRunning = null;
  },
};

/** Presence's per-account tables, by the column naming the account (a shard move: `shard:rows`). */
const PRESENCE_TABLES = [["contacts", "account"], ["blocks", "account"], ["talked", "account"], ["privacy", "account"], ["blocked_by", "account"], ["last_seen", "account"]] as const;

export default presence;
