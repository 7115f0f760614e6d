/**
 * A groups worker: G groups of M members (one device each) held by one
 * process, driven by loadtest/main.ts over Bun IPC. It answers the same
 * commands as worker.ts (login, run, mark, stop, status, totals, report,
 * exit) plus `g_init`, `g_create` and `g_copies`.
 *
 * Each group's creator makes it with `group.create` (and `group.add` in
 * chunks of 256 beyond that, docs/PROTOCOL.md §5.3). The first S members of
 * a group are its senders: each sends `gmsg` with a closed loop (a message
 * stays in flight until every other member's `dlv` receipt is back) or an
 * open loop at a rate. Every other member must receive every message once,
 * in the group's sequence order.
 *
 * Message n of sender s (s = group index × senders per group + j for the
 * group's member j) has the wire id s × ID_BASE + n, so a member can tell
 * which sender and which message a copy is. By default all members of a
 * group live in one worker. With --spread (`g_init` with `spread`) they are
 * split over workers: the creator and the senders live in the group's home
 * worker, which alone sends and gets the `sent` and `dlv` receipts; the
 * others only receive. Every worker then writes one shared id prefix, the
 * sender writes its send time (epoch ms, float64) into the first 8 payload
 * bytes for the latency at a member in another process, and the loss check
 * (copies per message summed over workers) is main's, from `g_copies`.
 */
import * as hdr from "hdr-histogram-js";
import { LeanConn, flushAll, gmsgTemplate, keyFromSeed, K_MSG, K_SENT, K_RCPT, type Scanned, type LeanHandlers, setIdPrefix, randomIdPrefix } from "./lean.ts";
import { startOpenLoop } from "./open-loop.ts";
import type { Cmd, Ev, RunOpts, SenderCopies, Totals } from "./ipc.ts";
import { newHistogram } from "./stats.ts";
import { F_ACKED, F_WRITTEN, fanout, Group, ID_BASE, Member, REMOTE_MAX_N, Sender } from "./groups-model.ts";

function send(ev: Ev): void {
  process.send!(ev);
}

let target: { host: string; port: number; ca?: string } = { host: "127.0.0.1", port: 0 };
let groups: Group[] = [];
let members: Member[] = [];
/** The senders that send from this worker. */
let senders: Sender[] = [];
/** Every sender record by its global index s (local and, with --spread, remote). */
let tracks: (Sender | undefined)[] = [];
let spread = false;
let sendersPerGroup = 1;
let run: RunOpts | null = null;
let running = false;
let measuring = false;
let payload = new Uint8Array(0);
/** --spread: the payload's first 8 bytes, the send time in epoch ms (one clock over processes). */
let payloadTime: Float64Array | null = null;
const tsBytes = new Uint8Array(8);
const tsView = new Float64Array(tsBytes.buffer);
let sendersDone = 0;
/** Ends the open loop (a no-op when none runs). */
let stopOpenLoop = (): void => {};
/** Open loop: how late the generator itself wrote each message, while measuring. */
const recordLag = (us: number): void => {
  if (measuring) lagHist.recordValue(us);
};
let pingTimer: ReturnType<typeof setInterval> | null = null;
let loginHist = newHistogram();
const deliveryHist = newHistogram();
const sentHist = newHistogram();
const rcptHist = newHistogram();
const lagHist = newHistogram();
let base = { sent: 0, delivered: 0, acked: 0, receipts: 0 };
let markAt = 0;
const errorSamples: string[] = [];
const t: Totals = {
  sent: 0, acked: 0, delivered: 0, duplicates: 0, out_of_order: 0, receipts: 0, receipt_duplicates: 0,
  errors: 0, disconnects: 0, pongs: 0, unknown: 0,
};

function sample(s: string): void {
  if (errorSamples.length < 10) errorSamples.push(s);
}

function usSince(ms: number): number {
  const us = Math.round((performance.now() - ms) * 1000);
  return us < 1 ? 1 : us;
}


/** Microseconds from the epoch-ms send time in a payload's first 8 bytes (written by a sender in another process). */
function usSincePayload(b: Uint8Array, off: number): number {
  for (let i = 0; i < 8; i++) tsBytes[i] = b[off + i]!;
  const us = Math.round((performance.timeOrigin + performance.now() - tsView[0]!) * 1000);
  return us < 1 ? 1 : us;
}

const handlers: LeanHandlers = {
  onFrame(c: LeanConn, s: Scanned, b: Uint8Array) {
    const m = c.user as Member;
    switch (s.kind) {
      case K_MSG: {
        c.ack(s.q);
        const si = s.id < 0 ? -1 : Math.floor(s.id / ID_BASE);
        const o = si >= 0 ? tracks[si] : undefined;
        const n = s.id - si * ID_BASE;
        const local = o?.member != null;
        if (!o || o.group !== m.group || o.j === m.index || n < 1 || (local ? n >= o.next : n > REMOTE_MAX_N || s.pLen < 8)) {
          t.unknown++;
          sample(`unexpected msg id ${s.id} on ${c.account}`);
          return;
        }
        if (!local && n >= o.next) {
          while (n >= o.flags.length) o.grow();
          o.next = n + 1;
        }
        const seen = (o.seen[n] ??= new Uint8Array(o.group.size));
        if (seen[m.index]) {
          t.duplicates++;
          sample(`duplicate: ${c.account} got #${s.id} twice`);
          return;
        }
        seen[m.index] = 1;
        o.copies[n]!++;
        t.delivered++;
        // One sequence per group, shared by all its senders: first deliveries must come in increasing seq.
        if (s.seq <= m.lastSeq) t.out_of_order++;
        else m.lastSeq = s.seq;
        if (measuring) deliveryHist.recordValue(local ? usSince(o.times[n]!) : usSincePayload(b, s.pOff));
        return;
      }
      case K_SENT: {
        const o = senderOf(m);
        const n = o ? s.id - o.idBase : -1;
        if (!o || n < 1 || n >= o.next) {
          t.unknown++;
          return;
        }
        if (o.flags[n]! & F_ACKED) return;
        o.flags[n] = o.flags[n]! | F_ACKED;
        t.acked++;
        if (measuring) sentHist.recordValue(usSince(o.times[n]!));
        return;
      }
      case K_RCPT: {
        c.ack(s.q);
        if (!s.dlv) return;
        const o = senderOf(m);
        const n = o ? s.id - o.idBase : -1;
        if (!o || n < 1 || n >= o.next) {
          t.unknown++;
          return;
        }
        const r = ++o.rcpts[n]!;
        const need = fanout(o.group);
        if (r > need) {
          t.receipt_duplicates++;
          return;
        }
        t.receipts++;
        if (r === need) {
          // The whole chain is back for this message: every member has it and acknowledged it.
          o.inflight--;
          if (measuring) rcptHist.recordValue(usSince(o.times[n]!));
          if (running && run!.mode === "closed") pump(o, performance.now());
          else checkDone(o);
        }
        return;
      }
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
  onOther(c: LeanConn, s: Record<string, any>) {
    if (s.t === "res") {
      const m = c.user as Member;
      const w = m.iqs.get(s.id);
      if (w) {
        m.iqs.delete(s.id);
        w(s);
      }
    }
  },
};

const senderByMember = new Map<Member, Sender>();
function senderOf(m: Member): Sender | undefined {
  return senderByMember.get(m);
}

function iq(m: Member, op: string, a: Record<string, unknown>): Promise<Record<string, any>> {
  const id = m.iqNext++;
  return new Promise((resolve) => {
    m.iqs.set(id, resolve);
    m.conn!.sendObject({ t: "iq", id, op, a });
    m.conn!.flush();
  });
}

/** The creator makes the group: create with up to 256 others, then add the rest 256 at a time. */
async function createGroup(gr: Group): Promise<string | null> {
  const creator = gr.members[0]!;
  const others = gr.accounts.slice(1);
  const r = await iq(creator, "group.create", { name: `load ${gr.index}`, m: others.slice(0, 256) });
  if (!r.ok) return `group.create: ${r.e}: ${r.m}`;
  gr.g = r.r.g;
  for (let i = 256; i < others.length; i += 256) {
    const a = await iq(creator, "group.add", { g: gr.g, m: others.slice(i, i + 256) });
    if (!a.ok) return `group.add: ${a.e}: ${a.m}`;
  }
  gr.template = gmsgTemplate(gr.g, payload.length);
  return null;
}

function pump(o: Sender, now: number): void {
  const w = run!.window;
  while (o.inflight < w && (o.quota === 0 || o.next <= o.quota)) emit(o, now);
  checkDone(o);
}

function emit(o: Sender, intended: number): void {
  const n = o.next++;
  if (n >= o.flags.length) o.grow();
  o.flags[n] = F_WRITTEN;
  o.times[n] = intended;
  o.seen[n] = new Uint8Array(o.group.size);
  o.inflight++;
  t.sent++;
  if (payloadTime) payloadTime[0] = performance.timeOrigin + intended;
  o.member!.conn!.sendGmsg(o.idBase + n, o.group.template!, payload);
}

function checkDone(o: Sender): void {
  if (o.done || o.quota === 0 || o.next <= o.quota || o.inflight > 0) return;
  o.done = true;
  if (++sendersDone === senders.length) send({ ev: "done" });
}

async function login(concurrency: number): Promise<void> {
  const t0 = performance.now();
  let next = 0, online = 0, failed = 0;
  const reasons: Record<string, number> = {};
  const progress = setInterval(() => send({ ev: "progress", online, failed }), 1000);
  const lane = async () => {
    while (next < members.length) {
      const m = members[next++]!;
      const key = keyFromSeed(Buffer.from(m.id.seed, "hex"));
      let ok = false;
      for (let attempt = 0; attempt < 4 && !ok; attempt++) {
        const c = new LeanConn(m.id.account, m.id.device, key, handlers);
        c.user = m;
        const s = performance.now();
        if (await c.login(target, 30_000)) {
          loginHist.recordValue(usSince(s));
          m.conn = c;
          ok = true;
        } else {
          const r = c.closeReason.replace(/[0-9]+/g, "N").slice(0, 80);
          reasons[r] = (reasons[r] ?? 0) + 1;
          await Bun.sleep(50 * (attempt + 1) + Math.random() * 100);
        }
      }
      if (ok) online++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, members.length) }, lane));
  clearInterval(progress);
  send({ ev: "online", online, failed, ms: performance.now() - t0, hist: hdr.encodeIntoCompressedBase64(loginHist), reasons });
  pingTimer = setInterval(() => {
    for (const m of members) if (m.conn?.state === "ready" && Math.random() < 1 / 30) m.conn.ping(1);
    flushAll();
  }, 1000);
}

/**
 * Copies the server acknowledged (`sent`) that a member never got: the loss the protocol promises not to
 * have. With --spread this worker sees only its own members' copies: `lost` and `undelivered` are then
 * main's to compute (g_copies) and are 0 here; `unacked` and `noReceipt` are the local senders' own.
 */
function missing(): { lost: number; undelivered: number; unacked: number; noReceipt: number; lostIds: string[] } {
  let lost = 0, undelivered = 0, unacked = 0, noReceipt = 0;
  const lostIds: string[] = [];
  for (const o of senders) {
    const need = fanout(o.group);
    for (let n = 1; n < o.next; n++) {
      const miss = spread ? 0 : need - o.copies[n]!;
      undelivered += miss;
      if (!(o.flags[n]! & F_ACKED)) unacked++;
      else if (miss > 0) {
        lost += miss;
        if (lostIds.length < 10) lostIds.push(`${o.member!.id.account}#${n} (${miss} of ${need} members)`);
      }
      if (o.rcpts[n]! < need) noReceipt++;
    }
  }
  return { lost, undelivered, unacked, noReceipt, lostIds };
}

function mark(): void {
  measuring = true;
  deliveryHist.reset();
  sentHist.reset();
  rcptHist.reset();
  lagHist.reset();
  base = { sent: t.sent, delivered: t.delivered, acked: t.acked, receipts: t.receipts };
  markAt = performance.now();
}

process.on("message", async (m: Cmd) => {
  try {
    switch (m.cmd) {
      case "g_init": {
        target = m.target;
        sendersPerGroup = m.senders;
        spread = m.spread !== undefined;
        if (m.spread) setIdPrefix(m.spread.prefix);
        payload = new Uint8Array(m.size);
        for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
        payloadTime = spread ? new Float64Array(payload.buffer, 0, 1) : null;
        groups = m.groups.map((ids, k) => {
          const lay = m.spread?.layout[k];
          const gr = new Group(lay ? lay.gi : k);
          gr.members = ids.map((id, j) => new Member(id, gr, lay ? lay.idx[j]! : j));
          gr.accounts = lay ? lay.accounts : ids.map((id) => id.account);
          return gr;
        });
        members = groups.flatMap((g) => g.members);
        senders = [];
        tracks = [];
        for (const gr of groups) {
          const byIndex = new Map(gr.members.map((mm) => [mm.index, mm]));
          for (let j = 0; j < Math.min(sendersPerGroup, gr.size); j++) {
            const mm = byIndex.get(j) ?? null;
            const o = new Sender(gr, j, gr.index * sendersPerGroup + j, mm);
            gr.senders.push(o);
            tracks[o.idx] = o;
            if (mm) {
              senders.push(o);
              senderByMember.set(mm, o);
            }
          }
        }
        loginHist = newHistogram();
        send({ ev: "ready", pid: process.pid });
        return;
      }
      case "login":
        await login(m.concurrency);
        return;
      case "g_create": {
        const t0 = performance.now();
        // Only a group's home worker creates it (all of them without --spread).
        const mine = groups.filter((g) => g.home);
        const errs = (await Promise.all(mine.map(createGroup))).filter((e): e is string => e !== null);
        send({ ev: "g_created", groups: mine.length - errs.length, failed: errs.length, ms: performance.now() - t0, errors: errs.slice(0, 5) });
        return;
      }
      case "g_copies": {
        const out: SenderCopies[] = [];
        for (const o of tracks) {
          if (!o) continue;
          const c: SenderCopies = { s: o.idx, copies: Buffer.from(o.copies.buffer, 0, o.next * 2).toString("base64") };
          if (o.member) {
            c.sent = o.next - 1;
            c.account = o.member.id.account;
            c.unacked = [];
            for (let n = 1; n < o.next; n++) if (!(o.flags[n]! & F_ACKED)) c.unacked.push(n);
          }
          out.push(c);
        }
        send({ ev: "g_copies", senders: out });
        return;
      }
      case "run":
        run = m.opts;
        for (const o of senders) o.quota = m.opts.quotaPerSender;
        running = true;
        if (m.opts.measureFromStart) mark();
        // A worker whose members only receive (--spread) has nothing to finish.
        if (senders.length === 0) send({ ev: "done" });
        if (m.opts.mode === "closed") {
          const now = performance.now();
          for (const o of senders) pump(o, now);
          flushAll();
        } else if (senders.length > 0) stopOpenLoop = startOpenLoop(senders, m.opts.ratePerS, emit, recordLag, () => running);
        return;
      case "mark":
        mark();
        send({ ev: "marked" });
        return;
      case "stop": {
        running = false;
        stopOpenLoop();
        const w = {
          ms: performance.now() - markAt,
          sent: t.sent - base.sent, delivered: t.delivered - base.delivered, acked: t.acked - base.acked, receipts: t.receipts - base.receipts,
          hist: hdr.encodeIntoCompressedBase64(deliveryHist), sent_hist: hdr.encodeIntoCompressedBase64(sentHist),
          rcpt_hist: hdr.encodeIntoCompressedBase64(rcptHist), lag_hist: hdr.encodeIntoCompressedBase64(lagHist),
        };
        measuring = false;
        send({ ev: "stopped", ...w });
        return;
      }
      case "status": {
        const x = missing();
        let unsent = 0;
        for (const mm of members) unsent += mm.conn?.unsent ?? 0;
        send({ ev: "status", unacked: x.unacked, undelivered: x.undelivered, no_receipt: x.noReceipt, unsent_bytes: unsent, totals: { ...t } });
        return;
      }
      case "totals":
        send({ ev: "totals", totals: { ...t } });
        return;
      case "report": {
        const x = missing();
        send({ ev: "report", totals: { ...t }, lost: x.lost, lost_ids: x.lostIds, errors_sample: errorSamples });
        return;
      }
      case "exit":
        if (pingTimer) clearInterval(pingTimer);
        for (const mm of members) mm.conn?.quit();
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
