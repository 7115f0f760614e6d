/**
 * `offline`: S senders queue M messages for R offline recipient devices
 * (closed loop on sent), then the recipients log in and drain; queued/s
 * (durable writes), drained/s, integrity.
 */
import { latencyJson, lostBanner, verdict } from "../accounting.ts";
import type { RunOpts } from "../ipc.ts";
import { sizeFlag } from "../phase.ts";
import { pin } from "../proc.ts";
import { UsageError, pct, round, say, sleep, type Outcome, type Run } from "../run.ts";
import { allMetrics, commitMs, counterDeltas, cpuDelta, otherCpuPct, serverSample, sysDelta } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag } from "../setup.ts";
import { fmtLatency, merge, summary } from "../stats.ts";
import { setup } from "../target.ts";
import { clientJson, initAll, loginAll, requireLogins, startWorkers, workersCpu } from "../workers.ts";

async function offline(run: Run): Promise<Outcome> {
  const S = run.num("--senders", 20, 1);
  const R = run.num("--recipients", 1, 1);
  const messages = run.num("--messages", 100_000, 1);
  const window = run.num("--window", 16, 1);
  const size = sizeFlag(run);
  const drain = run.num("--drain", 30);
  if (run.flag("--workers") && run.num("--workers", 1, 1) !== 1) throw new UsageError("offline runs in one worker (senders and recipients check each other there)");
  const quotaPerSender = Math.ceil(messages / S);
  const total = quotaPerSender * S;
  const concurrency = run.flag("--concurrency") ? run.num("--concurrency", 1, 1) : 100;
  const transport = run.transport;
  const tag = runTag();
  const sNames = Array.from({ length: S }, (_, i) => `lt${tag}-s${i}`);
  const rNames = Array.from({ length: R }, (_, i) => `lt${tag}-r${i}`);
  const userSf = run.words("--server-flags");
  const defSf = userSf.some((f) => f.startsWith("--queue-max-messages")) ? [] : ["--queue-max-messages", "1000000", "--queue-max-bytes", "1073741824"];
  say(`offline: ${S} senders -> ${R} offline recipient device(s), ${total} messages, closed loop on sent with window ${window} per sender, ${size}-byte payloads, ${transport}`);
  const { target, ids } = await setup(run, [...sNames, ...rNames], run.spawnMode ? defSf : []);
  const sIds = ids.slice(0, S);
  const rIds = ids.slice(S);
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  const [w] = await startWorkers(run, 1);
  await initAll([w!], target, [sIds]);
  const login = await loginAll([w!], S, concurrency, 30);
  say(`senders logged in ${login.online}/${S} in ${login.seconds.toFixed(2)} s; failed ${login.failed}`);
  requireLogins(login);
  const totals = async () => (await w!.call({ cmd: "totals" }, "totals")).totals;

  // Phase 1: queue. Every `sent` here is a durable write (nobody can ack the items).
  const opts: RunOpts = { mode: "closed", window, size, oneway: true, quotaPerSender, ratePerS: 0, measureFromStart: true };
  const m0 = await allMetrics(target.http);
  const s0 = serverSample(run, target.pid);
  const wc0 = workersCpu(run);
  let finished = false;
  const done = w!.next("done", 24 * 3600_000).then(() => (finished = true));
  w!.send({ cmd: "offline_run", opts, recipients: rIds.map((r) => ({ account: r.account, device: r.device })) });
  let lastCount = -1;
  let lastProgress = performance.now();
  while (!finished) {
    await Promise.race([done, sleep(1000)]);
    if (finished) break;
    const tt = await totals();
    say(`  sent ${tt.sent}, acknowledged (sent) ${tt.acked}, errors ${tt.errors}`);
    if (tt.acked !== lastCount) {
      lastCount = tt.acked;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > drain * 1000) {
      say(`WARNING: no sent for ${drain} s; stopping the queue phase`);
      break;
    }
  }
  const s1 = serverSample(run, target.pid);
  const wc1 = workersCpu(run);
  const m1 = await allMetrics(target.http);
  const qWin = await w!.call({ cmd: "stop" }, "stopped");
  const qS = (s1.t - s0.t) / 1000;
  const qCpu = cpuDelta(s0, s1);
  const latSent = summary(merge([qWin.sent_hist]));
  const queuedPerS = Math.round(qWin.acked / qS);
  const qCounters = counterDeltas(m0, m1);
  say(`queue phase ${qS.toFixed(2)} s: ${qWin.acked} messages acknowledged with sent while the recipients were offline: ${queuedPerS}/s`);
  say(`sent latency (send -> sent): ${fmtLatency(latSent)}`);
  if (qCpu !== null) say(`server CPU ${qCpu.toFixed(2)} s (${pct(qCpu, qS)}% of one core; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${Math.round(qWin.acked / qCpu)} queued msgs per server CPU-second, ${round((qCpu * 1e6) / Math.max(1, qWin.acked), 1)} µs each`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s; other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (qCounters) say(`server counters in the queue phase: ${JSON.stringify(qCounters)}`);
  const commit = commitMs(m1);

  // Phase 2: the recipients log in and drain (ack every delivery as it arrives).
  const acked = (await totals()).acked;
  const s2 = serverSample(run, target.pid);
  const wc2 = workersCpu(run);
  const dr = await w!.call({ cmd: "drain", ids: rIds, concurrency }, "draining");
  say(`recipients logged in ${dr.online}/${R} in ${dr.login_ms.toFixed(1)} ms; failed ${dr.failed}`);
  lastCount = -1;
  lastProgress = performance.now();
  for (;;) {
    const tt = await totals();
    if (tt.delivered >= acked) break;
    if (tt.delivered !== lastCount) {
      lastCount = tt.delivered;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > drain * 1000) {
      say(`WARNING: no delivery for ${drain} s; stopping the drain`);
      break;
    }
    await sleep(100);
  }
  const ds = await w!.call({ cmd: "drain_stats" }, "drain_stats");
  const s3 = serverSample(run, target.pid);
  const wc3 = workersCpu(run);
  const dS = ds.ms / 1000;
  const dCpu = cpuDelta(s2, s3);
  const drainedPerS = dS > 0 ? Math.round(ds.delivered / dS) : 0;
  say(`drain: ${ds.delivered} delivered and acked in ${dS.toFixed(2)} s from login to the last one: ${drainedPerS}/s`);
  if (dCpu !== null) say(`server CPU in the drain ${dCpu.toFixed(2)} s: ${Math.round(ds.delivered / Math.max(1e-9, dCpu))} drained msgs per server CPU-second; load generator CPU ${(wc3 - wc2).toFixed(2)} s`);
  // Give the dlv receipts to the senders a moment (not required for the verdict).
  const t0 = performance.now();
  let st = await w!.call({ cmd: "status" }, "status");
  while (st.no_receipt > 0 && performance.now() - t0 < 3000) {
    await sleep(100);
    st = await w!.call({ cmd: "status" }, "status");
  }
  const rep = await w!.call({ cmd: "report" }, "report");
  const tot = rep.totals;
  say(`totals: sent ${tot.sent}, sent-acked ${tot.acked}, delivered ${tot.delivered}, receipts ${tot.receipts}, lost ${rep.lost}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, errors ${tot.errors}, unknown ${tot.unknown}, disconnects ${tot.disconnects}`);
  const alive = await run.serverAlive();
  const wrong = tot.disconnects > 0 || tot.errors > 0 || tot.unknown > 0 || st.unacked > 0 || dr.failed > 0 || !alive;
  const code = verdict({
    lost: rep.lost > 0 ? lostBanner(rep.lost, rep.lost_ids) : null,
    duplicates: tot.duplicates,
    outOfOrder: tot.out_of_order,
    warning: wrong
      ? `disconnects ${tot.disconnects}, errors ${tot.errors}, unknown ${tot.unknown}, without sent ${st.unacked}, recipient logins failed ${dr.failed}, server alive ${alive}: ${rep.errors_sample.join("; ")}`
      : null,
  });
  const perCpu = qCpu ? Math.round(qWin.acked / qCpu) : null;
  return {
    result: {
      scenario: "offline",
      params: { senders: S, recipients: R, messages: total, window, size, transport, workers: 1, drain_s: drain, mode_server: run.serverMode, server_bin: run.flag("--server-bin") ?? null, server_flags: run.spawnMode ? [...defSf, ...userSf] : null },
      sent: tot.sent,
      acked: tot.acked,
      delivered: tot.delivered,
      receipts: tot.receipts,
      lost: rep.lost,
      duplicates: tot.duplicates,
      out_of_order: tot.out_of_order,
      unacked_at_end: st.unacked,
      errors: tot.errors,
      disconnects: tot.disconnects,
      queued_per_s: queuedPerS,
      drained_per_s: drainedPerS,
      sent_per_s: queuedPerS,
      delivered_per_s: drainedPerS,
      queue_phase: { seconds: round(qS, 3), sent: qWin.sent, acked: qWin.acked },
      drain_phase: { seconds: round(dS, 3), delivered: ds.delivered, login_ms: round(dr.login_ms, 1), server_cpu_s: dCpu === null ? null : round(dCpu, 2), msgs_per_server_cpu_s: dCpu ? Math.round(ds.delivered / dCpu) : null },
      latency_of: "send -> sent (queue phase)",
      latency_ms: latencyJson(latSent),
      server: {
        pid: target.pid,
        cpu_s: qCpu === null ? null : round(qCpu, 2),
        cpu_pct: qCpu === null ? null : pct(qCpu, qS),
        cpu_sys_s: sysDelta(s0, s1),
        cpu_us_per_msg: qCpu === null ? null : round((qCpu * 1e6) / Math.max(1, qWin.acked), 1),
        rss_kb: s3.rss,
        alive,
        counters: qCounters,
        commit_ms: commit,
      },
      client: clientJson(run, wc1 - wc0, qS),
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: perCpu,
      ...(rep.errors_sample.length ? { errors_sample: rep.errors_sample } : {}),
    },
    code,
  };
}

export const OFFLINE: Scenario = {
  name: "offline",
  summary: "S senders queue M messages for R offline recipient devices (closed loop on sent), then the\nrecipients log in and drain; queued/s (durable writes), drained/s, integrity",
  server: true,
  flags: [
    ["--senders S", "sending devices (default 20), each its own account"],
    ["--recipients R", "recipient devices (default 1), one account each; sender i sends to recipient i mod R"],
    ["--messages M", "messages in total (default 100000)"],
    ["--window W", "closed loop: messages in flight per sender until their sent (default 16)"],
    ["--size B", "payload bytes (default 64)"],
    ["--drain S", "give up when nothing moves for S seconds (default 30)"],
  ],
  notes:
    'a spawned server gets "--queue-max-messages 1000000 --queue-max-bytes 1073741824" (the per-device\n' +
    "bound is 10 000 items by default) unless --server-flags sets --queue-max-messages itself; a --target\n" +
    "server must allow --messages / --recipients items per device itself (else: queue_full errors, status 4)",
  run: offline,
};
