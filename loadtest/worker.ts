/**
 * A load worker: one child process holding up to ~15 000 lean connections,
 * driven by the coordinator (loadtest/main.ts) over Bun IPC with JSON
 * messages (see `Cmd` and `Ev` in ./ipc.ts).
 *
 * Both devices of a pair live in the same worker, so the delivery latency
 * (send -> `msg` at the recipient) is measured on one clock.
 */
import * as hdr from "hdr-histogram-js";
import { LeanConn, flushAll, helloOpts, keyFromSeed, msgTemplate, K_MSG, K_SENT, K_RCPT, type Scanned, type LeanHandlers, type LoginTarget, setIdPrefix, randomIdPrefix } from "./lean.ts";
import { startOpenLoop } from "./open-loop.ts";
import type { Cmd, Ev, RunOpts, Totals } from "./ipc.ts";
import { newHistogram } from "./stats.ts";
import type { Identity } from "./setup.ts";

function send(ev: Ev): void {
  process.send!(ev);
}

/** Per-message flags, indexed by the message counter. */
const F_SENT = 1; // written to the socket
const F_ACKED = 2; // `sent` received: the server holds it
const F_DELIVERED = 4; // delivered to the recipient
const F_RCPT = 8; // `dlv` receipt back at the sender

/** One direction of a pair: a device sending to its partner. */
class Sender {
  next = 1;
  inflight = 0;
  flags = new Uint8Array(1024);
  /** Intended send time (performance.now() ms) of each message. */
  times = new Float64Array(1024);
  /** Highest seq seen at the recipient (for out-of-order detection). */
  lastSeq = 0;
  quota = 0;
  done = false;
  /** Added to the message counter to form the wire id (offline: the sender's index times OFFLINE_ID_BASE). */
  idBase = 0;
  constructor(readonly conn: LeanConn, readonly template: Uint8Array) {}

  grow(): void {
    const f = new Uint8Array(this.flags.length * 2);
    f.set(this.flags);
    this.flags = f;
    const t = new Float64Array(this.times.length * 2);
    t.set(this.times);
    this.times = t;
  }
}

interface ConnRole {
  /** What this device sends (null for a one-way receiver). */
  out: Sender | null;
  /** What this device receives: its partner's sender. */
  in: Sender | null;
}

let target: LoginTarget = { host: "127.0.0.1", port: 0 };
let ids: Identity[] = [];
let conns: LeanConn[] = [];
let senders: Sender[] = [];
let loginHist = newHistogram();
let deliveryHist = newHistogram();
let sentHist = newHistogram();
let rcptHist = newHistogram();
/** Open loop: how late the generator itself wrote each message (timer granularity, its own CPU). */
let lagHist = newHistogram();

const t: Totals = {
  sent: 0, acked: 0, delivered: 0, duplicates: 0, out_of_order: 0, receipts: 0, receipt_duplicates: 0,
  errors: 0, disconnects: 0, pongs: 0, unknown: 0,
};
let errorSamples: string[] = [];
let measuring = false;
let running = false;
let run: RunOpts | null = null;
let base = { sent: 0, delivered: 0, acked: 0, receipts: 0 };
let markAt = 0;
let payload = new Uint8Array(0);
/** Ends the open loop (a no-op when none runs). */
let stopOpenLoop = (): void => {};
/** Open loop: how late the generator itself wrote each message, while measuring. */
const recordLag = (us: number): void => {
  if (measuring) lagHist.recordValue(us);
};
let pingTimer: ReturnType<typeof setInterval> | null = null;
let sendersDone = 0;

function sample(s: string): void {
  if (errorSamples.length < 10) errorSamples.push(s);
}

/** offline: wire ids are senderIndex * OFFLINE_ID_BASE + n, so one recipient can tell its many senders apart. */
const OFFLINE_ID_BASE = 100_000_000;
/** offline: the recipients (`c.user === "rcpt"`) are logged in after the queue phase; senders are their own accounts. */
let offline = false;
/** What frees a place in a sender's window: its dlv receipt (pairs) or its `sent` (offline: nobody is online to receive). */
let windowOn = F_RCPT;
let drainStart = 0;
let lastDeliverAt = 0;
let drainBase = 0;

/** The message number of the frame just looked up by ownSender() / fromSender() (a module variable: no tuple per frame). */
let n = 0;

/** The connection's own sender, for a `sent` or a receipt about message `n` of it; null when it sent no such message. */
function ownSender(c: LeanConn, s: Scanned): Sender | null {
  const o = (c.user as ConnRole | null)?.out;
  if (!o) return null;
  n = s.id - o.idBase;
  return n >= 1 && n < o.next ? o : null;
}

/** The sender of a delivered `msg` (pairs: the partner; offline: the one its id names); null when nobody here sent it. */
function fromSender(c: LeanConn, s: Scanned): Sender | null {
  const o = offline ? (c.user === "rcpt" && s.id >= 0 ? senders[Math.floor(s.id / OFFLINE_ID_BASE)] : undefined) : (c.user as ConnRole | null)?.in;
  if (!o) return null;
  n = s.id - o.idBase;
  return n >= 1 && n < o.next ? o : null;
}

/** A `sent` (F_ACKED) or a dlv receipt (F_RCPT) for one of c's messages: counted once; it may free a place in the window. */
function answered(c: LeanConn, s: Scanned, flag: number): void {
  const o = ownSender(c, s);
  if (!o) {
    t.unknown++;
    return;
  }
  const f = o.flags[n]!;
  if (f & flag) {
    // A repeated `sent` (a resend) is not expected here and not counted; a repeated receipt is.
    if (flag === F_RCPT) t.receipt_duplicates++;
    return;
  }
  o.flags[n] = f | flag;
  if (flag === F_ACKED) t.acked++;
  else t.receipts++;
  if (measuring) (flag === F_ACKED ? sentHist : rcptHist).recordValue(usSince(o.times[n]!));
  if (flag !== windowOn) return;
  o.inflight--;
  if (running && run!.mode === "closed") pump(o, performance.now());
  else checkDone(o);
}

const handlers: LeanHandlers = {
  onFrame(c: LeanConn, s: Scanned) {
    switch (s.kind) {
      case K_MSG: {
        c.ack(s.q);
        const from = fromSender(c, s);
        if (!from) {
          t.unknown++;
          sample(`unexpected msg id ${s.id} on ${c.account}`);
          return;
        }
        const f = from.flags[n]!;
        if (f & F_DELIVERED) {
          t.duplicates++;
          return;
        }
        from.flags[n] = f | F_DELIVERED;
        t.delivered++;
        // One conversation per sender and recipient: its sequence numbers only grow.
        if (s.seq <= from.lastSeq) t.out_of_order++;
        else from.lastSeq = s.seq;
        if (offline) lastDeliverAt = performance.now();
        else if (measuring) deliveryHist.recordValue(usSince(from.times[n]!));
        return;
      }
      case K_SENT:
        return answered(c, s, F_ACKED);
      case K_RCPT:
        c.ack(s.q);
        if (s.dlv) answered(c, s, F_RCPT);
        return;
      default:
        t.pongs++;
    }
  },
  onClose(c: LeanConn, reason: string) {
    t.disconnects++;
    sample(`${c.account} closed: ${reason}`);
  },
  onError(c: LeanConn, code: string, message: string) {
    t.errors++;
    sample(`${c.account} err ${code}: ${message}`);
  },
};

function usSince(ms: number): number {
  const us = Math.round((performance.now() - ms) * 1000);
  return us < 1 ? 1 : us;
}

/** Closed loop: keeps `window` messages in flight (until their dlv receipt) per sender. */
function pump(o: Sender, now: number): void {
  const w = run!.window;
  while (o.inflight < w && (o.quota === 0 || o.next <= o.quota)) emit(o, now);
  checkDone(o);
}

function emit(o: Sender, intended: number): void {
  const n = o.next++;
  if (n >= o.flags.length) o.grow();
  o.flags[n] = F_SENT;
  o.times[n] = intended;
  o.inflight++;
  t.sent++;
  o.conn.sendMsg(o.idBase + n, o.template, payload);
}

function checkDone(o: Sender): void {
  if (o.done || o.quota === 0 || o.next <= o.quota || o.inflight > 0) return;
  o.done = true;
  if (++sendersDone === senders.length) send({ ev: "done" });
}

async function login(concurrency: number): Promise<void> {
  const t0 = performance.now();
  let nextIdx = 0;
  let online = 0;
  let failed = 0;
  const reasons: Record<string, number> = {};
  const progress = setInterval(() => send({ ev: "progress", online, failed }), 1000);
  const one = async (i: number) => {
    const id = ids[i]!;
    const key = keyFromSeed(Buffer.from(id.seed, "hex"));
    for (let attempt = 0; attempt < 4; attempt++) {
      const c = new LeanConn(id.account, id.device, key, handlers);
      c.index = i;
      const s = performance.now();
      if (await c.login(target)) {
        loginHist.recordValue(usSince(s));
        conns[i] = c;
        online++;
        return;
      }
      const r = c.closeReason.replace(/[0-9]+/g, "N").slice(0, 80);
      reasons[r] = (reasons[r] ?? 0) + 1;
      await Bun.sleep(50 * (attempt + 1) + Math.random() * 100);
    }
    failed++;
  };
  const lane = async () => {
    while (nextIdx < ids.length) await one(nextIdx++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, lane));
  clearInterval(progress);
  send({ ev: "online", online, failed, ms: performance.now() - t0, hist: hdr.encodeIntoCompressedBase64(loginHist), reasons });
}

/** Heartbeats: each connection pings every `pi` seconds, spread evenly over the interval. */
function startHeartbeats(pi: number): void {
  let tick = 0;
  pingTimer = setInterval(() => {
    const slot = tick++ % pi;
    for (let i = slot; i < conns.length; i += pi) {
      const c = conns[i];
      if (c && c.state === "ready") c.ping(tick);
    }
    flushAll();
  }, 1000);
}

/** The payload every message carries: `size` bytes of a fixed pattern. */
function setPayload(size: number): void {
  payload = new Uint8Array(size);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
}

function setupPairs(o: RunOpts): void {
  setPayload(o.size);
  senders = [];
  for (let i = 0; i + 1 < conns.length; i += 2) {
    const a = conns[i];
    const b = conns[i + 1];
    if (!a || !b) continue;
    const ab = new Sender(a, msgTemplate(b.account, b.device, o.size));
    const ba = o.oneway ? null : new Sender(b, msgTemplate(a.account, a.device, o.size));
    a.user = { out: ab, in: ba } satisfies ConnRole;
    b.user = { out: ba, in: ab } satisfies ConnRole;
    // Each side has the other as a contact, as people who write to each other do: a one-way receiver's dlv
    // receipts (which free the sender's window) are then not capped as receipts to a stranger are
    // (docs/PROTOCOL.md §6.11). One write per pair before the run; a server without contacts answers unknown_op.
    if (b.state === "ready") b.sendObject({ t: "iq", id: 0, op: "contacts.add", a: { u: [a.account] } });
    if (!o.oneway && a.state === "ready") a.sendObject({ t: "iq", id: 0, op: "contacts.add", a: { u: [b.account] } });
    senders.push(ab);
    if (ba) senders.push(ba);
  }
  for (const s of senders) s.quota = o.quotaPerSender;
}

function setupOffline(o: RunOpts, recipients: { account: string; device: number }[]): void {
  offline = true;
  windowOn = F_ACKED;
  setPayload(o.size);
  senders = [];
  for (const c of conns) {
    if (!c) continue;
    const r = recipients[senders.length % recipients.length]!;
    const snd = new Sender(c, msgTemplate(r.account, r.device, o.size));
    snd.idBase = senders.length * OFFLINE_ID_BASE;
    snd.quota = o.quotaPerSender;
    c.user = { out: snd, in: null } satisfies ConnRole;
    senders.push(snd);
  }
}

/** offline: logs the recipients in (they start receiving their queues at once). */
async function drainLogin(rids: Identity[], concurrency: number): Promise<void> {
  drainStart = performance.now();
  drainBase = t.delivered;
  let next = 0, online = 0, failed = 0;
  const lane = async () => {
    while (next < rids.length) {
      const id = rids[next++]!;
      const key = keyFromSeed(Buffer.from(id.seed, "hex"));
      let ok = false;
      for (let attempt = 0; attempt < 4 && !ok; attempt++) {
        const c = new LeanConn(id.account, id.device, key, handlers);
        c.user = "rcpt";
        if (await c.login(target)) {
          conns.push(c);
          ok = true;
        } else await Bun.sleep(50 * (attempt + 1));
      }
      if (ok) online++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, rids.length) }, lane));
  send({ ev: "draining", online, failed, login_ms: performance.now() - drainStart });
}

function outstanding(): { unacked: number; undelivered: number; no_receipt: number; unsent_bytes: number } {
  let unacked = 0, undelivered = 0, noRcpt = 0, unsentBytes = 0;
  for (const o of senders) {
    for (let n = 1; n < o.next; n++) {
      const f = o.flags[n]!;
      if (!(f & F_ACKED)) unacked++;
      if (!(f & F_DELIVERED)) undelivered++;
      if (!(f & F_RCPT)) noRcpt++;
    }
  }
  for (const c of conns) if (c) unsentBytes += c.unsent;
  return { unacked, undelivered, no_receipt: noRcpt, unsent_bytes: unsentBytes };
}

/** Acknowledged by the server (`sent`) and never delivered: the loss the protocol promises not to have. */
function lost(): { lost: number; lost_ids: string[] } {
  let n = 0;
  const sampleIds: string[] = [];
  for (const o of senders) {
    for (let i = 1; i < o.next; i++) {
      const f = o.flags[i]!;
      if (f & F_ACKED && !(f & F_DELIVERED)) {
        n++;
        if (sampleIds.length < 10) sampleIds.push(`${o.conn.account}#${i}`);
      }
    }
  }
  return { lost: n, lost_ids: sampleIds };
}

process.on("message", async (m: Cmd) => {
  try {
    switch (m.cmd) {
      case "init":
        target = m.target;
        ids = m.ids;
        conns = new Array(ids.length);
        loginHist.reset();
        send({ ev: "ready", pid: process.pid });
        return;
      case "login":
        helloOpts.confirm = m.confirm !== false;
        await login(m.concurrency);
        if (m.pingInterval > 0) startHeartbeats(m.pingInterval);
        return;
      case "quit_all":
        for (const c of conns) c?.quit();
        conns = new Array(ids.length);
        await Bun.sleep(100);
        send({ ev: "quit" });
        return;
      case "run":
        run = m.opts;
        setupPairs(m.opts);
        running = true;
        if (m.opts.measureFromStart) mark();
        if (m.opts.mode === "closed") {
          const now = performance.now();
          for (const o of senders) pump(o, now);
          flushAll();
        } else stopOpenLoop = startOpenLoop(senders, m.opts.ratePerS, emit, recordLag, () => running);
        return;
      case "offline_run":
        run = m.opts;
        setupOffline(m.opts, m.recipients);
        running = true;
        mark();
        {
          const now = performance.now();
          for (const o of senders) pump(o, now);
          flushAll();
        }
        return;
      case "drain":
        await drainLogin(m.ids, m.concurrency);
        return;
      case "drain_stats":
        send({ ev: "drain_stats", ms: Math.max(0, lastDeliverAt - drainStart), delivered: t.delivered - drainBase });
        return;
      case "mark":
        mark();
        send({ ev: "marked" });
        return;
      case "stop": {
        running = false;
        stopOpenLoop();
        const w = snapshotWindow();
        measuring = false;
        send({ ev: "stopped", ...w });
        return;
      }
      case "status":
        send({ ev: "status", ...outstanding(), totals: { ...t } });
        return;
      case "totals":
        send({ ev: "totals", totals: { ...t } });
        return;
      case "report":
        send({ ev: "report", totals: { ...t }, ...lost(), errors_sample: errorSamples });
        return;
      case "exit":
        if (pingTimer) clearInterval(pingTimer);
        for (const c of conns) c?.quit();
        await Bun.sleep(200);
        process.exit(0);
    }
  } catch (e) {
    send({ ev: "fatal", message: (e as Error).stack ?? String(e) });
  }
});

function mark(): void {
  measuring = true;
  deliveryHist.reset();
  sentHist.reset();
  rcptHist.reset();
  lagHist.reset();
  base = { sent: t.sent, delivered: t.delivered, acked: t.acked, receipts: t.receipts };
  markAt = performance.now();
}

function snapshotWindow() {
  return {
    ms: performance.now() - markAt,
    sent: t.sent - base.sent,
    delivered: t.delivered - base.delivered,
    acked: t.acked - base.acked,
    receipts: t.receipts - base.receipts,
    hist: hdr.encodeIntoCompressedBase64(deliveryHist),
    sent_hist: hdr.encodeIntoCompressedBase64(sentHist),
    rcpt_hist: hdr.encodeIntoCompressedBase64(rcptHist),
    lag_hist: hdr.encodeIntoCompressedBase64(lagHist),
  };
}

process.on("disconnect", () => process.exit(0));
setIdPrefix(randomIdPrefix()); // ids never repeat an earlier run's (identities from --ids are reused)
send({ ev: "hello", pid: process.pid });
