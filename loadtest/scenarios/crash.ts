/**
 * `crash`: the store-and-forward SIGKILL loop (test/wire/crash.test.ts),
 * as long as asked. Senders run a closed loop of 1:1 messages to one
 * recipient account with several devices while the server is killed with
 * SIGKILL at random moments and restarted on the same ports. At the end,
 * after every device drained: every message a sender saw `sent` for must
 * have reached every recipient device, with no duplicate after the SDK's
 * dedup, in sequence order, and no sequence number given to two messages.
 *
 *   npm run loadtest -- crash --kills 50 --senders 8 --devices 2
 *
 * Exit status: 0 clean; 1 an acknowledged message was lost; 3 duplicates,
 * disorder or a reused sequence number.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SwitchboardClient, type Message } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { cpuSeconds, pin, rssKb, spawnServer, type SpawnedServer } from "../proc.ts";
import { UsageError, type Outcome, type Run } from "../run.ts";
import { flagNames, section, type Scenario } from "../scenario.ts";
import { newHistogram, summary, fmtLatency } from "../stats.ts";

interface CrashOpts {
  kills: number;
  senders: number;
  devices: number;
  window: number;
  minMs: number;
  maxMs: number;
  serverCpus: string | null;
  workerCpus: string | null;
  serverFlags: string[];
  keep: boolean;
  /** The server entry to spawn (default src/cli/main.ts). */
  serverMain?: string;
  /** A compiled server binary to spawn instead (dist/switchboard). */
  serverBin?: string;
}

function freePortPair(): number {
  // Below the ephemeral range (bun-platform.md pitfall 6), random to keep parallel runs apart.
  return 20000 + 2 * Math.floor(Math.random() * 4000);
}

async function runCrash(o: CrashOpts): Promise<Outcome> {
  const dataDir = mkdtempSync(join(tmpdir(), "sb-crash-"));
  if (o.workerCpus) pin(process.pid, o.workerCpus);
  const port = freePortPair();
  // The recipients spend part of every restart reconnecting while the senders keep going, so their queues
  // grow: a bound of 10 000 items (the default) is reached after a few kills on a fast server, and a refused
  // send (queue_full) is not what this scenario measures. A --server-flags that sets the bound wins.
  const bound = o.serverFlags.includes("--queue-max-messages") ? [] : ["--queue-max-messages", "1000000", "--queue-max-bytes", "1073741824"];
  const fixed = ["--tcp-port", String(port), "--http-port", String(port + 1), "--tls-port", "-1", ...bound, ...o.serverFlags];

  // Identities straight into the data directory (no server needed for that).
  const store = new SqliteAccountStore(dataDir);
  const mk = (account: string): KeyFile => {
    const key = generateDeviceKey();
    if (!store.accountExists(account)) store.createAccount(account, 60);
    const r = store.addDevice(account, key.publicKey, "crash", 64);
    if (!r.ok) throw new Error(r.message);
    return keyToFile(key, account, r.value.device);
  };
  const recipientKeys = Array.from({ length: o.devices }, () => mk("rcpt"));
  const senderKeys = Array.from({ length: o.senders }, (_, i) => mk(`sender${i}`));
  store.close();

  let server: SpawnedServer = await spawnServer(dataDir, o.serverCpus, fixed, [], o.serverMain, o.serverBin);
  // Whatever ends this process (a crash in the scenario included) ends its server too: no orphan holding the ports.
  process.on("exit", () => {
    if (server.proc.exitCode === null) server.proc.kill("SIGKILL");
  });
  console.log(`crash: server pid ${server.pid} on 127.0.0.1:${port}, ${o.senders} senders -> 1 account with ${o.devices} devices, ${o.kills} kills`);
  const connect = async (kf: KeyFile, onMessage?: (m: Message) => void) => {
    const c = new SwitchboardClient({ host: "127.0.0.1", port, key: kf, pingMs: 500 });
    if (onMessage) c.on("message", onMessage);
    await c.connect();
    return c;
  };
  const got: Message[][] = recipientKeys.map(() => []);
  const sentAt = new Map<string, number>();
  const latency = newHistogram();
  const recipients = await Promise.all(
    recipientKeys.map((kf, i) =>
      connect(kf, (m) => {
        got[i]!.push(m);
        const t = sentAt.get(m.id);
        if (t !== undefined) latency.recordValue(Math.max(1, Math.round((performance.now() - t) * 1000)));
      }),
    ),
  );
  const senders = await Promise.all(senderKeys.map((kf) => connect(kf)));

  const acked = new Map<string, number>();
  let serverCpu = 0;
  let stop = false;
  let sent = 0;
  /** Sends the server refused (queue_full and the like): never acknowledged, so never owed. */
  let refused = 0;
  const refusedBy: Record<string, number> = {};
  const t0 = performance.now();
  const loops = senders.map(async (c, i) => {
    const inflight = new Set<Promise<void>>();
    let n = 0;
    while (!stop) {
      const id = `s${i}-${n++}`;
      sent++;
      sentAt.set(id, performance.now());
      const p: Promise<void> = c.send("rcpt", `crash ${id}`, { id }).then(
        (r) => void acked.set(id, r.seq),
        async (e: Error & { code?: string }) => {
          refused++;
          refusedBy[e.code ?? e.message] = (refusedBy[e.code ?? e.message] ?? 0) + 1;
          await Bun.sleep(20); // a refusal (e.g. queue_full) means "later"
        },
      );
      inflight.add(p);
      void p.finally(() => inflight.delete(p)).catch(() => {});
      if (inflight.size >= o.window) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  });
  for (let k = 1; k <= o.kills; k++) {
    await Bun.sleep(o.minMs + Math.random() * (o.maxMs - o.minMs));
    serverCpu += cpuSeconds(server.pid) ?? 0; // read just before the kill: the CPU of every incarnation adds up
    server.proc.kill("SIGKILL");
    await server.proc.exited;
    server = await spawnServer(dataDir, o.serverCpus, fixed, [], o.serverMain, o.serverBin);
    console.log(`crash: kill ${k}/${o.kills} done; ${acked.size} acknowledged so far, restarted as pid ${server.pid}`);
  }
  await Bun.sleep(500);
  stop = true;
  await Promise.all(loops);
  const sendSeconds = (performance.now() - t0) / 1000;
  const deadline = Date.now() + 120_000;
  while (got.some((g) => new Set(g.map((m) => m.id)).size < acked.size) && Date.now() < deadline) await Bun.sleep(50);

  let lost = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  let seqReused = 0;
  const bySeq = new Map<string, string>();
  for (const g of got) {
    const ids = new Set<string>();
    const last = new Map<string, number>(); // per conversation: sequence numbers are per conversation
    for (const m of g) {
      if (ids.has(m.id)) duplicates++;
      ids.add(m.id);
      if (m.seq <= (last.get(m.conversation) ?? 0)) outOfOrder++;
      last.set(m.conversation, Math.max(last.get(m.conversation) ?? 0, m.seq));
      const key = `${m.conversation}/${m.seq}`;
      const prev = bySeq.get(key);
      if (prev !== undefined && prev !== m.id) seqReused++;
      bySeq.set(key, m.id);
    }
    for (const id of acked.keys()) if (!ids.has(id)) lost++;
  }
  const delivered = got.reduce((n, g) => n + g.length, 0);
  for (const c of [...senders, ...recipients]) await c.close();
  serverCpu += cpuSeconds(server.pid) ?? 0;
  const rss = rssKb(server.pid);
  const wallS = (performance.now() - t0) / 1000;
  server.proc.kill("SIGTERM");
  await server.proc.exited;
  if (!o.keep) rmSync(dataDir, { recursive: true, force: true });

  const lat = summary(latency);
  console.log(`crash: sent ${sent}, acknowledged ${acked.size}, refused ${refused} ${JSON.stringify(refusedBy)}, delivered ${delivered} (${o.devices} devices), lost ${lost}, duplicates ${duplicates}, out of order ${outOfOrder}, seq reused ${seqReused}`);
  console.log(`crash: latency send->delivery across restarts ${fmtLatency(lat)}`);
  if (lost > 0) console.log(`crash: LOST ${lost} ACKNOWLEDGED MESSAGES`);
  return {
    result: {
      scenario: "crash",
      params: { kills: o.kills, senders: o.senders, devices: o.devices, window: o.window, interval_ms: [o.minMs, o.maxMs] },
      sent, acked: acked.size, refused, refused_by: refusedBy, delivered, lost, duplicates, out_of_order: outOfOrder, seq_reused: seqReused, kills: o.kills,
      sent_per_s: Math.round(acked.size / sendSeconds), delivered_per_s: Math.round(delivered / sendSeconds),
      latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, p999: lat.p999, max: lat.max },
      // CPU of all server incarnations (startup and recovery included), over the whole run including the drain.
      server: { cpu_s: Math.round(serverCpu * 100) / 100, cpu_pct: Math.round((serverCpu / wallS) * 1000) / 10, rss_kb: rss, incarnations: o.kills + 1 },
      msgs_per_server_cpu_s: serverCpu > 0 ? Math.round(acked.size / serverCpu) : null,
    },
    code: lost > 0 ? 1 : duplicates + outOfOrder + seqReused > 0 ? 3 : 0,
  };
}

const FLAGS: Scenario["flags"] = [
  ["--kills N", "SIGKILLs (default 20)"],
  ["--senders S", "sending devices (default 8)"],
  ["--devices D", "devices of the recipient account (default 2)"],
  ["--window W", "messages in flight per sender until sent (default 16)"],
  ["--interval MIN-MAX", "milliseconds between kills, uniformly random (default 150-750)"],
  ["--server-cpus, --worker-cpus, --server-flags, --server-main, --server-bin, --keep   as above (the SDK clients run in this process)", ""],
];
/** The only flags crash takes: the rest (--target, --transport, --workers, ...) mean nothing to a run that spawns its own server and has no workers. */
const ALLOWED = new Set([...flagNames(FLAGS), "--spawn"]);

async function crash(run: Run): Promise<Outcome> {
  if (run.flag("--target") !== undefined) {
    throw new UsageError(
      "crash cannot measure a --target server: it must SIGKILL and restart the server itself, many times, on the same data directory.\n" +
        "  It always spawns its own (from source, or --server-bin PATH).",
    );
  }
  for (const k of Object.keys(run.flags)) if (!ALLOWED.has(k)) throw new UsageError(`crash does not take ${k}`, USAGE_HINT);
  const iv = (run.flag("--interval") ?? "150-750").match(/^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/);
  if (!iv || Number(iv[1]) > Number(iv[2])) throw new UsageError("--interval must be MIN-MAX in milliseconds, e.g. 150-750");
  return runCrash({
    kills: run.num("--kills", 20, 1),
    senders: run.num("--senders", 8, 1),
    devices: run.num("--devices", 2, 1),
    window: run.num("--window", 16, 1),
    minMs: Number(iv[1]),
    maxMs: Number(iv[2]),
    serverCpus: (run.flag("--server-cpus") ?? "0") || null,
    workerCpus: run.workerCpus || null,
    serverFlags: run.words("--server-flags"),
    keep: run.bool("--keep"),
    serverMain: run.flag("--server-main"),
    serverBin: run.flag("--server-bin"),
  });
}

const USAGE_HINT = section("crash", FLAGS);

export const CRASH: Scenario = {
  name: "crash",
  summary:
    "senders run a closed loop to one account with D devices while the server is SIGKILLed and\n" +
    "restarted at random moments; at the end every acknowledged message must have arrived exactly once\n" +
    "(always spawns its own server; takes only the flags listed under crash)",
  server: false,
  flags: FLAGS,
  run: crash,
};
