/**
 * Store-and-forward under SIGKILL. A running load of 1:1 messages (one
 * recipient with two devices) while the server is killed with SIGKILL at
 * random moments and restarted, at least ten times. At the end, after every
 * device has drained: every message a sender saw acknowledged (`sent`) was
 * delivered to every recipient device; no device shows a duplicate after the
 * SDK's dedup; each conversation's order holds; no sequence number was given
 * to two messages.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient, Message } from "../../src/client/client.ts";
import { prng } from "../helpers/prng.ts";

const KILLS = 10;
const SENDERS = 4;

let srv: TestServer | null = null;
afterAll(() => srv?.cleanup());


// Both places a group commit can run (queue.committer): on the event loop, and on the commit Worker, where a
// SIGKILL also lands while a batch is posted and not yet committed, or committed and its reply not yet taken.
for (const committer of ["inline", "worker"]) {
  test(`no acknowledged message is lost across ${KILLS} SIGKILLs under load (queue.committer = ${committer})`, async () => {
    const seed = Number(process.env.SB_CRASH_SEED ?? Date.now() % 1_000_000);
    try {
      await run(seed, committer);
    } catch (e) {
      console.error(`crash test failed with seed ${seed} (replay: SB_CRASH_SEED=${seed})`);
      throw e;
    }
  }, 180_000);
}

async function run(seed: number, committer: string): Promise<void> {
  const rand = prng(seed);
  // Fixed ports, so that clients reconnect to the restarted server by themselves.
  const base = 20000 + Math.floor(rand() * 9000) + (committer === "worker" ? 3 : 0); // not the ports the first run just left
  const args = ["--tcp-port", String(base), "--http-port", String(base + 1), "--tls-port", "-1", "--queue-commit-ms", "5", "--queue-committer", committer];
  srv?.cleanup();
  srv = await startServer({ args });
  const s = srv;

  const recipientKeys = [await s.newDevice("rcpt"), await s.newDevice("rcpt")];
  const senderKeys = await Promise.all(Array.from({ length: SENDERS }, (_, i) => s.newDevice(`sender${i}`)));
  // No ping override: a SIGKILLed server's sockets close at once, and a short heartbeat under a loaded
  // machine (the full suite runs beside other load) cut healthy connections whose pongs were late.
  const opts = {};
  const recipients: SwitchboardClient[] = [];
  // Per recipient device: what it was given, in order (after the SDK's dedup).
  const got: Message[][] = recipientKeys.map(() => []);
  for (const [i, kf] of recipientKeys.entries()) {
    const c = await s.client(kf, opts);
    c.on("message", (m) => got[i]!.push(m));
    recipients.push(c);
  }
  const senders = await Promise.all(senderKeys.map((kf) => s.client(kf, opts)));
  // Per client: drops by reason and the last reconnect delay, shown if the test fails.
  const clients = [...recipients, ...senders];
  const drops = clients.map(() => ({ closes: {} as Record<string, number>, lastDelayMs: 0 }));
  for (const [i, c] of clients.entries()) {
    c.on("close", (e) => void (drops[i]!.closes[e.reason] = (drops[i]!.closes[e.reason] ?? 0) + 1));
    c.on("reconnecting", (e) => void (drops[i]!.lastDelayMs = e.delayMs));
  }
  const state = () => JSON.stringify(clients.map((c, i) => ({ u: `${c.account}/${c.device}`, ready: c.isReady, ...drops[i] })));
  /** waitFor, with the clients' state at the moment it gives up. */
  const until = (cond: () => boolean, what: () => string, ms: number) =>
    waitFor(cond, "", ms).catch(() => {
      throw new Error(`timed out waiting for ${what()}; clients ${state()}`);
    });

  // Senders run a closed loop with a window of 8; each `sent` is recorded as acknowledged.
  const acked = new Map<string, { from: string; seq: number }>();
  let stop = false;
  let sent = 0;
  const loops = senders.map(async (c, i) => {
    const window = new Set<Promise<void>>();
    let n = 0;
    while (!stop) {
      const id = `s${i}-${n++}`;
      sent++;
      const p: Promise<void> = c.send("rcpt", `payload ${id}`, { id }).then(
        (r) => void acked.set(id, { from: c.account, seq: r.seq }),
        (e: Error) => {
          throw new Error(`send ${id} failed: ${e.message}`);
        },
      );
      window.add(p);
      void p.finally(() => window.delete(p));
      if (window.size >= 8) await Promise.race(window);
    }
    await Promise.all(window);
  });

  for (let k = 0; k < KILLS; k++) {
    // Each kill lands under load, so every client is back first. Without this wait a client whose reconnect
    // missed one short server lifetime backed off exponentially across the next kills (up to 30 s) and then
    // had too little time left to drain: the flaky "3184,11528 of 11528" on a loaded machine.
    await until(() => clients.every((c) => c.isReady), () => `every client to reconnect after restart ${k}`, 60_000);
    await Bun.sleep(150 + Math.floor(rand() * 600));
    await s.kill9();
    await s.restart(args);
  }
  await Bun.sleep(300);
  stop = true;
  await Promise.all(loops);
  expect(acked.size).toBe(sent); // every send ended acknowledged (the SDK resends across restarts)
  await until(() => got.every((g) => new Set(g.map((m) => m.id)).size >= acked.size), () => `every device to drain (${got.map((g) => g.length)} of ${acked.size})`, 60_000);

  const report = { seed, sent, acked: acked.size, delivered: got.map((g) => g.length), lost: 0, duplicates: 0 };
  for (const g of got) {
    const ids = g.map((m) => m.id);
    report.duplicates += ids.length - new Set(ids).size;
    const have = new Set(ids);
    for (const id of acked.keys()) if (!have.has(id)) report.lost++;
    // Order per conversation: sequence numbers only go up.
    const last = new Map<string, number>();
    for (const m of g) {
      expect(m.seq).toBeGreaterThan(last.get(m.conversation) ?? 0);
      last.set(m.conversation, m.seq);
    }
  }
  // No sequence number reused: within a conversation, one seq names one message.
  const bySeq = new Map<string, string>();
  for (const g of got) {
    for (const m of g) {
      const k = `${m.conversation}/${m.seq}`;
      const prev = bySeq.get(k);
      if (prev !== undefined) expect(prev).toBe(m.id);
      bySeq.set(k, m.id);
    }
  }
  console.log(`crash test: ${JSON.stringify(report)}`);
  expect(report.lost).toBe(0);
  expect(report.duplicates).toBe(0);
  for (const c of [...senders, ...recipients]) await c.close();
}
