/**
 * A storm worker: the device side of `login-storm` and `reconnect-storm`
 * (driven by loadtest/main.ts over Bun IPC, `s_*` commands of ./ipc.ts).
 *
 * Every device here reconnects the way a real client does: after a failed
 * attempt or a lost connection it waits as the SDK does (src/client/client.ts,
 * `onDrop`): min(30 s, base × 2^min(attempt, 7)) × U[0.5, 1), base = the
 * server's `ra` when it gave one, else 250 ms; the attempt counter resets
 * when a connection reaches `ready`.
 *
 * reconnect-storm roles: recipients (`rcpt`) receive and ack; senders
 * (`send`) send to them with a closed loop on `sent` and resend, after a
 * reconnect, every message they have not seen `sent` for (same id: the
 * server deduplicates). Message m of this worker goes to recipient
 * floor(m / K) (K messages per recipient) and has the wire id m + 1, so ids
 * are unique per sender. Batches (messages per recipient):
 *   0  acked before the cut: delivered, acked, dlv receipt back at the sender;
 *   1  delivered and held unacknowledged at the cut: must be delivered again;
 *   2  sent while the recipients are away: must be delivered when they return.
 *
 * Integrity, per message:
 * - lost: the server acknowledged it with `sent` and it never arrived;
 * - duplicate: delivered again although the server had processed its ack
 *   (its dlv receipt had reached the sender), or twice on one connection;
 * - redelivered (expected, not an error): delivered again on a later
 *   connection before the server saw its ack: at-least-once delivery;
 * - out of order: a first delivery with a seq not above the previous one
 *   in that conversation (each recipient has exactly one sender).
 */
import * as hdr from "hdr-histogram-js";
import type { KeyObject } from "node:crypto";
import { LeanConn, flushAll, keyFromSeed, msgTemplate, K_MSG, K_SENT, K_RCPT, type Scanned, type LeanHandlers, setIdPrefix, randomIdPrefix } from "./lean.ts";
import { leanResume, resumeStats } from "./lean-resume.ts";
import type { Backoff, Cmd, Ev, RsOpts, StormStatus } from "./ipc.ts";
import { newHistogram } from "./stats.ts";
import type { Identity } from "./setup.ts";

function send(ev: Ev): void {
  process.send!(ev);
}

/** The SDK's reconnect delay (src/client/client.ts onDrop), in ms. */
export function backoffMs(attempt: number, ra: number, policy: Backoff): number {
  if (policy === "none") return ra > 0 ? ra : 0;
  const base = ra > 0 ? ra : 250;
  return Math.min(30_000, base * 2 ** Math.min(attempt, 7)) * (0.5 + Math.random() / 2);
}

const F_WRITTEN = 1;
const F_SENT = 2;
const F_DELIVERED = 4;
const F_RCPT = 8;
/** Delivered on a connection that reached ready after the cut. */
const F_POST = 16;

class Dev {
  conn: LeanConn | null = null;
  key: KeyObject | null = null;
  attempts = 0;
  /** Connections of this device that reached ready. */
  epoch = 0;
  /** A reconnect loop is running. */
  dialing = false;
  /** This connection reached ready after the cut. */
  postCut = false;
  /** Recipients: counted back after the cut (once: a device can reach ready after the cut more than once). */
  back = false;
  /** Recipients: hold acks (batch 1 before the cut). */
  hold = false;
  // Senders: message indices to send, the next one to write, and those written without `sent` yet.
  todo: number[] = [];
  head = 0;
  inflight = new Set<number>();
  /** Recipients: the msg template addressed to this device; the highest seq of a first delivery. */
  template: Uint8Array | null = null;
  lastSeq = 0;
  /** Recipients: index among this worker's recipients (message m goes to recipient floor(m / K)). */
  index = 0;
  /** What this device did last, and when: printed for a device that is not back when a storm stalls. */
  doing = "logged in";
  doingAt = 0;
  /** The connection of the login attempt in progress (or the last one). */
  trying: LeanConn | null = null;
  constructor(readonly id: Identity, readonly role: "rcpt" | "send") {}
}

let target: { host: string; port: number; ca?: string } = { host: "127.0.0.1", port: 0 };
let devs: Dev[] = [];
let rcpts: Dev[] = [];
let sendersList: Dev[] = [];
let rs: RsOpts | null = null;
/** Messages per recipient (sum of the batches). */
let K = 0;
let flags = new Uint8Array(0);
/** Epoch of the recipient's connection at a message's last delivery. */
let delEpoch = new Uint16Array(0);
let payload = new Uint8Array(0);
let reconnect = false;
let backoffPolicy: Backoff = "sdk";
let loginTimeoutMs = 10_000;
let giveUpAt = Infinity;
let cutAt = Infinity;
let outageEnd = 0;
let allBackAt = 0;
let allQueuedAt = 0;
let backCount = 0;
let postCut = 0;
let postCutTotal = 0;
let queuedWhileOffline = 0;
let pingTimer: ReturnType<typeof setInterval> | null = null;
const backHist = newHistogram();
const queuedHist = newHistogram();
const reasons: Record<string, number> = {};
const errorSamples: string[] = [];
const c = { redelivered: 0, duplicates: 0, out_of_order: 0, unknown: 0, errors: 0, disconnects: 0, failed_attempts: 0, failed: 0 };

function note(d: Dev, what: string): void {
  d.doing = what;
  d.doingAt = Date.now();
}

function sample(s: string): void {
  if (errorSamples.length < 10) errorSamples.push(s);
}

function batchOf(m: number): number {
  const k = m % K;
  return k < rs!.batches[0] ? 0 : k < rs!.batches[0] + rs!.batches[1] ? 1 : 2;
}

const handlers: LeanHandlers = {
  onFrame(conn: LeanConn, s: Scanned) {
    const d = conn.user as Dev;
    switch (s.kind) {
      case K_MSG: {
        const m = s.id - 1;
        if (d.role !== "rcpt" || !rs || m < 0 || m >= flags.length || Math.floor(m / K) !== d.index) {
          conn.ack(s.q);
          c.unknown++;
          sample(`unexpected msg id ${s.id} on ${conn.account}`);
          return;
        }
        if (!d.hold) conn.ack(s.q);
        const f = flags[m]!;
        if (d.postCut && !(f & F_POST) && batchOf(m) > 0) {
          flags[m] = f | F_POST;
          queuedHist.recordValue(Math.max(1, Math.round((Date.now() - outageEnd) * 1000)));
          if (++postCut === postCutTotal) allQueuedAt = Date.now();
        }
        if (f & F_DELIVERED) {
          if (f & F_RCPT || delEpoch[m] === d.epoch) {
            c.duplicates++;
            sample(`duplicate: ${conn.account} got #${s.id} again${f & F_RCPT ? " after its dlv receipt" : " on the same connection"}`);
          } else c.redelivered++;
          delEpoch[m] = d.epoch;
          return;
        }
        flags[m] = flags[m]! | F_DELIVERED;
        delEpoch[m] = d.epoch;
        if (s.seq <= d.lastSeq) c.out_of_order++;
        else d.lastSeq = s.seq;
        return;
      }
      case K_SENT: {
        const m = s.id - 1;
        if (d.role !== "send" || m < 0 || m >= flags.length || !d.inflight.has(m)) {
          // A repeated `sent` for a resend is expected; anything else is not ours.
          if (!(m >= 0 && m < flags.length && flags[m]! & F_SENT)) c.unknown++;
          return;
        }
        d.inflight.delete(m);
        flags[m] = flags[m]! | F_SENT;
        if (batchOf(m) === 2 && Date.now() < outageEnd) queuedWhileOffline++;
        pump(d);
        return;
      }
      case K_RCPT: {
        conn.ack(s.q);
        if (!s.dlv) return;
        const m = s.id - 1;
        if (d.role !== "send" || m < 0 || m >= flags.length) {
          c.unknown++;
          return;
        }
        flags[m] = flags[m]! | F_RCPT;
        return;
      }
    }
  },
  onClose(conn: LeanConn, reason: string) {
    const d = conn.user as Dev;
    if (d.conn !== conn) return;
    d.conn = null;
    c.disconnects++;
    note(d, `closed (${reason})${reconnect ? "" : ": not dialed again"}`);
    if (Date.now() < cutAt - 50) sample(`${conn.account} closed before the cut: ${reason}`);
    if (reconnect) void dial(d, backoffMs(d.attempts++, conn.closeRa, backoffPolicy));
  },
  onError(conn: LeanConn, code: string, message: string) {
    c.errors++;
    sample(`${conn.account} err ${code}: ${message}`);
  },
};

function countReason(r: string): void {
  const k = r.replace(/[0-9]+/g, "N").slice(0, 80);
  reasons[k] = (reasons[k] ?? 0) + 1;
}

/**
 * Connects `d` (after `delayMs`), retrying with the backoff until it is ready or the run gives up.
 * Recipients inside the outage fail each attempt without touching the network, as if it were down,
 * so that their backoff grows as a real client's would.
 */
async function dial(d: Dev, delayMs: number): Promise<boolean> {
  if (d.dialing) {
    note(d, `${d.doing}; a second dial refused (one runs)`);
    return false;
  }
  d.dialing = true;
  try {
    note(d, `waiting ${Math.round(delayMs)} ms to dial`);
    if (delayMs > 0) await Bun.sleep(delayMs);
    for (;;) {
      const now = Date.now();
      if (d.role === "rcpt" && now >= cutAt && now < outageEnd) {
        note(d, "away (the outage)");
        if (backoffPolicy === "none") await Bun.sleep(outageEnd - now);
        else await Bun.sleep(backoffMs(d.attempts++, 0, backoffPolicy));
        continue;
      }
      d.key ??= keyFromSeed(Buffer.from(d.id.seed, "hex"));
      const conn = new LeanConn(d.id.account, d.id.device, d.key, handlers);
      conn.user = d;
      // Set before the login: the queued items follow `ready` in the same read, and the handlers need these.
      d.postCut = Date.now() >= cutAt;
      d.epoch++;
      if (d.postCut && d.role === "rcpt") d.hold = false;
      d.trying = conn;
      note(d, `logging in (attempt ${d.attempts + 1})`);
      if (await conn.login(target, loginTimeoutMs)) {
        d.conn = conn;
        d.attempts = 0;
        note(d, "ready");
        onReady(d);
        return true;
      }
      c.failed_attempts++;
      countReason(conn.closeReason);
      if (Date.now() > giveUpAt) {
        c.failed++;
        note(d, `gave up (${conn.closeReason})`);
        return false;
      }
      note(d, `login failed (${conn.closeReason}), backing off`);
      await Bun.sleep(backoffMs(d.attempts++, conn.closeRa, backoffPolicy));
    }
  } finally {
    d.dialing = false;
  }
}

function onReady(d: Dev): void {
  if (d.role === "rcpt" && d.postCut && !d.back) {
    d.back = true;
    backHist.recordValue(Math.max(1, Math.round((Date.now() - outageEnd) * 1000)));
    if (++backCount === rcpts.length) {
      allBackAt = Date.now();
      // A bare reconnect (--batches A,0,0): nothing waits for the devices, so the storm ends when all are back.
      if (postCutTotal === 0) allQueuedAt = allBackAt;
    }
  }
  if (d.role === "send" && d.inflight.size) {
    // Everything written without `sent` goes again with the same id: the server answers a known id with the original `sent`.
    for (const m of d.inflight) write(d, m);
  }
  if (d.role === "send") pump(d);
  flushAll();
}

function write(d: Dev, m: number): void {
  flags[m] = flags[m]! | F_WRITTEN;
  d.conn!.sendMsg(m + 1, rcpts[Math.floor(m / K)]!.template!, payload);
}

/** Closed loop on `sent`: up to `window` messages in flight per sender. */
function pump(d: Dev): void {
  if (!d.conn || d.conn.state !== "ready") return;
  while (d.inflight.size < rs!.window && d.head < d.todo.length) {
    const m = d.todo[d.head++]!;
    d.inflight.add(m);
    write(d, m);
  }
}

async function login(cmd: Extract<Cmd, { cmd: "s_login" }>): Promise<void> {
  backoffPolicy = cmd.backoff;
  loginTimeoutMs = cmd.timeoutMs;
  giveUpAt = cmd.at + cmd.giveUpMs;
  const list = cmd.role ? devs.filter((d) => d.role === cmd.role) : devs;
  const hist = newHistogram();
  const failed0 = c.failed;
  const attempts0 = c.failed_attempts;
  const timeline: number[] = [];
  let online = 0;
  let lastAt = 0;
  const wait = cmd.at - Date.now();
  if (wait > 0) await Bun.sleep(wait);
  const t0 = Date.now();
  const progress = setInterval(() => send({ ev: "progress", online, failed: c.failed - failed0 }), 1000);
  const one = async (d: Dev) => {
    if (await dial(d, 0)) {
      const now = Date.now();
      hist.recordValue(Math.max(1, Math.round((now - t0) * 1000)));
      const slot = Math.floor((now - t0) / 100);
      while (timeline.length <= slot) timeline.push(0);
      timeline[slot]!++;
      online++;
      lastAt = now;
    }
  };
  if (cmd.concurrency <= 0) await Promise.all(list.map(one));
  else {
    let next = 0;
    const lane = async () => {
      while (next < list.length) await one(list[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(cmd.concurrency, list.length) }, lane));
  }
  clearInterval(progress);
  send({
    ev: "s_online", online, failed: c.failed - failed0, ms: Date.now() - t0, first_ms: hist.totalCount ? hist.minNonZeroValue / 1000 : 0,
    last_at: lastAt, hist: hdr.encodeIntoCompressedBase64(hist), reasons: { ...reasons }, failed_attempts: c.failed_attempts - attempts0, timeline,
  });
  if (!pingTimer) startHeartbeats(30);
}

/** Each ready connection pings every `pi` seconds, spread over the interval (idle timeouts of a --target server). */
function startHeartbeats(pi: number): void {
  let tick = 0;
  pingTimer = setInterval(() => {
    const slot = tick++ % pi;
    for (let i = slot; i < devs.length; i += pi) {
      const conn = devs[i]!.conn;
      if (conn && conn.state === "ready") conn.ping(tick);
    }
    flushAll();
  }, 1000);
}

function batchStart(b: number): number {
  return b === 0 ? 0 : b === 1 ? rs!.batches[0] : rs!.batches[0] + rs!.batches[1];
}

/** Queues batch `b` on every sender (sender i serves recipients i, i + S, ...). */
function startBatch(b: 0 | 1 | 2): void {
  const from = batchStart(b);
  const n = rs!.batches[b];
  for (const r of rcpts) r.hold = b === 1;
  for (let k = 0; k < n; k++) {
    for (const r of rcpts) sendersList[r.index % sendersList.length]!.todo.push(r.index * K + from + k);
  }
  for (const s of sendersList) pump(s);
  flushAll();
}

function status(): StormStatus {
  const batch = [0, 1, 2].map((b) => {
    const from = batchStart(b);
    const n = rs ? rs.batches[b]! : 0;
    let written = 0, sent = 0, delivered = 0, receipts = 0;
    for (let r = 0; r < rcpts.length; r++) {
      for (let k = from; k < from + n; k++) {
        const f = flags[r * K + k]!;
        if (f & F_WRITTEN) written++;
        if (f & F_SENT) sent++;
        if (f & F_DELIVERED) delivered++;
        if (f & F_RCPT) receipts++;
      }
    }
    return { written, sent, delivered, receipts, total: n * rcpts.length };
  });
  let rr = 0, sr = 0;
  for (const d of devs) if (d.conn?.state === "ready") d.role === "rcpt" ? rr++ : sr++;
  return {
    rcpt: rcpts.length, send: sendersList.length, rcpt_ready: rr, send_ready: sr, batch, post_cut: postCut, post_cut_total: postCutTotal,
    all_back_at: allBackAt, all_queued_at: allQueuedAt, queued_while_offline: queuedWhileOffline, ...c,
    resumed: resumeStats.resumed, ticket_refused: resumeStats.refused, tls_resumed: resumeStats.tlsResumed,
  };
}

/**
 * Devices that are not back (not ready, or a recipient not ready since the cut), with what each did last: where a
 * stalled storm's missing device is (a login in progress and its state, a dial never made, a backoff...).
 */
function notBack(max: number): string[] {
  const out: string[] = [];
  const now = Date.now();
  for (const d of devs) {
    const ready = d.conn?.state === "ready";
    if (ready && (d.role === "send" || cutAt === Infinity || d.back)) continue;
    if (out.length === max) break;
    const t = d.trying;
    out.push(
      `${d.id.account}/${d.id.device} (${d.role}): ${d.doing} ${((now - d.doingAt) / 1000).toFixed(1)} s ago; connection ${d.conn?.state ?? "none"}` +
        `${ready ? " (since before the cut)" : ""}, dialing ${d.dialing}, attempts ${d.attempts}, logins ${d.epoch}` +
        (t && t !== d.conn ? `; its last attempt's connection ${t.state}${t.closeReason ? ` (${t.closeReason})` : ""}` : ""),
    );
  }
  return out;
}

function report(): Extract<Ev, { ev: "s_report" }> {
  let lost = 0;
  let notRedelivered = 0;
  const lostIds: string[] = [];
  for (let m = 0; m < flags.length; m++) {
    const f = flags[m]!;
    if (f & F_SENT && !(f & F_DELIVERED)) {
      lost++;
      if (lostIds.length < 10) lostIds.push(`${rcpts[Math.floor(m / K)]!.id.account}#${m + 1}`);
    }
    if (cutAt !== Infinity && batchOf(m) === 1 && f & F_DELIVERED && !(f & F_POST)) notRedelivered++;
  }
  return {
    ev: "s_report", ...status(), lost, lost_ids: lostIds, not_redelivered: notRedelivered, not_back: notBack(10),
    back_hist: hdr.encodeIntoCompressedBase64(backHist), queued_hist: hdr.encodeIntoCompressedBase64(queuedHist),
    reasons: { ...reasons }, errors_sample: errorSamples,
  };
}

process.on("message", async (m: Cmd) => {
  try {
    switch (m.cmd) {
      case "s_init": {
        target = m.target;
        if (m.resume) leanResume(m.resume);
        devs = m.devices.map((d) => new Dev(d.id, d.role));
        rcpts = [];
        sendersList = [];
        for (const d of devs) (d.role === "rcpt" ? rcpts : sendersList).push(d);
        rcpts.forEach((d, i) => (d.index = i));
        // reconnect-storm's devices reconnect from their first login, as a real client does: one whose connection
        // closed before the storm was armed (the server replaced or dropped it) was never dialed again, so it was not
        // cut, never came back, and the storm stalled in its drain with one device missing.
        reconnect = m.rs !== undefined;
        // Keys are loaded before any storm, as a real device has its key at hand: importing one costs tens of µs,
        // which would otherwise sit on the load generator's side of the storm.
        for (const d of devs) d.key = keyFromSeed(Buffer.from(d.id.seed, "hex"));
        if (m.rs) {
          rs = m.rs;
          K = rs.batches[0] + rs.batches[1] + rs.batches[2];
          flags = new Uint8Array(K * rcpts.length);
          delEpoch = new Uint16Array(K * rcpts.length);
          postCutTotal = (rs.batches[1] + rs.batches[2]) * rcpts.length;
          payload = new Uint8Array(rs.size);
          for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
          for (const r of rcpts) r.template = msgTemplate(r.id.account, r.id.device, rs.size);
        }
        send({ ev: "ready", pid: process.pid });
        return;
      }
      case "s_login":
        await login(m);
        return;
      case "s_batch":
        startBatch(m.b);
        return;
      case "s_arm": {
        cutAt = m.cutAt;
        outageEnd = m.outageEnd;
        backoffPolicy = m.backoff;
        loginTimeoutMs = m.timeoutMs;
        giveUpAt = m.outageEnd + m.giveUpMs;
        reconnect = true;
        if (m.terminate) {
          setTimeout(() => {
            // Every socket of this worker in one synchronous loop: as close to "at once" as one process gets.
            for (const d of devs) d.conn?.terminate();
          }, Math.max(0, m.cutAt - Date.now()));
        }
        send({ ev: "marked" });
        return;
      }
      case "s_status":
        send({ ev: "s_status", ...status() });
        return;
      case "s_report":
        send(report());
        return;
      case "s_not_back":
        send({ ev: "s_not_back", not_back: notBack(10) });
        return;
      case "exit":
        reconnect = false;
        if (pingTimer) clearInterval(pingTimer);
        for (const d of devs) d.conn?.quit();
        await Bun.sleep(200);
        process.exit(0);
    }
  } catch (e) {
    send({ ev: "fatal", message: (e as Error).stack ?? String(e) });
  }
});

process.on("disconnect", () => process.exit(0));
setIdPrefix(randomIdPrefix()); // ids never repeat an earlier run's (identities from --ids are reused)
send({ ev: "hello", pid: process.pid });
