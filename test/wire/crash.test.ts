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


test(`no acknowledged message is lost across ${KILLS} SIGKILLs under load`, async () => {
  const seed = Number(process.env.SB_CRASH_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  // Fixed ports, so that clients reconnect to the restarted server by themselves.
  const base = 20000 + Math.floor(rand() * 9000);
  const args = ["--tcp-port", String(base), "--http-port", String(base + 1), "--tls-port", "-1", "--queue-commit-ms", "5"];
  srv = await startServer({ args });
  const s = srv;

  const recipientKeys = [await s.newDevice("rcpt"), await s.newDevice("rcpt")];
  const senderKeys = await Promise.all(Array.from({ length: SENDERS }, (_, i) => s.newDevice(`sender${i}`)));
  const opts = { pingMs: 500 };
  const recipients: SwitchboardClient[] = [];
  // Per recipient device: what it was given, in order (after the SDK's dedup).
  const got: Message[][] = recipientKeys.map(() => []);
  for (const [i, kf] of recipientKeys.entries()) {
    const c = await s.client(kf, opts);
    c.on("message", (m) => got[i]!.push(m));
    recipients.push(c);
  }
  const senders = await Promise.all(senderKeys.map((kf) => s.client(kf, opts)));

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
    await Bun.sleep(150 + Math.floor(rand() * 600));
    await s.kill9();
    await s.restart(args);
  }
  await Bun.sleep(300);
  stop = true;
  await Promise.all(loops);
  expect(acked.size).toBe(sent); // every send ended acknowledged (the SDK resends across restarts)
  await waitFor(() => got.every((g) => new Set(g.map((m) => m.id)).size >= acked.size), `every device to drain (${got.map((g) => g.length)} of ${acked.size})`, 60_000);

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
}, 180_000);
