/**
 * `groups`: G groups of M members (docs/PROTOCOL.md §6.8): senders send gmsg,
 * every other member must get each one once, in order, with every member's
 * dlv receipt back; gmsg in/s, deliveries out/s.
 */
import { latencyJson, lostBanner, sumTotals, sumWindows, verdict } from "../accounting.ts";
import type { GroupSpread, RunOpts, SenderCopies, Totals } from "../ipc.ts";
import { randomIdPrefix } from "../lean.ts";
import { PHASE_FLAGS, drainStatus, measureRun, phaseFlags, sizeFlag } from "../phase.ts";
import { pin } from "../proc.ts";
import { FatalError, UsageError, pct, round, say, type Outcome, type Run } from "../run.ts";
import { counterDeltas, cpuDelta, otherCpuPct, sysDelta } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag, type Identity } from "../setup.ts";
import { fmtLatency } from "../stats.ts";
import { setup } from "../target.ts";
import { clientJson, loginAll, requireLogins, split, startWorkers, wireTarget, workerCount } from "../workers.ts";

/** --spread, while draining: copies still owed over all workers (each worker's `delivered` counts first copies only). */
function spreadUndelivered(ts: Totals[], need: number): number {
  return ts.reduce((a, t) => a + t.sent, 0) * need - ts.reduce((a, t) => a + t.delivered, 0);
}

/**
 * --spread: each message's copies summed over every worker's members, against the M − 1 it owes. A copy
 * missing from a message the server acknowledged with `sent` is lost; one counted for a message its
 * sender never wrote is a stray (an id mix-up, counted as unknown).
 */
function sumCopies(perWorker: SenderCopies[][], need: number): { lost: number; undelivered: number; lostIds: string[]; strays: number } {
  const sum = new Map<number, Uint32Array>();
  const own = new Map<number, SenderCopies>();
  for (const list of perWorker) {
    for (const c of list) {
      const b = Buffer.from(c.copies, "base64");
      const v = new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
      let acc = sum.get(c.s);
      if (!acc || acc.length < v.length) {
        const grown = new Uint32Array(v.length);
        if (acc) grown.set(acc);
        acc = grown;
        sum.set(c.s, acc);
      }
      for (let n = 1; n < v.length; n++) acc[n]! += v[n]!;
      if (c.sent !== undefined) own.set(c.s, c);
    }
  }
  let lost = 0, undelivered = 0, strays = 0;
  const lostIds: string[] = [];
  for (const [s, acc] of sum) {
    const o = own.get(s);
    const sent = o?.sent ?? 0;
    const unacked = new Set(o?.unacked ?? []);
    for (let n = 1; n <= sent; n++) {
      const miss = need - (n < acc.length ? acc[n]! : 0);
      undelivered += miss;
      if (miss > 0 && !unacked.has(n)) {
        lost += miss;
        if (lostIds.length < 10) lostIds.push(`${o!.account}#${n} (${miss} of ${need} members)`);
      }
    }
    for (let n = sent + 1; n < acc.length; n++) strays += acc[n]!;
  }
  return { lost, undelivered, lostIds, strays };
}

async function groups(run: Run): Promise<Outcome> {
  const G = run.num("--groups", 10, 1);
  const M = run.num("--members", 10, 2);
  const S = Math.min(run.num("--senders", 2, 1), M);
  const window = run.num("--window", 4, 1);
  const { rate, duration, warmup, messages, drain } = phaseFlags(run);
  const size = sizeFlag(run);
  if (M > 1024) throw new UsageError("--members is at most 1024 (groups.max_members of a default server)");
  const conns = G * M;
  const spreadOn = run.flag("--spread") !== undefined;
  const nw = spreadOn ? Math.min(workerCount(run, conns), conns) : Math.min(workerCount(run, conns), G);
  const perWorker = spreadOn ? G * S + Math.ceil((G * (M - S)) / nw) : Math.ceil(G / nw) * M;
  if (perWorker > 15_000) throw new UsageError(`a worker would hold ${perWorker} devices (at most 15 000): use more --workers or fewer members`);
  const mode: RunOpts["mode"] = rate > 0 ? "open" : "closed";
  const sendersTotal = G * S;
  const quotaPerSender = messages > 0 ? Math.ceil(messages / sendersTotal) : 0;
  const tag = runTag();
  const names: string[] = [];
  for (let g = 0; g < G; g++) for (let j = 0; j < M; j++) names.push(`lt${tag}-g${g}m${j}`);
  say(
    `groups: ${G} groups of ${M} members, ${S} sender(s) per group, ${mode === "closed" ? `closed loop, window ${window} per sender (until every member's dlv receipt)` : `open loop at ${rate} gmsg/s`}, ` +
      `${messages > 0 ? `${quotaPerSender * sendersTotal} messages` : `${warmup} s warm-up + ${duration} s measured`}, ${size}-byte payloads, ${run.transport}, ${nw} worker(s)` +
      `${spreadOn ? ", each group's members spread over the workers" : ""}`,
  );
  const { target, ids } = await setup(run, names);
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  const ws = await startWorkers(run, nw, "loadtest/groups-worker.ts");
  const wt = wireTarget(target);
  // Per worker: its groups' local members, and (--spread) where they sit in their group.
  let groupSlices: Identity[][][];
  let spreads: (GroupSpread | undefined)[] = ws.map(() => undefined);
  /** Groups whose senders (and creator) live in worker i: its share of an open-loop rate. */
  let homed: number[];
  if (spreadOn) {
    // Group g's home is worker g % nw: member 0 (creator) and the senders 0..S-1. The others go round
    // the workers starting after home, so home ends up with the fewest of them.
    const prefix = randomIdPrefix();
    groupSlices = ws.map(() => []);
    const layouts: GroupSpread["layout"][] = ws.map(() => []);
    homed = ws.map(() => 0);
    for (let g = 0; g < G; g++) {
      const gids = ids.slice(g * M, (g + 1) * M);
      const accounts = gids.map((id) => id.account);
      const home = g % nw;
      homed[home]!++;
      const here: { ids: Identity[]; idx: number[] }[] = ws.map(() => ({ ids: [], idx: [] }));
      for (let j = 0; j < M; j++) {
        const w = j < S ? home : (home + 1 + (j - S)) % nw;
        here[w]!.ids.push(gids[j]!);
        here[w]!.idx.push(j);
      }
      for (let i = 0; i < nw; i++) {
        if (here[i]!.ids.length === 0) continue;
        groupSlices[i]!.push(here[i]!.ids);
        layouts[i]!.push({ gi: g, idx: here[i]!.idx, accounts });
      }
    }
    spreads = layouts.map((layout) => ({ prefix, layout }));
  } else {
    const slices = split(ids, nw, M);
    groupSlices = slices.map((sl) => Array.from({ length: sl.length / M }, (_, g) => sl.slice(g * M, (g + 1) * M)));
    homed = groupSlices.map((gs) => gs.length);
  }
  await Promise.all(ws.map((w, i) => w.call({ cmd: "g_init", target: wt, groups: groupSlices[i]!, senders: S, size, ...(spreads[i] ? { spread: spreads[i] } : {}) }, "ready")));
  if (spreadOn) say(`members per worker: ${groupSlices.map((gs) => gs.reduce((a, g) => a + g.length, 0)).join(", ")}`);
  const login = await loginAll(ws, conns, Math.max(20, Math.floor(400 / nw)), 30);
  say(`logged in ${login.online}/${conns} in ${login.seconds.toFixed(2)} s; failed ${login.failed}`);
  requireLogins(login);
  const created = await Promise.all(ws.map((w) => w.call({ cmd: "g_create" }, "g_created")));
  const cFailed = created.reduce((a, c) => a + c.failed, 0);
  say(`created ${created.reduce((a, c) => a + c.groups, 0)} groups in ${(Math.max(...created.map((c) => c.ms)) / 1000).toFixed(2)} s${cFailed ? `; FAILED ${cFailed}: ${created.flatMap((c) => c.errors).join("; ")}` : ""}`);
  if (cFailed) throw new FatalError(`${cFailed} groups could not be created (does this server have the groups module? docs/PROTOCOL.md §6.8)`);

  const optsFor = (i: number): RunOpts => ({
    mode, window, size, oneway: false, quotaPerSender, ratePerS: (rate * homed[i]!) / G, measureFromStart: messages > 0,
  });
  const { s0, s1, wc0, wc1, windows, m0, m1 } = await measureRun(run, ws, target, { messages, warmup, duration, drain, optsFor, syscalls: false, unit: "deliveries" });
  const wallS = (s1.t - s0.t) / 1000;
  const { counts: win, delivery: lat, sent: latSent, receipt: latRcpt } = sumWindows(windows);
  const cpu = cpuDelta(s0, s1);
  const counters = counterDeltas(m0, m1);
  say(`measured ${wallS.toFixed(2)} s: ${win.sent} gmsg in (${Math.round(win.sent / wallS)}/s), ${win.acked} sent back, ${win.delivered} deliveries out (${Math.round(win.delivered / wallS)}/s), ${win.receipts} dlv receipts`);
  say(`delivery latency (send -> msg at a member): ${fmtLatency(lat)}`);
  say(`sent latency (send -> sent):                ${fmtLatency(latSent)}`);
  say(`chain latency (send -> last member's dlv):  ${fmtLatency(latRcpt)}`);
  if (cpu !== null) say(`server CPU ${cpu.toFixed(2)} s (${pct(cpu, wallS)}%; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${Math.round(win.delivered / Math.max(1e-9, cpu))} deliveries and ${Math.round(win.sent / Math.max(1e-9, cpu))} gmsg per server CPU-second`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s (${pct(wc1 - wc0, wallS)}%); other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (counters) say(`server counters in the measured phase: ${JSON.stringify(counters)}`);
  // Drain: every copy of every acknowledged message must arrive, and every receipt come back.
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  // --spread: a worker sees only its members' copies; the whole group's shortfall is Σsent × (M − 1) − Σdelivered.
  const undelivered = (st: { undelivered: number; totals: Totals }[]) => (spreadOn ? spreadUndelivered(st.map((s) => s.totals), M - 1) : sum(st.map((s) => s.undelivered)));
  const st = await drainStatus(
    ws, drain,
    (st) => undelivered(st) === 0 && sum(st.map((s) => s.no_receipt)) === 0,
    (st, secs) => `drained in ${secs} s: copies undelivered ${undelivered(st)}, messages without every receipt ${sum(st.map((s) => s.no_receipt))}`,
  );
  const reports = await Promise.all(ws.map((w) => w.call({ cmd: "report" }, "report")));
  const tot = sumTotals(reports.map((r) => r.totals));
  let lost = reports.reduce((a, r) => a + r.lost, 0);
  let lostIds = reports.flatMap((r) => r.lost_ids).slice(0, 10);
  let undeliveredEnd = st.reduce((a, s) => a + s.undelivered, 0);
  if (spreadOn) {
    const copies = await Promise.all(ws.map((w) => w.call({ cmd: "g_copies" }, "g_copies")));
    const x = sumCopies(copies.map((c) => c.senders), M - 1);
    lost = x.lost;
    lostIds = x.lostIds;
    undeliveredEnd = x.undelivered;
    tot.unknown += x.strays;
  }
  const errSamples = reports.flatMap((r) => r.errors_sample).slice(0, 10);
  const unackedEnd = st.reduce((a, s) => a + s.unacked, 0);
  const noRcptEnd = st.reduce((a, s) => a + s.no_receipt, 0);
  say(`totals: gmsg sent ${tot.sent}, sent-acked ${tot.acked}, copies delivered ${tot.delivered} (of ${tot.sent * (M - 1)}), receipts ${tot.receipts}, lost copies ${lost}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, errors ${tot.errors}, disconnects ${tot.disconnects}`);
  const alive = await run.serverAlive();
  const wrong = tot.disconnects > 0 || tot.errors > 0 || tot.unknown > 0 || unackedEnd > 0 || noRcptEnd > 0 || undeliveredEnd > 0 || !alive;
  const code = verdict({
    lost: lost > 0 ? lostBanner(lost, lostIds, "COPIES OF GROUP MESSAGES") : null,
    duplicates: tot.duplicates,
    outOfOrder: tot.out_of_order,
    warning: wrong
      ? `disconnects ${tot.disconnects}, errors ${tot.errors}, unknown ${tot.unknown}, without sent ${unackedEnd}, without every receipt ${noRcptEnd}, copies undelivered ${undeliveredEnd}, server alive ${alive}: ${errSamples.join("; ")}`
      : null,
  });
  return {
    result: {
      scenario: "groups",
      params: {
        groups: G, members: M, senders_per_group: S, mode, window: mode === "closed" ? window : null, rate: mode === "open" ? rate : null,
        duration_s: messages > 0 ? null : duration, warmup_s: messages > 0 ? 0 : warmup, messages: messages > 0 ? quotaPerSender * sendersTotal : null,
        size, transport: run.transport, workers: nw, mode_server: run.serverMode, server_bin: run.flag("--server-bin") ?? null,
        ...(spreadOn ? { spread: true } : {}),
      },
      // sent = gmsg in; delivered = copies out (each gmsg goes to M - 1 members).
      sent: tot.sent, acked: tot.acked, delivered: tot.delivered, receipts: tot.receipts, lost, duplicates: tot.duplicates, out_of_order: tot.out_of_order,
      unacked_at_end: unackedEnd, undelivered_at_end: undeliveredEnd, no_receipt_at_end: noRcptEnd, errors: tot.errors, disconnects: tot.disconnects,
      measured: { seconds: round(wallS, 3), ...win },
      sent_per_s: Math.round(win.sent / wallS),
      delivered_per_s: Math.round(win.delivered / wallS),
      receipts_per_s: Math.round(win.receipts / wallS),
      latency_of: mode === "open" ? "intended send time -> msg at a member" : "send -> msg at a member",
      latency_ms: latencyJson(lat),
      sent_latency_ms: latencyJson(latSent),
      chain_latency_ms: latencyJson(latRcpt),
      server: {
        pid: target.pid, cpu_s: cpu === null ? null : round(cpu, 2), cpu_pct: cpu === null ? null : pct(cpu, wallS),
        cpu_sys_s: sysDelta(s0, s1), rss_kb: s1.rss, alive, counters,
      },
      client: clientJson(run, wc1 - wc0, wallS),
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: cpu ? Math.round(win.delivered / cpu) : null,
      gmsg_per_server_cpu_s: cpu ? Math.round(win.sent / cpu) : null,
      ...(errSamples.length ? { errors_sample: errSamples } : {}),
    },
    code,
  };
}

export const GROUPS: Scenario = {
  name: "groups",
  summary: "G groups of M members (docs/PROTOCOL.md §6.8): senders send gmsg, every other member must get\neach one once, in order, with every member's dlv receipt back; gmsg in/s, deliveries out/s",
  server: true,
  flags: [
    ["--groups G", "groups (default 10); all members of a group live in one worker"],
    [
      "--spread",
      "split each group's members over all workers instead (the creator and senders stay in\n" +
        "the group's home worker; loss is checked by summing each message's copies over workers)",
    ],
    ["--members M", "members per group, one device each (default 10; at most 1024)"],
    ["--senders S", "senders per group (its first S members; default 2)"],
    ["--window W", "closed loop: gmsg in flight per sender until every member's dlv receipt (default 4)"],
    ["--rate R", "open loop at R gmsg/s in total instead"],
    [`${PHASE_FLAGS.filter(([f]) => f !== "--rate R").map(([f]) => f).join(", ")}   as for pairs`, ""],
  ],
  run: groups,
};
