/**
 * Calls (docs/PROTOCOL.md §6.13, docs/CALLS.md): signaling as ephemeral
 * `call` stanzas whose payloads (SDP, ICE candidates) are end-to-end
 * encrypted per device, so the server routes what it cannot read; TURN
 * credentials (iq calls.turn); shedding of new calls under load.
 *
 * - An offer rings every device of the callee: connected ones at once, the
 *   others get a ring push (ctx.push.ring) and the offer when they connect
 *   while it still rings (calls.ring_ttl).
 * - The first answer (or reject, busy) goes to the caller's device, and the
 *   callee's other devices get `stop`.
 * - A ring that ends unanswered (the caller hangs up, busy, timeout) leaves
 *   a queued, durable `evt {k: "call", op: "missed"}` on every device of the
 *   callee: who called, the call id and when; nothing of the payloads.
 * - Under load new group-call offers are refused first, then new 1:1 offers
 *   (`err overloaded`), never the signals of a call already ringing or in
 *   progress.
 */
import type { Config } from "../../core/config.ts";
import type { ModuleContext } from "../../core/context.ts";
import type { IqReply, Module, Registration } from "../../core/module.ts";
import { ItemKind } from "../../core/delivery.ts";
import { EventLoopMonitor } from "../../core/metrics.ts";
import { KeyedTokenBuckets } from "../../core/ratelimit.ts";
import { RelayControl } from "../../core/relays.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import type { CallC, CallS, Payloads } from "../../protocol/stanzas.ts";
import { issueTurnCredentials, parseSecrets } from "../../protocol/turn-rest.ts";
import type { Conn } from "../../transport/connection.ts";
import { Rings, type Ring } from "./rings.ts";

let stopRunning: (() => void) | null = null;

/** Who sent a call stanza: a connection here, or a device of another node (cluster mode). */
interface Sender {
  account: string;
  device: number;
  err(code: ErrorCode, message: string, id?: string | number, detail?: unknown): void;
}

type PeerItem =
  | { t: "call.in"; f: string; fd: number; s: CallC }
  | { t: "call.out"; a: string; d: number; s: CallS }
  | { t: "call.err"; a: string; d: number; e: ErrorCode; m: string; id?: string | number; x?: unknown };

/** How long an `overloaded` caller is asked to wait (the load is read once a second). */
const SHED_RETRY_MS = 5000;

const calls: Module = {
  name: "calls",
  version: "1.0.0",
  start(ctx: ModuleContext<Config["calls"]>): Registration[] {
    const cfg = ctx.options;
    const secrets = parseSecrets(cfg.secret);
    const rings = ctx.shared("calls.rings", () => new Rings());
    const relays = new RelayControl(cfg.relayControl.split(",").map((s) => s.trim()).filter(Boolean), secrets[0] ?? "");
    const loop = new EventLoopMonitor(null);
    loop.start();
    const offers = new KeyedTokenBuckets(cfg.offerRate / 60, cfg.offerRate);
    // Every signal (ICE trickles a few dozen per call): the server knows no established call to check them against,
    // so an account's signals are bounded instead.
    const signalBuckets = new KeyedTokenBuckets(cfg.signalRate, cfg.signalRate * 2);
    const m = ctx.metrics;
    const signals = (k: string) => m.counter("switchboard_call_signals_total", "Call stanzas routed, by kind.", { k });
    const shed = (scope: string) => m.counter("switchboard_calls_shed_total", "New call offers refused with overloaded, by scope (group calls are shed first, then direct ones).", { scope });
    const missed = m.counter("switchboard_calls_missed_total", "Missed-call notices queued (rings that ended unanswered), per callee account.");
    const ringPush = (r: string) => m.counter("switchboard_call_ring_pushes_total", "Ring pushes for offers to devices that were not connected, by outcome.", { r });
    const load = () => Math.max((loop.recentMs / cfg.maxLagMs) * 100, relays.load.percent);
    m.gauge("switchboard_calls_load_percent", "Load the calls module sheds new calls by: the higher of event-loop lag over calls.max_lag_ms and the relays' /load.", () => Math.round(load()));
    m.gauge("switchboard_calls_ringing", "Calls ringing now (the only call state the server keeps).", () => rings.size);

    const sweep = setInterval(() => {
      signalBuckets.sweep(Date.now());
      offers.sweep(Date.now());
      for (const r of rings.expire(Date.now(), cfg.ringTtl * 1000)) {
        stopCallee(r, "timeout", 0);
        toDevice(r.from, r.fromDevice, { t: "call", c: r.c, u: r.to, k: "stop", w: "timeout", ts: Date.now() });
        missedNotice(r);
      }
    }, 1000);
    stopRunning = () => {
      clearInterval(sweep);
      loop.stop();
      relays.stop();
    };

    /** Sends to every connection of one device (on its home node in cluster mode); false when it has none here. */
    function toDevice(account: string, device: number, s: CallS): boolean {
      const home = ctx.peers.home(account);
      if (home !== null) {
        ctx.peers.send(home, { t: "call.out", a: account, d: device, s });
        return true;
      }
      let any = false;
      for (const c of ctx.registry.sessionsOf(account, device)) {
        c.send(s);
        any = true;
      }
      return any;
    }

    function payloadFor(p: Payloads | undefined, device: number): Uint8Array | undefined {
      for (const e of p ?? []) if (e[0] === device) return e[1];
      return undefined;
    }

    /** Stops the callee's devices but `except` (the one that answered or rejected). */
    function stopCallee(r: Ring, why: string, except: number): void {
      for (const d of ctx.directory.deviceIds(r.to) ?? []) {
        if (d === except) continue;
        toDevice(r.to, d, { t: "call", c: r.c, u: r.from, d: r.fromDevice, k: "stop", w: why, ts: Date.now() });
      }
    }

    function missedNotice(r: Ring): void {
      const ts = Date.now();
      const stanza: { t: string; q: number; [k: string]: unknown } = { t: "evt", q: 0, k: "call", op: "missed", u: r.from, d: r.fromDevice, c: r.c, ts };
      if (r.g) stanza.g = r.g;
      ctx.accept.toDevices(r.to, { kind: ItemKind.EVENT, fromAccount: r.from, fromDevice: r.fromDevice, cid: "", seq: 0, ts }, stanza);
      missed.inc();
    }

    function refuse(conn: Sender, s: CallC, code: ErrorCode, msg: string, x?: unknown): void {
      conn.err(code, msg, s.c, x);
    }

    /** Shedding and the offer rate, on the caller's node (the load that matters is the one it sees). */
    function admitted(conn: Sender, s: CallC): boolean {
      const level = load();
      const scope = s.g ? "group" : "direct";
      if (level >= (s.g ? cfg.shedGroupAt : cfg.shedDirectAt)) {
        shed(scope).inc();
        refuse(conn, s, ErrorCode.OVERLOADED, `the server is shedding new ${scope} calls (load ${Math.round(level)} %); calls in progress go on`, { scope, retry_ms: SHED_RETRY_MS });
        return false;
      }
      if (offers.take(conn.account, Date.now()) > 0) {
        refuse(conn, s, ErrorCode.RATE_LIMITED, `more than ${cfg.offerRate} call offers a minute`);
        return false;
      }
      return true;
    }

    function offer(conn: Sender, s: CallC): void {
      const from = conn.account;
      if (rings.get(from, s.c)) return; // a resent offer: it rings already
      const ids = ctx.directory.deviceIds(s.to) ?? [];
      if (!ids.length) return refuse(conn, s, ErrorCode.NO_DEVICES, `${s.to} has no devices`);
      const given = new Set((s.p ?? []).map((e) => e[0]));
      const missing = ids.filter((d) => !given.has(d));
      const extra = [...given].filter((d) => !ids.includes(d));
      if (missing.length || extra.length) {
        return refuse(conn, s, ErrorCode.DEVICES_MISMATCH, "an offer must carry one payload for each current device of the callee", { missing: { [s.to]: missing }, extra: { [s.to]: extra } });
      }
      const r: Ring = { from, fromDevice: conn.device, to: s.to, c: s.c, g: s.g, at: Date.now(), pending: new Map() };
      rings.add(r);
      signals("offer").inc();
      for (const [d, p] of s.p ?? []) {
        const out: CallS = { t: "call", c: s.c, u: from, d: conn.device, k: "offer", p, ts: r.at };
        if (s.g) out.g = s.g;
        if (toDevice(s.to, d, out)) continue;
        r.pending.set(d, p);
        void ctx.push.ring(s.to, d).then((x) => ringPush(x.ok ? "sent" : x.reason).inc(), () => ringPush("failed").inc());
      }
    }

    /** answer, reject, busy: from a callee device, about the ring `s.to` started. */
    function reply(conn: Sender, s: CallC): void {
      const r = rings.get(s.to, s.c);
      if (!r || r.to !== conn.account) return refuse(conn, s, ErrorCode.UNKNOWN_CALL, "this call is not ringing (answered elsewhere, hung up or timed out)");
      rings.delete(r);
      signals(s.k).inc();
      const out: CallS = { t: "call", c: s.c, u: conn.account, d: conn.device, k: s.k, ts: Date.now() };
      const p = payloadFor(s.p, r.fromDevice);
      if (p) out.p = p;
      toDevice(r.from, r.fromDevice, out);
      stopCallee(r, s.k === "answer" ? "answered" : s.k === "reject" ? "rejected" : "busy", conn.device);
      if (s.k === "busy") missedNotice(r);
    }

    /** ice and hangup: to `td`, or to every device with a payload; a caller's hangup while it rings ends the ring. */
    function pass(conn: Sender, s: CallC): void {
      if (s.k === "hangup") {
        const r = rings.get(conn.account, s.c);
        if (r && r.to === s.to) {
          rings.delete(r);
          signals("hangup").inc();
          stopCallee(r, "hangup", 0);
          return missedNotice(r);
        }
      }
      signals(s.k).inc();
      const targets = s.td !== undefined ? [s.td] : (s.p ?? []).map((e) => e[0]);
      for (const d of targets) {
        const out: CallS = { t: "call", c: s.c, u: conn.account, d: conn.device, k: s.k, ts: Date.now() };
        const p = payloadFor(s.p, d);
        if (p) out.p = p;
        toDevice(s.to, d, out);
      }
    }

    function onCall(conn: Conn, s: CallC): void {
      const sender: Sender = { account: conn.account, device: conn.device, err: (e, m, id, x) => ctx.sendError(conn, e, m, id, x) };
      if (s.to === conn.account) return refuse(sender, s, ErrorCode.BAD_FIELD, "call.to must be another account");
      if (signalBuckets.take(conn.account, Date.now()) > 0) {
        signals("limited").inc();
        return refuse(sender, s, ErrorCode.RATE_LIMITED, `more than ${cfg.signalRate} call signals a second`);
      }
      if (s.k === "offer" && !admitted(sender, s)) return;
      // Cluster mode: a ring lives on the callee's home, where its devices connect. What the caller sends goes
      // there; the callee's answer, reject or busy is handled here (the ring is here), its ice and hangup go to
      // the caller's home like any signal to a device of another node (toDevice).
      const home = ctx.peers.home(s.to);
      if (home !== null && (s.k === "offer" || s.k === "ice" || s.k === "hangup")) {
        ctx.peers.send(home, { t: "call.in", f: conn.account, fd: conn.device, s });
        return;
      }
      process(sender, s);
    }

    function process(conn: Sender, s: CallC): void {
      // An account of another node (an answer to a caller there) is that node's to know.
      if (ctx.peers.home(s.to) === null && !ctx.directory.exists(s.to)) return refuse(conn, s, ErrorCode.UNKNOWN_USER, `no account ${s.to}`);
      const blocked = ctx.hooks.check("msg", conn.account, s.to);
      if (blocked?.refuse) return refuse(conn, s, blocked.refuse === "blocked" ? ErrorCode.BLOCKED : ErrorCode.RATE_LIMITED, blocked.m ?? "refused");
      switch (s.k) {
        case "offer": return offer(conn, s);
        case "answer": case "reject": case "busy": return reply(conn, s);
        default: return pass(conn, s);
      }
    }

    /** A device that connects while a call to it rings gets the offer now (after the ring push woke it). */
    function onReady(conn: Conn): void {
      for (const r of rings.towards(conn.account)) {
        const p = r.pending.get(conn.device);
        if (!p) continue;
        r.pending.delete(conn.device);
        const out: CallS = { t: "call", c: r.c, u: r.from, d: r.fromDevice, k: "offer", p, ts: r.at };
        if (r.g) out.g = r.g;
        conn.send(out);
      }
    }

    /** Items from the calls module of another node (over the presence link: ctx.peers; the presence module ignores them). */
    function fromPeer(from: string, body: unknown): void {
      const b = body as PeerItem;
      if (b?.t === "call.in") {
        const err = (e: ErrorCode, m: string, id?: string | number, x?: unknown) => void ctx.peers.send(from, { t: "call.err", a: b.f, d: b.fd, e, m, id, x });
        return process({ account: b.f, device: b.fd, err }, b.s);
      }
      if (b?.t === "call.out") return void toDevice(b.a, b.d, b.s);
      if (b?.t === "call.err") for (const c of ctx.registry.sessionsOf(b.a, b.d)) ctx.sendError(c, b.e, b.m, b.id, b.x);
    }

    function turn(conn: Conn): IqReply {
      if (!secrets.length) return { ok: false, e: ErrorCode.NOT_CONFIGURED, m: "this server has no TURN secret (calls.secret)" };
      const c = issueTurnCredentials(secrets[0]!, `${conn.account}/${conn.device}`, Date.now() / 1000, cfg.ttl);
      const urls = cfg.turnUrls.split(",").map((s) => s.trim()).filter(Boolean);
      return { ok: true, r: { u: c.username, p: c.password, exp: c.expires, ttl: cfg.ttl, urls } };
    }

    return [
      { stanza: "call", handle: onCall },
      { iq: "calls.turn", handle: (conn: Conn) => turn(conn) },
      { hook: "session:ready", handle: onReady },
      { hook: "device:revoked", handle: (account: string, device: number) => void relays.revoke(`${account}/${device}`) },
      { hook: "peer:presence", handle: (from: string, body: unknown) => fromPeer(from, body) },
      { hook: "account:deleted", handle: (account: string) => rings.dropAccount(account) },
    ];
  },
  stop() {
    stopRunning?.();
    stopRunning = null;
  },
};

export default calls;
