/**
 * One sequence per 1:1 conversation across nodes: 3 real `switchboard serve`
 * processes and a private redis-server; every pair here has its two ends
 * homed on different nodes. The conversation is numbered on one node, the
 * home of its lower account name (docs/CLUSTER.md, "One numbering node").
 * Proves, over real sockets and node links:
 * - both directions sending at once: no number is issued twice in the
 *   conversation, each sender's numbers increase, each copy arrives with the
 *   number its `sent` named, and a reply always numbers above the message it
 *   answers (one order for both directions) — with the lower name on the
 *   sender's node and on the recipient's;
 * - `read` receipts cross nodes both ways (reader on the numbering node, and
 *   reader on the other node, which takes markers only up to what it saw);
 * - kill -9 of the numbering home with both directions in flight, and of the
 *   other home: every send ends `sent`, no number is reused, everything
 *   numbered after a restart is above everything acknowledged before it, and
 *   a `read` on the restarted non-numbering home still reaches the sender.
 * Randomized burst sizes: the seed is printed on failure.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { Message, Receipt, Sent } from "../../src/client/types.ts";
import { waitFor } from "../helpers/harness.ts";
import { prng } from "../helpers/prng.ts";

const TTL = 4000;
const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);

const { nodes, clients, device } = threeNodes(TTL, ["--presence-stranger-receipts", "100000"]);

/** One end of a conversation: its client (configured with `via`, redirected to the home) and what it saw. */
interface End {
  account: string;
  c: SwitchboardClient;
  got: Message[];
  reads: Receipt[];
  sent: Sent[];
  /** Logins completed (the SDK's `ready`), to know a reconnect is done. */
  readies: number;
}
async function end(account: string, via: string): Promise<End> {
  const key = await device(account);
  const e: End = { account, c: undefined as unknown as SwitchboardClient, got: [], reads: [], sent: [], readies: 0 };
  e.c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(via)!.tcp, key });
  clients.push(e.c);
  e.c.on("message", (m: Message) => void e.got.push(m));
  e.c.on("ready", () => void e.readies++);
  e.c.on("receipt", (r: Receipt) => void (r.kind === "read" && e.reads.push(r)));
  await e.c.connect();
  return e;
}
const text = (p: Uint8Array) => new TextDecoder().decode(p);
function send(from: End, to: End, body: string): Promise<Sent> {
  return from.c.send(to.account, body).then((s) => {
    from.sent.push(s);
    return s;
  });
}

/** Each direction delivered whole and in send order (a resend accepted anew may add a second copy: dropped by id). */
function checkOrder(e: End, prefix: string, n: number): void {
  const ids = new Set<string>();
  const bodies = e.got.filter((m) => !ids.has(m.id) && ids.add(m.id)).map((m) => text(m.payload));
  expect(bodies).toEqual(Array.from({ length: n }, (_, k) => `${prefix}${k}`));
}

/**
 * No number twice in the conversation of `a` and `b` (sent and received), and each copy carries its sent's number,
 * but for a message in flight at a kill -9 of its sender's node (`ackedAtKill` has the ids acknowledged before it):
 * when that node died after the recipient's home had made the copies durable and before its own record, the SDK's
 * resend is numbered anew there while the home keeps the first copy (docs/CLUSTER.md "What remains" item 1: "A
 * sender's node killed after the home made the copies durable..."), so its sent's number differs from the copy's.
 * Seen in about one run in ten. Both numbers stay unique in the conversation (checked below and above).
 */
function checkNumbers(a: End, b: End, ackedAtKill?: Set<string>): void {
  const all = [...a.sent, ...b.sent].map((s) => s.seq);
  expect(new Set(all).size).toBe(all.length);
  for (const [from, to] of [[a, b], [b, a]] as const) {
    const bySent = new Map(from.sent.map((s) => [s.id, s.seq]));
    for (const m of to.got) {
      if (!bySent.has(m.id) || m.seq === bySent.get(m.id)) continue;
      if (ackedAtKill && !ackedAtKill.has(m.id)) {
        // The first number: no other message of the conversation was acknowledged with it.
        expect(all.includes(m.seq)).toBe(false);
        continue;
      }
      expect(m.seq).toBe(bySent.get(m.id)!);
    }
    // A resend accepted anew after a crash is a second copy with its own, fresh number (§6.4): never one reused.
    const seen = new Map<number, string>();
    for (const m of to.got) {
      const other = seen.get(m.seq);
      if (other !== undefined) expect(other).toBe(m.id);
      seen.set(m.seq, m.id);
    }
  }
}

describe(`one numbering node per conversation (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  test("both directions at once, lower name on either node: no number twice, one order, read receipts both ways", async () => {
    // "la_…" < "lb_…": numbered on n1, the first sender's home; "mb_…" > "ma_…": numbered on n3, the recipient's.
    const pairs = [[accountOn("n1", "la_"), accountOn("n2", "lb_")], [accountOn("n2", "mb_"), accountOn("n3", "ma_")]];
    const N = 20;
    for (const [x, y] of pairs) {
      const [a, b] = [await end(x!, homeOf(x!)), await end(y!, homeOf(y!))];
      const sends: Promise<Sent>[] = [];
      for (let k = 0; k < N; k++) sends.push(send(a, b, `a${k}`), send(b, a, `b${k}`));
      await Promise.all(sends);
      await waitFor(() => a.got.length >= N && b.got.length >= N, `${N} messages each way between ${x} and ${y}`, 60_000);
      expect(b.got.map((m) => text(m.payload))).toEqual(Array.from({ length: N }, (_, k) => `a${k}`));
      expect(a.got.map((m) => text(m.payload))).toEqual(Array.from({ length: N }, (_, k) => `b${k}`));
      for (const e of [a, b]) for (let k = 1; k < N; k++) expect(e.sent[k]!.seq).toBeGreaterThan(e.sent[k - 1]!.seq);
      checkNumbers(a, b);
      // Ping-pong: each reply, sent after its prompt arrived, is numbered above it (one sequence, in acceptance order).
      let last = Math.max(...[...a.sent, ...b.sent].map((s) => s.seq));
      for (let r = 0; r < 5; r++) {
        for (const [from, to] of [[a, b], [b, a]] as const) {
          const n = to.got.length;
          const s = await send(from, to, `p${r}`);
          expect(s.seq).toBeGreaterThan(last);
          last = s.seq;
          await waitFor(() => to.got.length > n, `ping-pong ${r} to ${to.account}`, 30_000);
          expect(to.got.at(-1)!.seq).toBe(s.seq);
        }
      }
      checkNumbers(a, b);
      // Read receipts across the nodes, both ways: up to the last message each received.
      for (const [reader, peer] of [[b, a], [a, b]] as const) {
        const upTo = reader.got.at(-1)!.seq;
        reader.c.markRead(peer.account, upTo);
        await waitFor(() => peer.reads.some((r) => r.account === reader.account && r.seq === upTo), `read ${upTo} from ${reader.account} at ${peer.account}`, 30_000);
        expect(peer.reads.filter((r) => r.account === reader.account).map((r) => [r.with, r.seq])).toEqual([[reader.account, upTo]]);
      }
      // A marker above anything sent in the conversation names nothing: no receipt (a ping-pong round after it proves the wait).
      b.c.markRead(a.account, last + 1000);
      const n = b.got.length;
      await send(a, b, "after");
      await waitFor(() => b.got.length > n, "the message after the bogus marker", 30_000);
      await send(b, a, "after").then(() => waitFor(() => a.got.some((m) => text(m.payload) === "after"), "b's message after the bogus marker", 30_000));
      expect(a.reads.filter((r) => r.seq > last)).toEqual([]);
    }
  }, 180_000);

  test("kill -9 of the numbering home with both directions in flight, then of the other home: no number reused, order kept, reads still cross", async () => {
    const rand = prng(SEED);
    // "ka_…" < "kb_…": numbered on n1, a's home. Both configured with n3's address: they follow redirects to the homes.
    const [a, b] = [await end(accountOn("n1", "ka_"), "n3"), await end(accountOn("n2", "kb_"), "n3")];
    const all: Promise<Sent>[] = [];
    let k = 0;
    const burst = (n: number) => {
      const ps: Promise<Sent>[] = [];
      for (let j = 0; j < n; j++, k++) ps.push(send(a, b, `a${k}`), send(b, a, `b${k}`));
      all.push(...ps);
      return ps;
    };
    for (let r = 0; r < 3; r++) await Promise.all(burst(3 + Math.floor(rand() * 10)));
    const acked = a.sent.length + b.sent.length;
    burst(3 + Math.floor(rand() * 10));
    await waitFor(() => a.sent.length + b.sent.length > acked, "a send of the last burst acknowledged");
    const n1 = nodes.get("n1")!;
    await n1.kill9();
    const beforeKill = Math.max(...[...a.sent, ...b.sent].map((s) => s.seq));
    const sentAtKill = new Set([...a.sent, ...b.sent].map((s) => s.seq));
    const ackedAtKill = new Set([...a.sent, ...b.sent].map((s) => s.id));
    burst(3 + Math.floor(rand() * 10)); // b's get retry_after while the numbering node is down; a's wait for its home
    // b's node asked the dead n1 for numbers: its link to n1 lags (unacknowledged batches, retried), as /metrics says.
    const lag = () => nodes.get("n2")!.metric("switchboard_cluster_link_lag_batches", '{peer="n1"}');
    await waitFor(async () => (await lag()) > 0, "n2's link to the dead n1 lagging in /metrics");
    await n1.restart();
    await Promise.all(all);
    // Everything numbered after the restart is above everything acknowledged before the kill.
    for (const s of [...a.sent, ...b.sent]) if (!sentAtKill.has(s.seq)) expect(s.seq).toBeGreaterThan(beforeKill);
    await waitFor(() => a.got.length >= k && b.got.length >= k, `${k} messages each way after the restart (have ${a.got.length}, ${b.got.length})`, 60_000);
    checkNumbers(a, b, ackedAtKill);
    checkOrder(a, "b", k);
    checkOrder(b, "a", k);
    await waitFor(async () => (await lag()) === 0, "n2's link to n1 caught up after the restart", 30_000);

    // The other home (n2, b's) killed and restarted: it takes markers up to what it saw before (persisted a block
    // above the numbers it observed), with no new message since. Without that the marker is ignored (latest = 0).
    const n2 = nodes.get("n2")!;
    const readies = b.readies;
    await n2.kill9();
    await n2.restart();
    await waitFor(() => b.readies > readies, `${b.account} logged in again on n2`, 60_000);
    const upTo = b.got.at(-1)!.seq;
    b.c.markRead(a.account, upTo);
    await waitFor(() => a.reads.some((r) => r.account === b.account && r.seq === upTo), `read ${upTo} from ${b.account} after n2's restart`, 30_000);
    const top = Math.max(...[...a.sent, ...b.sent].map((s) => s.seq));
    const more = burst(3);
    await Promise.all(more);
    await waitFor(() => b.got.length >= k && a.got.length >= k, "the messages after n2's restart", 60_000);
    checkNumbers(a, b, ackedAtKill);
    checkOrder(a, "b", k);
    checkOrder(b, "a", k);
    for (const s of await Promise.all(more)) expect(s.seq).toBeGreaterThan(top);
  }, 240_000);
});
