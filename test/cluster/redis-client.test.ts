/**
 * The Redis client decision (docs/CLUSTER.md §"Redis client"): a real
 * redis-server is killed with -9 and restarted under a client that renews a
 * lease by compare-and-set every 50 ms and holds a pub/sub subscription. The
 * client survives if renewals fail fast during the outage (nothing hangs),
 * resume by themselves afterwards, and the subscription delivers every later
 * message exactly once. Bun's RedisClient passes only inside RedisLink's
 * workarounds; the raw-client case below pins the defect that makes them
 * necessary, and fails (telling us to drop the workaround) once Bun fixes it.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { RedisLink, Script, type RedisReply } from "../../src/core/cluster/redis.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { waitFor } from "../helpers/harness.ts";

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.splice(0).forEach((f) => f()));

/** Set if free or already ours, with a TTL: the shape of a lease renewal. */
const RENEW = new Script("test-renew", `
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`);

interface Renewer {
  results: RedisReply[];
  inFlightMax: number;
  stop(): void;
}

function renewEvery(link: RedisLink, ms: number): Renewer {
  const r: Renewer = { results: [], inFlightMax: 0, stop: () => clearInterval(timer) };
  let inFlight = 0;
  const timer = setInterval(async () => {
    inFlight++;
    r.inFlightMax = Math.max(r.inFlightMax, inFlight);
    r.results.push(await link.script(RENEW, ["lease"], ["me", 5000]));
    inFlight--;
  }, ms);
  return r;
}

async function exactlyOnce(link: RedisLink, received: string[], tag: string, n: number): Promise<void> {
  const from = received.length;
  for (let i = 0; i < n; i++) expect((await link.call("PUBLISH", ["events", `${tag}-${i}`])).ok).toBe(true);
  const sentinel = `${tag}-end`;
  await link.call("PUBLISH", ["events", sentinel]);
  await waitFor(() => received.includes(sentinel), `the sentinel ${sentinel}`);
  // One connection delivers in order, so any duplicate of an earlier message came before the sentinel.
  expect(received.slice(from)).toEqual([...Array.from({ length: n }, (_, i) => `${tag}-${i}`), sentinel]);
}

async function survives(redis: TestRedis, link: RedisLink, outage: () => Promise<void>): Promise<void> {
  const received: string[] = [];
  let connects = 0;
  link.onConnect(() => connects++);
  link.subscribe("events", (m) => received.push(m));
  link.start();
  await waitFor(async () => (await link.script(RENEW, ["lease"], ["me", 5000])).ok, "the first renewal");
  await waitFor(async () => (await redis.cli("PUBSUB", "NUMSUB", "events")).endsWith("1"), "the subscription");
  await exactlyOnce(link, received, "before", 20);

  const renewer = renewEvery(link, 50);
  try {
    const before = connects;
    await redis.kill9();
    await waitFor(() => renewer.results.some((r) => !r.ok), "a renewal to fail while redis is down");
    await outage();
    const failedDuringOutage = renewer.results.filter((r) => !r.ok);
    // Fail fast: the outage is seen as "down"/"timeout", never as a silent wait.
    expect(failedDuringOutage.every((r) => !r.ok && (r.reason === "down" || r.reason === "timeout"))).toBe(true);
    await redis.restart();
    const mark = renewer.results.length;
    await waitFor(() => renewer.results.slice(mark).some((r) => r.ok), "renewals to resume after the restart", 60_000);
    expect(connects).toBeGreaterThan(before);
    await waitFor(async () => (await redis.cli("PUBSUB", "NUMSUB", "events")).endsWith("1"), "the subscription to be restored", 60_000);
    await exactlyOnce(link, received, "after", 50);
    // Renewals never piled up behind the outage (each one waits at most its own deadline).
    expect(renewer.inFlightMax).toBeLessThanOrEqual(30);
  } finally {
    renewer.stop();
  }
}

describe("Redis client under a redis-server restart", () => {
  test("RedisLink (Bun RedisClient): a short outage — Bun's own reconnect", async () => {
    const redis = await startRedis();
    const link = new RedisLink(redis.url, { commandTimeoutMs: 500 });
    cleanups.push(() => link.close(), () => redis.cleanup());
    await survives(redis, link, () => Bun.sleep(500));
  });

  test("RedisLink (Bun RedisClient): an outage past Bun's retry budget — Bun gives up, the link reconnects", async () => {
    const redis = await startRedis();
    // maxRetries 2 reaches in a second the state Bun's default (20) reaches after about 30 s: onclose, then no more attempts.
    const link = new RedisLink(redis.url, { commandTimeoutMs: 500, maxRetries: 2 });
    cleanups.push(() => link.close(), () => redis.cleanup());
    await survives(redis, link, () => Bun.sleep(3000));
  });

  test("raw Bun RedisClient does not re-SUBSCRIBE after a restart (why RedisLink does)", async () => {
    const redis = await startRedis();
    const sub = new RedisClient(redis.url, { connectionTimeout: 500 });
    cleanups.push(() => sub.close(), () => redis.cleanup());
    let connects = 0;
    sub.onconnect = () => connects++;
    await sub.connect();
    await sub.subscribe("events", () => {});
    expect(await redis.cli("PUBSUB", "NUMSUB", "events")).toBe("events\n1");
    await redis.kill9();
    await redis.restart();
    await waitFor(() => connects >= 2 && sub.connected, "the raw client to reconnect", 60_000);
    await Bun.sleep(500); // let any re-SUBSCRIBE Bun might send reach the server
    expect(await redis.cli("PUBSUB", "NUMSUB", "events")).toBe("events\n0");
  });
});
