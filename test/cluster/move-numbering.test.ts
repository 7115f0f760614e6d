/**
 * A conversation's numbering node does not number it while the shard that numbers it is frozen for a move
 * (docs/CLUSTER.md "One numbering node per conversation"; issue 12, the seq 513 seen twice in add-node.test).
 * 3 real `switchboard serve` processes and a private redis-server. The conversation of r (lower name, home n2:
 * numbered there) and s (home n1, which asks n2 for each number). s uses up n2's first block of numbers, then r's
 * shard moves from n2 to n3 while n3 is stopped (SIGSTOP), so the move stays between its snapshot, which ships the
 * conversation's bound (one block), and its flip; s (a raw connection, so the test sees every answer) sends x during
 * that time. Before the fix n2 answered x's number request, reserving a new block after the snapshot: x got 257 from
 * n2, and the next send, y, 257 again from n3, which continued above the shipped bound (checked by mutation). Now n2
 * refuses the number while frozen (retry_after), x is sent again after the move, and n3 numbers x and y above
 * everything n2 issued.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { expect, test } from "bun:test";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { SEQ_BLOCK, SeqAllocator } from "../../src/core/seq.ts";
import { RawConn, waitFor, type TestServer } from "../helpers/harness.ts";
import { accountOn, threeNodes } from "./three-nodes.ts";

// Long enough that n3, stopped for the few seconds of the freeze, keeps its heartbeat and leases.
const TTL = 10_000;
const { nodes, device, connect } = threeNodes(TTL);

/** The bound n2 has reserved for the conversation, read from its accounts.db (a second reader of the WAL file). */
function boundAt(n: TestServer, conv: string): number {
  const db = new Database(join(n.dataDir, "accounts.db"), { readonly: true });
  try {
    return (db.query<{ hi: number }, [string]>("SELECT hi FROM seqs WHERE conv = ?").get(conv)?.hi ?? 0);
  } finally {
    db.close();
  }
}

type Answer = { t: string; id?: string; e?: string; seq?: number; m?: string; x?: { retry_ms?: number } };

/** One `msg` of s's raw connection to r's device: sent again after each retry_after until its `sent`; its seq. */
async function sendUntilSent(c: RawConn, id: string, to: string, device: number): Promise<number> {
  for (;;) {
    c.send({ t: "msg", id, to, p: [[device, new TextEncoder().encode(id)]] });
    const a = (await c.expect((x) => (x.t === "sent" || x.t === "err") && (x as Answer).id === id, 60_000)) as Answer;
    if (a.t === "sent") return a.seq!;
    if (a.e !== "retry_after") throw new Error(`send ${id} refused: ${JSON.stringify(a)}`);
    await Bun.sleep(a.x?.retry_ms ?? 100);
  }
}

test("no number is issued twice when the numbering shard moves while a remote sender sends", async () => {
  const [n1, n2, n3] = [nodes.get("n1")!, nodes.get("n2")!, nodes.get("n3")!];
  const r = accountOn("n2", "mr_"), s = accountOn("n1", "ms_");
  expect(r < s).toBe(true); // r's home numbers the conversation
  const conv = SeqAllocator.conv(r, s);
  const [kr, ks] = [await device(r), await device(s)];
  const closes: string[] = [];
  await connect(kr, "n2", (c) => c.on("close", (i) => void closes.push(String(i.reason))));
  // s is a raw connection: the test sees each answer, the number's refusal among them.
  const cs = await n1.raw();
  await cs.login(ks);
  const seqs: number[] = [];
  for (let k = 0; k < SEQ_BLOCK; k++) seqs.push(await sendUntilSent(cs, `m${k}`, r, kr.device));
  // n2's first block is used up: the next number it issues reserves the next block.
  expect(seqs).toEqual(Array.from({ length: SEQ_BLOCK }, (_, k) => k + 1));
  expect(boundAt(n2, conv)).toBe(SEQ_BLOCK);

  n3.proc.kill("SIGSTOP");
  let move: Promise<{ ok: boolean; reason?: string }> | undefined;
  let refused = false;
  try {
    move = fetch(`http://127.0.0.1:${n2.http}/cluster/move?shard=${shardOf(r)}&to=n3`, { method: "POST" }).then((a) => a.json() as Promise<{ ok: boolean; reason?: string }>);
    // The freeze closes r's session in the same turn as the snapshot is taken: from here the bound is shipped.
    await waitFor(() => closes.length > 0, "r's device closed by the freeze", 30_000);
    // Until n2 answers a number request for x: refused, or (before the fix) numbered from a block reserved now,
    // after the snapshot. Other refusals (r's directory entry asked again after its session closed) are resent.
    const x = () => cs.send({ t: "msg", id: "x", to: r, p: [[kr.device, new TextEncoder().encode("x")]] });
    x();
    for (const end = Date.now() + 60_000; boundAt(n2, conv) === SEQ_BLOCK; ) {
      if (Date.now() > end) throw new Error("n2 answered no number request for x within 60 s");
      const a = (await cs.expect((z) => z.t === "err" && (z as Answer).id === "x", 50).catch(() => null)) as Answer | null;
      if (a === null) continue;
      if (a.m?.includes("did not give a number")) {
        refused = true;
        break;
      }
      await Bun.sleep(a.x?.retry_ms ?? 100);
      x();
    }
    console.log(refused ? "n2 refused x's number while frozen" : "n2 numbered x while frozen");
  } finally {
    n3.proc.kill("SIGCONT");
  }
  expect(await move).toMatchObject({ ok: true });
  // Refused: sent again now. Numbered: accepted at n1, its `sent` follows the flip; a resend would be answered with
  // it, but the number asked for the resend would be reused (and dropped) unseen.
  seqs.push(refused ? await sendUntilSent(cs, "x", r, kr.device) : ((await cs.expect((a) => a.t === "sent" && (a as Answer).id === "x", 60_000)) as Answer).seq!);
  seqs.push(await sendUntilSent(cs, "y", r, kr.device));
  const reused = seqs.flatMap((q, k) => (k > 0 && q <= seqs[k - 1]! ? [`send ${k - 1} got ${seqs[k - 1]}, send ${k} got ${q}`] : []));
  expect(reused).toEqual([]);
  expect(seqs.at(-1)).toBeGreaterThan(SEQ_BLOCK + 1);
  cs.end();
}, 180_000);
