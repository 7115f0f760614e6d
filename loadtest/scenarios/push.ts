/**
 * `push`: offline devices, messages, and SIGKILLs. D devices register a
 * webhook push endpoint (a signed-webhook gateway in this process, on a real
 * socket) and go offline; each round, one sender sends M messages spread
 * over them, waits for every `sent`, and the server is SIGKILLed at once (its
 * push jobs still pending or in flight) and restarted. At the end every
 * device that was sent a message must have been woken: the number that never
 * were is "jobs lost" (must be 0). Pushes per device show the collapsing
 * (one job per device, whatever the number of messages and kills).
 *
 *   npm run loadtest -- push --devices 200 --messages 2000 --kills 5
 *
 * Exit status: 0 clean; 1 a device with messages was never woken; 3 a bad signature.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SwitchboardClient } from "../../src/client/client.ts";
import { pushCalls } from "../../src/client/push.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { verifyWebhook, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, type WebhookBody } from "../../src/core/push/webhook.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { spawnServer, type SpawnedServer } from "../proc.ts";
import { UsageError, type Outcome, type Run } from "../run.ts";
import { flagNames, type Scenario } from "../scenario.ts";

const SECRET = "loadtest-push-secret-0123";

async function runPush(o: { devices: number; messages: number; kills: number; serverFlags: string[]; serverCpus: string | null; keep: boolean }): Promise<Outcome> {
  const seen: WebhookBody[] = [];
  let bad = 0;
  const gw = Bun.serve({
    port: 0, hostname: "127.0.0.1",
    async fetch(req) {
      const text = await req.text();
      const v = verifyWebhook(SECRET, req.headers.get(WEBHOOK_TIMESTAMP), req.headers.get(WEBHOOK_SIGNATURE), text, Date.now());
      if (!v.ok) return (bad++, new Response("", { status: 401 }));
      seen.push(JSON.parse(text));
      return new Response("", { status: 204 });
    },
  });
  const dataDir = mkdtempSync(join(tmpdir(), "sb-push-"));
  const store = new SqliteAccountStore(dataDir);
  const mk = (account: string): KeyFile => {
    const key = generateDeviceKey();
    if (!store.accountExists(account)) store.createAccount(account, 60);
    const r = store.addDevice(account, key.publicKey, "push", 64);
    if (!r.ok) throw new Error(r.message);
    return keyToFile(key, account, r.value.device);
  };
  const names = Array.from({ length: o.devices }, (_, i) => `p${i}`);
  const keys = names.map(mk);
  const senderKey = mk("sender");
  store.close();
  const flags = [
    "--push-webhook-url", `http://127.0.0.1:${gw.port}/hook`, "--push-webhook-secret", SECRET, "--push-tick-ms", "50",
    "--queue-max-messages", "1000000", ...o.serverFlags,
  ];
  let server: SpawnedServer = await spawnServer(dataDir, o.serverCpus, flags);
  process.on("exit", () => {
    if (server.proc.exitCode === null) server.proc.kill("SIGKILL");
  });
  const client = async (kf: KeyFile) => {
    const c = new SwitchboardClient({ host: "127.0.0.1", port: server.tcp, key: kf, reconnect: false });
    await c.connect();
    return c;
  };
  for (let i = 0; i < keys.length; i += 50) {
    await Promise.all(keys.slice(i, i + 50).map(async (kf, j) => {
      const c = await client(kf);
      await pushCalls(c).register({ p: "webhook", token: names[i + j]! });
      await c.close();
    }));
  }
  console.log(`push: server pid ${server.pid}, ${o.devices} offline devices with a webhook endpoint, ${o.messages} messages per round, ${o.kills} kills`);
  const messaged = new Set<string>();
  let acked = 0;
  const t0 = performance.now();
  for (let round = 0; round <= o.kills; round++) {
    const sender = await client(senderKey);
    const sends: Promise<unknown>[] = [];
    for (let m = 0; m < o.messages; m++) {
      const to = names[(m * 7919 + round) % names.length]!;
      sends.push(sender.send(to, `push round ${round} message ${m}`).then(() => (acked++, messaged.add(to))));
    }
    await Promise.all(sends);
    await sender.close();
    if (round === o.kills) break;
    server.proc.kill("SIGKILL"); // every message above is durable; its wake-up may be pending, in flight or sent
    await server.proc.exited;
    server = await spawnServer(dataDir, o.serverCpus, flags);
    console.log(`push: kill ${round + 1}/${o.kills}: ${new Set(seen.map((b) => b.token)).size} devices woken so far`);
  }
  const woken = () => new Set(seen.map((b) => b.token));
  const deadline = Date.now() + 60_000;
  while ([...messaged].some((d) => !woken().has(d)) && Date.now() < deadline) await Bun.sleep(50);
  const wallS = (performance.now() - t0) / 1000;
  server.proc.kill("SIGTERM");
  await server.proc.exited;
  await gw.stop(true);
  if (!o.keep) rmSync(dataDir, { recursive: true, force: true });

  const per = new Map<string, number>();
  for (const b of seen) per.set(b.token, (per.get(b.token) ?? 0) + 1);
  const counts = [...messaged].map((d) => per.get(d) ?? 0).sort((a, b) => a - b);
  const lost = counts.filter((n) => n === 0).length;
  const keysRepeated = seen.length - new Set(seen.map((b) => b.id)).size;
  const median = counts[Math.floor(counts.length / 2)] ?? 0;
  const leaks = seen.filter((b) => Object.keys(b).some((k) => !["v", "id", "token", "urgency", "count"].includes(k))).length;
  console.log(`push: ${acked} messages acknowledged to ${messaged.size} devices over ${o.kills} kills in ${wallS.toFixed(1)} s`);
  console.log(`push: pushes per offline device: median ${median}, max ${counts.at(-1) ?? 0}; devices never woken (jobs lost) ${lost}; idempotency keys sent twice ${keysRepeated}; bad signatures ${bad}; bodies with extra fields ${leaks}`);
  return {
    result: {
      scenario: "push",
      params: { devices: o.devices, messages: o.messages, kills: o.kills },
      acked, devices_messaged: messaged.size, pushes: seen.length,
      pushes_per_device: { median, max: counts.at(-1) ?? 0, mean: counts.length ? Math.round((seen.length / counts.length) * 100) / 100 : 0 },
      jobs_lost: lost, keys_repeated: keysRepeated, bad_signatures: bad, extra_fields: leaks, wall_s: Math.round(wallS * 10) / 10,
    },
    code: lost > 0 ? 1 : bad + leaks > 0 ? 3 : 0,
  };
}

const FLAGS: Scenario["flags"] = [
  ["--devices D", "offline devices, each with a webhook endpoint (default 200)"],
  ["--messages M", "messages per round, spread over the devices (default 2000)"],
  ["--kills K", "SIGKILLs, one after each round but the last (default 5)"],
  ["--server-cpus, --server-flags, --keep   as above", ""],
];
const ALLOWED = new Set([...flagNames(FLAGS), "--spawn"]);

async function push(run: Run): Promise<Outcome> {
  if (run.flag("--target") !== undefined) throw new UsageError("push must SIGKILL and restart the server itself: it always spawns its own");
  for (const k of Object.keys(run.flags)) if (!ALLOWED.has(k)) throw new UsageError(`push does not take ${k}`);
  return runPush({
    devices: run.num("--devices", 200, 1),
    messages: run.num("--messages", 2000, 1),
    kills: run.num("--kills", 5, 0),
    serverFlags: run.words("--server-flags"),
    serverCpus: (run.flag("--server-cpus") ?? "0") || null,
    keep: run.bool("--keep"),
  });
}

export const PUSH: Scenario = {
  name: "push",
  summary:
    "D offline devices with push endpoints get M messages per round, the server is SIGKILLed after each\n" +
    "round; reports pushes per offline device and devices never woken (jobs lost: must be 0)",
  server: false,
  flags: FLAGS,
  run: push,
};
