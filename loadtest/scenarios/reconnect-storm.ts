/**
 * `reconnect-storm`: N connected devices get messages (acked; then held
 * unacknowledged), every connection is cut at once, more messages are queued
 * for them while they are away, and they come back with the SDK's jittered
 * backoff; time until all are back and until every queued message is delivered.
 */
import { latencyJson, verdict } from "../accounting.ts";
import type { StormStatus } from "../ipc.ts";
import { sizeFlag } from "../phase.ts";
import { pin, tcpExt } from "../proc.ts";
import { FatalError, UsageError, pct, round, say, sleep, type Outcome, type Run } from "../run.ts";
import { allMetrics, counterDeltas, cpuDelta, otherCpuPct, serverSample, sysDelta } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag, type Identity } from "../setup.ts";
import { fmtLatency, merge, summary } from "../stats.ts";
import { setup } from "../target.ts";
import { clientJson, mergeCounts, split, startWorkers, wireTarget, type Worker, workerCount, workersCpu } from "../workers.ts";
import { backoffFlag, tcpDelta } from "./login-storm.ts";

async function stormStatus(ws: Worker[]): Promise<StormStatus[]> {
  return Promise.all(ws.map((w) => w.call({ cmd: "s_status" }, "s_status")));
}

function sumStatus(st: StormStatus[]) {
  const sum = (f: (s: StormStatus) => number) => st.reduce((a, s) => a + f(s), 0);
  const batch = [0, 1, 2].map((b) => ({
    written: sum((s) => s.batch[b]!.written), sent: sum((s) => s.batch[b]!.sent), delivered: sum((s) => s.batch[b]!.delivered),
    receipts: sum((s) => s.batch[b]!.receipts), total: sum((s) => s.batch[b]!.total),
  }));
  return {
    rcpt: sum((s) => s.rcpt), send: sum((s) => s.send), rcpt_ready: sum((s) => s.rcpt_ready), send_ready: sum((s) => s.send_ready), batch,
    post_cut: sum((s) => s.post_cut), post_cut_total: sum((s) => s.post_cut_total),
    all_back_at: st.every((s) => s.all_back_at > 0 || s.rcpt === 0) ? Math.max(...st.map((s) => s.all_back_at)) : 0,
    all_queued_at: st.every((s) => s.all_queued_at > 0 || s.post_cut_total === 0) ? Math.max(...st.map((s) => s.all_queued_at)) : 0,
    queued_while_offline: sum((s) => s.queued_while_offline), redelivered: sum((s) => s.redelivered), duplicates: sum((s) => s.duplicates),
    out_of_order: sum((s) => s.out_of_order), unknown: sum((s) => s.unknown), errors: sum((s) => s.errors), disconnects: sum((s) => s.disconnects),
    failed_attempts: sum((s) => s.failed_attempts), failed: sum((s) => s.failed),
    resumed: sum((s) => s.resumed), ticket_refused: sum((s) => s.ticket_refused), tls_resumed: sum((s) => s.tls_resumed),
  };
}

/** Polls the storm workers until `done` holds, printing progress; false when nothing moved for `stallS` seconds. */
async function waitStorm(ws: Worker[], what: string, done: (s: ReturnType<typeof sumStatus>) => boolean, progress: (s: ReturnType<typeof sumStatus>) => string, stallS: number, everyMs = 100): Promise<{ ok: boolean; s: ReturnType<typeof sumStatus> }> {
  let last = "";
  let lastMove = performance.now();
  let lastPrint = performance.now();
  for (;;) {
    const s = sumStatus(await stormStatus(ws));
    if (done(s)) return { ok: true, s };
    const p = progress(s);
    if (p !== last) {
      last = p;
      lastMove = performance.now();
    } else if (performance.now() - lastMove > stallS * 1000) {
      say(`WARNING: ${what}: nothing moved for ${stallS} s (${p})`);
      // Where the missing devices are: what each did last (a login in progress and its state, a dial never made...).
      const nb = (await Promise.all(ws.map((w) => w.call({ cmd: "s_not_back" }, "s_not_back")))).flatMap((x) => x.not_back).slice(0, 10);
      for (const n of nb) say(`  not back: ${n}`);
      return { ok: false, s };
    }
    if (performance.now() - lastPrint > 1000) {
      lastPrint = performance.now();
      say(`  ${what}: ${p}`);
    }
    await sleep(everyMs);
  }
}

async function reconnectStorm(run: Run): Promise<Outcome> {
  const R = run.num("--conns", 1000, 1);
  const perSender = run.num("--per-sender", 50, 1);
  const bm = (run.flag("--batches") ?? "2,1,2").split(",").map(Number);
  if (bm.length !== 3 || bm.some((x) => !Number.isInteger(x) || x < 0) || bm[0]! + bm[1]! + bm[2]! < 1) {
    throw new UsageError("--batches must be three counts A,U,Q (e.g. 2,1,2)");
  }
  const batches = bm as [number, number, number];
  const cut = run.choice("--cut", "kernel", ["kernel", "client"] as const);
  const offline = run.num("--offline", 3);
  const backoff = backoffFlag(run);
  const window = run.num("--window", 16, 1);
  const size = sizeFlag(run);
  const timeoutS = run.num("--login-timeout", 10, 0.1);
  const giveUpS = run.num("--give-up", 120, 1);
  const drain = run.num("--drain", 60, 1);
  // How the devices come back: full logins (the default, as against a server from before tickets), or as the SDK does.
  const resume = { tickets: run.choice("--tickets", "off", ["off", "on"] as const) === "on", tlsSessions: run.choice("--tls-sessions", "off", ["off", "on"] as const) === "on" };
  const nw0 = Math.min(workerCount(run, R + Math.ceil(R / perSender)), R);
  // Senders per worker are rounded up, so count them per worker's share of the recipients.
  const S = Array.from({ length: nw0 }, (_, i) => Math.max(1, Math.ceil((Math.floor(R / nw0) + (i < R % nw0 ? 1 : 0)) / perSender))).reduce((a, b) => a + b, 0);
  const nw = nw0;
  const tag = runTag();
  const rNames = Array.from({ length: R }, (_, i) => `lt${tag}-r${i}`);
  const sNames = Array.from({ length: S }, (_, i) => `lt${tag}-s${i}`);
  say(
    `reconnect-storm: ${R} recipient devices, ${S} senders, per recipient ${batches[0]} acked + ${batches[1]} held unacked at the cut + ${batches[2]} queued while away; ` +
      `cut: ${cut}; recipients away ${offline} s; backoff ${backoff}; ${run.transport}, ${nw} worker(s); tickets ${resume.tickets ? "on" : "off"}, TLS sessions ${resume.tlsSessions ? "on" : "off"}`,
  );
  const { target, ids } = await setup(run, [...rNames, ...sNames]);
  if (cut === "kernel" && !/^[0-9.]+$|:/.test(target.host)) {
    console.error(`loadtest: --cut kernel needs the target as an IP address (ss filters on it), got ${target.host}`);
    throw new FatalError("bad target host for --cut kernel");
  }
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  const rIds = split(ids.slice(0, R), nw, 1);
  // Each worker gets ceil(r_w / perSender) senders of its own, so a sender and its recipients share a process (one
  // clock, one place that knows every message's state). That can be more than S in total; provision enough.
  const senderSlices: Identity[][] = [];
  let nextSender = R;
  for (let i = 0; i < nw; i++) {
    const k = Math.max(1, Math.ceil(rIds[i]!.length / perSender));
    senderSlices.push(ids.slice(nextSender, nextSender + k));
    nextSender += k;
  }
  const wt = wireTarget(target);
  const ws = await startWorkers(run, nw, "loadtest/storm-worker.ts");
  const rsOpts = { batches, window, size };
  await Promise.all(
    ws.map((w, i) =>
      w.call({ cmd: "s_init", target: wt, rs: rsOpts, resume, devices: [...rIds[i]!.map((id) => ({ id, role: "rcpt" as const })), ...senderSlices[i]!.map((id) => ({ id, role: "send" as const }))] }, "ready"),
    ),
  );
  // Phase 1: everybody logs in (not the measured storm).
  const l = await Promise.all(ws.map((w) => w.call({ cmd: "s_login", at: Date.now(), concurrency: 200, backoff, timeoutMs: timeoutS * 1000, giveUpMs: giveUpS * 1000 }, "s_online", (giveUpS + 60) * 1000)));
  const on = l.reduce((a, r) => a + r.online, 0);
  say(`logged in ${on}/${R + S} devices in ${(Math.max(...l.map((r) => r.ms)) / 1000).toFixed(2)} s`);
  if (on < R + S) throw new FatalError(`${R + S - on} logins failed: ${JSON.stringify(l.map((r) => r.reasons))}`);

  // Phase 2: batch 0, acked, with its dlv receipts back at the senders (the server has processed those acks).
  for (const w of ws) w.send({ cmd: "s_batch", b: 0 });
  let r = await waitStorm(ws, "batch 0 (acked)", (s) => s.batch[0]!.receipts === s.batch[0]!.total, (s) => `sent ${s.batch[0]!.sent}, delivered ${s.batch[0]!.delivered}, receipts ${s.batch[0]!.receipts} of ${s.batch[0]!.total}`, drain);
  if (!r.ok) throw new FatalError("batch 0 did not complete");
  // Phase 3: batch 1, delivered and held unacknowledged.
  for (const w of ws) w.send({ cmd: "s_batch", b: 1 });
  r = await waitStorm(ws, "batch 1 (held unacked)", (s) => s.batch[1]!.delivered === s.batch[1]!.total && s.batch[1]!.sent === s.batch[1]!.total, (s) => `sent ${s.batch[1]!.sent}, delivered ${s.batch[1]!.delivered} of ${s.batch[1]!.total}`, drain);
  if (!r.ok) throw new FatalError("batch 1 did not complete");
  const disc0 = r.s.disconnects;
  say(`before the cut: ${r.s.rcpt_ready} recipients and ${r.s.send_ready} senders connected; ${r.s.batch[0]!.total} messages acked, ${r.s.batch[1]!.total} delivered and unacknowledged`);

  // Phase 4: the cut.
  const m0 = await allMetrics(target.http);
  const cutAt = Date.now() + 300;
  const outageEnd = cutAt + offline * 1000;
  await Promise.all(ws.map((w) => w.call({ cmd: "s_arm", cutAt, outageEnd, terminate: cut === "client", backoff, timeoutMs: timeoutS * 1000, giveUpMs: giveUpS * 1000 }, "marked")));
  await sleep(Math.max(0, cutAt - Date.now()));
  const sCut = serverSample(run, target.pid);
  let cutMs = 0;
  if (cut === "kernel") {
    const t0 = performance.now();
    const p = Bun.spawnSync(["ss", "-K", "-t", "-n", "dst", target.host, "dport", "=", String(target.port)], { stdout: "pipe", stderr: "pipe" });
    cutMs = performance.now() - t0;
    if (p.exitCode !== 0) throw new FatalError(`ss -K failed (status ${p.exitCode}): ${p.stderr.toString().trim()}; it needs root or CAP_NET_ADMIN and a kernel with CONFIG_INET_DIAG_DESTROY; try --cut client`);
    const killed = p.stdout.toString().trim().split("\n").filter((x) => /ESTAB|^tcp/.test(x)).length;
    say(`cut: ss -K destroyed ${killed} sockets in ${cutMs.toFixed(1)} ms`);
  }
  // Batch 2 goes out as soon as each sender is back; the recipients are away.
  for (const w of ws) w.send({ cmd: "s_batch", b: 2 });
  r = await waitStorm(ws, "cut", (s) => s.disconnects - disc0 >= R + S, (s) => `${s.disconnects - disc0} of ${R + S} connections seen closed`, 10, 20);
  const cutSeen = Date.now();
  if (r.ok) say(`all ${R + S} connections closed ${cutSeen - cutAt} ms after the cut`);
  else say(`WARNING: only ${r.s.disconnects - disc0} of ${R + S} connections seen closed after the cut: a device not cut never comes back after it, and the storm cannot complete`);
  r = await waitStorm(ws, "senders back, batch 2 queued", (s) => s.batch[2]!.sent === s.batch[2]!.total && s.send_ready === S, (s) => `senders back ${s.send_ready}/${S}, batch 2 sent ${s.batch[2]!.sent}/${s.batch[2]!.total}`, drain, 50);
  const queuedAt = Date.now();
  say(`senders back and batch 2 acknowledged (sent) ${queuedAt - cutAt} ms after the cut; ${r.s.queued_while_offline} of ${r.s.batch[2]!.total} before the recipients' outage ends`);

  // Phase 5: the recipients come back.
  await sleep(Math.max(0, outageEnd - Date.now()));
  const s0 = serverSample(run, target.pid);
  const wc0 = workersCpu(run);
  const tcp0 = tcpExt();
  say(`outage over at +${offline} s: recipients reconnect (${backoff === "sdk" ? "with the SDK's backoff, where their failed attempts left it" : "all at once"})`);
  r = await waitStorm(
    ws, "storm", (s) => s.all_back_at > 0 && s.all_queued_at > 0,
    (s) => `back ${s.rcpt_ready}/${R}, queued delivered ${s.post_cut}/${s.post_cut_total}, failed attempts ${s.failed_attempts}`, drain,
  );
  const s1 = serverSample(run, target.pid);
  const wc1 = workersCpu(run);
  const tcp = tcpDelta(tcp0);
  const m1 = await allMetrics(target.http);
  const st = r.s;
  const backS = st.all_back_at ? (st.all_back_at - outageEnd) / 1000 : null;
  const queuedS = st.all_queued_at ? (st.all_queued_at - outageEnd) / 1000 : null;
  // Receipts for everything (not needed for the verdict; they show the chain completed).
  const rr = await waitStorm(ws, "receipts", (s) => s.batch.every((b) => b.receipts === b.total), (s) => `receipts ${s.batch.map((b) => b.receipts).join("/")} of ${s.batch.map((b) => b.total).join("/")}`, Math.min(drain, 10), 200);
  const reps = await Promise.all(ws.map((w) => w.call({ cmd: "s_report" }, "s_report")));
  const tot = sumStatus(reps);
  const lost = reps.reduce((a, x) => a + x.lost, 0);
  const notRedelivered = reps.reduce((a, x) => a + x.not_redelivered, 0);
  const lostIds = reps.flatMap((x) => x.lost_ids).slice(0, 10);
  const errSamples = reps.flatMap((x) => x.errors_sample).slice(0, 10);
  for (const n of reps.flatMap((x) => x.not_back).slice(0, 10)) say(`not back: ${n}`);
  const reasons = mergeCounts(reps.map((x) => x.reasons));
  const back = summary(merge(reps.map((x) => x.back_hist)));
  const queued = summary(merge(reps.map((x) => x.queued_hist)));
  const cpu = cpuDelta(s0, s1);
  const wallS = (s1.t - s0.t) / 1000;
  const counters = counterDeltas(m0, m1);
  const closes = m0 && m1 ? Object.fromEntries([...m1].filter(([k]) => k.startsWith("switchboard_closes_total")).map(([k, v]) => [k.replace(/^.*reason="([^"]+)".*$/, "$1"), v - (m0.get(k) ?? 0)]).filter(([, v]) => (v as number) > 0)) : null;
  const sentTotal = tot.batch.reduce((a, b) => a + b.sent, 0);
  const deliveredTotal = tot.batch.reduce((a, b) => a + b.delivered, 0);
  const postDelivered = tot.post_cut;
  say(`all ${R} recipients back ${backS === null ? "NEVER" : `${backS.toFixed(2)} s`} after the outage ended (${((st.all_back_at - cutAt) / 1000).toFixed(2)} s after the cut); every queued message delivered ${queuedS === null ? "NEVER" : `${queuedS.toFixed(2)} s`} after it`);
  say(`reconnect time (outage end -> ready): ${fmtLatency(back)}`);
  say(`queued delivery (outage end -> delivered again or first): ${fmtLatency(queued)}`);
  say(`failed attempts ${tot.failed_attempts} ${JSON.stringify(reasons)}; devices given up ${tot.failed}`);
  say(`logins with a ticket ${tot.resumed} (refused ${tot.ticket_refused}, then auth), TLS handshakes resumed ${tot.tls_resumed}: all logins, the first ones too`);
  if (cpu !== null) say(`server CPU in the storm ${cpu.toFixed(2)} s over ${wallS.toFixed(2)} s (${pct(cpu, wallS)}%; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${Math.round((cpu * 1e6) / R)} µs per reconnect incl. its deliveries`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s; other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (closes) say(`server closes by reason since the cut: ${JSON.stringify(closes)}`);
  say(`listen queue in the storm (machine-wide TcpExt deltas): ${JSON.stringify(tcp)}`);
  say(`totals: sent ${sentTotal}, delivered ${deliveredTotal}, redelivered (expected: held unacked) ${tot.redelivered}, lost ${lost}, not redelivered ${notRedelivered}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, unknown ${tot.unknown}, errors ${tot.errors}; receipts complete ${rr.ok}`);
  const alive = await run.serverAlive();
  const what = [lost ? `LOST ${lost} MESSAGES THE SERVER HAD ACKNOWLEDGED WITH "sent" (e.g. ${lostIds.join(", ")})` : "", notRedelivered ? `${notRedelivered} ITEMS HELD UNACKNOWLEDGED AT THE CUT WERE NEVER DELIVERED AGAIN` : ""].filter(Boolean).join("; ");
  const code = verdict({
    lost: what ? `!!!!!!!! ${what} !!!!!!!!` : null,
    duplicates: tot.duplicates,
    outOfOrder: tot.out_of_order,
    integrityNote: `  ${errSamples.join("; ")}`,
    warning: !r.ok || tot.failed > 0 || tot.unknown > 0 || tot.errors > 0 || !alive
      ? `storm incomplete ${!r.ok}, devices given up ${tot.failed}, unknown ${tot.unknown}, errors ${tot.errors}, server alive ${alive}: ${errSamples.join("; ")}`
      : null,
  });
  return {
    result: {
      scenario: "reconnect-storm",
      params: { conns: R, senders: S, per_sender: perSender, batches, cut, offline_s: offline, backoff, window, size, transport: run.transport, tickets: resume.tickets, tls_sessions: resume.tlsSessions, workers: nw, login_timeout_s: timeoutS, mode_server: run.serverMode, server_bin: run.flag("--server-bin") ?? null },
      sent: sentTotal,
      delivered: deliveredTotal,
      redelivered: tot.redelivered,
      lost,
      not_redelivered: notRedelivered,
      duplicates: tot.duplicates,
      out_of_order: tot.out_of_order,
      unknown: tot.unknown,
      errors: tot.errors,
      batches: tot.batch,
      queued_while_offline: st.queued_while_offline,
      cut: { mode: cut, ss_ms: cut === "kernel" ? round(cutMs, 1) : null, all_closed_ms: cutSeen - cutAt, senders_back_and_queued_ms: queuedAt - cutAt },
      all_back_s: backS === null ? null : round(backS, 3),
      all_back_after_cut_s: st.all_back_at ? round((st.all_back_at - cutAt) / 1000, 3) : null,
      all_queued_delivered_s: queuedS === null ? null : round(queuedS, 3),
      failed_attempts: tot.failed_attempts,
      failed_devices: tot.failed,
      resumed: { tickets: tot.resumed, ticket_refused: tot.ticket_refused, tls: tot.tls_resumed },
      tcp,
      attempt_failures: reasons,
      // sent: batch 2 over the cut -> every batch-2 `sent` (senders' reconnects included); delivered: deliveries after the outage.
      sent_per_s: Math.round(tot.batch[2]!.total / Math.max(0.001, (queuedAt - cutAt) / 1000)),
      delivered_per_s: queuedS ? Math.round(postDelivered / queuedS) : null,
      latency_of: "outage end -> ready again, per recipient (reconnect time)",
      latency_ms: latencyJson(back),
      queued_delivery_ms: { p50: queued.p50, p90: queued.p90, p99: queued.p99, p999: queued.p999, max: queued.max, count: queued.count },
      server: {
        pid: target.pid,
        cpu_s: cpu === null ? null : round(cpu, 2),
        cpu_pct: cpu === null ? null : pct(cpu, wallS),
        cpu_sys_s: sysDelta(s0, s1),
        cpu_phase: "outage end -> every recipient back and every queued message delivered",
        cpu_us_per_reconnect: cpu === null ? null : Math.round((cpu * 1e6) / R),
        cpu_cut_to_outage_end_s: sCut.cpu !== null && s0.cpu !== null ? round(s0.cpu - sCut.cpu, 2) : null,
        rss_kb: s1.rss,
        alive,
        counters,
        closes,
        // The server's count of logins since the cut, by how they came in (Ed25519 `auth`, or a ticket).
        logins: m0 && m1 ? Object.fromEntries(["ok", "resumed", "ticket_refused"].map((r) => { const k = `switchboard_logins_total{result="${r}"}`; return [r, (m1.get(k) ?? 0) - (m0.get(k) ?? 0)]; })) : null,
        tls_handshakes: m0 && m1 ? Object.fromEntries(["false", "true"].map((r) => { const k = `switchboard_tls_handshakes_total{resumed="${r}"}`; return [r === "true" ? "resumed" : "full", (m1.get(k) ?? 0) - (m0.get(k) ?? 0)]; })) : null,
      },
      client: clientJson(run, wc1 - wc0, wallS),
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: cpu ? Math.round(postDelivered / cpu) : null,
      ...(errSamples.length ? { errors_sample: errSamples } : {}),
    },
    code,
  };
}

export const RECONNECT_STORM: Scenario = {
  name: "reconnect-storm",
  summary:
    "N connected devices get messages (acked; then held unacknowledged), every connection is cut\n" +
    "at once, more messages are queued for them while they are away, and they come back with the\n" +
    "SDK's jittered backoff; time until all are back and until every queued message is delivered",
  server: true,
  flags: [
    ["--conns N", "recipient devices (default 1000); senders are extra devices, one per --per-sender"],
    ["--per-sender R", "recipients per sending device (default 50)"],
    ["--batches A,U,Q", "messages per recipient: acked before the cut, delivered and held unacknowledged at\nthe cut, queued while the recipients are away (default 2,1,2); 1,0,0: the bare reconnect,\nthe devices come back to an empty queue (the storm ends when all are back)"],
    [
      "--cut kernel|client",
      "kernel (default): `ss -K` destroys every TCP connection to the server port at once, as a\n" +
        "network failure would (needs root or CAP_NET_ADMIN; with --target it cuts every client of\n" +
        "that port, not only the load's); client: every client terminates its sockets at the same moment",
    ],
    ["--offline S", "recipients stay away for S seconds after the cut (their network is down: reconnect\nattempts fail and the backoff grows); senders come back at once (default 3)"],
    ["--backoff sdk|none", "how they come back (default sdk: full jitter, 250 ms × 2^attempt, capped at 30 s)"],
    ["--window W", "messages in flight per sender until sent (default 16)"],
    ["--tickets off|on", "on: devices reconnect with the resumption ticket of their last login (resume in the hello's\nwrite: one round trip, no Ed25519), as the SDK does; off (default): every login signs (A/B)"],
    ["--tls-sessions off|on", "on, with --transport tls: each reconnect offers its device's last TLS session (default off)"],
    ["--size B, --login-timeout S, --give-up S (default 120), --drain S (default 60: give up when nothing moves)", ""],
  ],
  run: reconnectStorm,
};
