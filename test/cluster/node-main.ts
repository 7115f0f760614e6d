/**
 * A cluster node for the process tests: the real RedisLink, LeaseManager and
 * ShardFence, and nothing else. It prints lease events as JSON lines and
 * answers JSON commands on stdin:
 *   {"cmd":"status"}                      → held shards, its view and node list
 *   {"cmd":"write","pairs":[[s,e],…]}     → for each: the local check holds(s,e), then (if it passed) a
 *                                           fenced write issuing the shard's next sequence number
 *   {"cmd":"force-write","pairs":[[s,e]…]}→ the fenced write without the local check (a stale owner racing)
 *
 * The fence file (--fence) holds the shard data these writes stand for: a
 * `seqs` table whose rows must never repeat a sequence number. The process
 * tests give every node the same file, as a moved or replicated shard file
 * would be; it is the only way a stale owner's write can reach the new
 * owner's data, and that is what the fence must refuse.
 */
import { parseArgs } from "node:util";
import { RedisLink } from "../../src/core/cluster/redis.ts";
import { LeaseManager } from "../../src/core/cluster/leases.ts";
import { ShardFence } from "../../src/core/cluster/fence.ts";

const { values: a } = parseArgs({
  options: {
    redis: { type: "string" },
    id: { type: "string" },
    addr: { type: "string", default: "127.0.0.1:1" },
    fence: { type: "string" },
    ttl: { type: "string", default: "2000" },
    shards: { type: "string", default: "4096" },
  },
});
if (!a.redis || !a.id || !a.fence) throw new Error("usage: node-main --redis URL --id ID --fence PATH [--ttl MS] [--shards N] [--addr H:P]");
const id = a.id;

const fence = new ShardFence(a.fence);
fence.db.exec("CREATE TABLE IF NOT EXISTS seqs (shard INTEGER NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL, node TEXT NOT NULL, PRIMARY KEY (shard, seq))");
const nextSeq = fence.db.query<{ n: number }, [number]>("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM seqs WHERE shard = ?");
const insertSeq = fence.db.query<unknown, [number, number, number, string]>("INSERT INTO seqs (shard, seq, epoch, node) VALUES (?, ?, ?, ?)");

const out = (o: object) => process.stdout.write(JSON.stringify(o) + "\n");

const link = new RedisLink(a.redis, { commandTimeoutMs: 500 });
const leases = new LeaseManager(link, {
  nodeId: id,
  address: a.addr!,
  ttlMs: Number(a.ttl),
  shardCount: Number(a.shards),
  fence,
  onEvent: (e) => out({ event: e.type, ...e }),
});
link.start();
leases.start();

function fencedWrite(pairs: [number, number][]) {
  return pairs.map(([s, e]) => {
    const r = fence.write(s, e, id, () => {
      const seq = nextSeq.get(s)!.n;
      insertSeq.run(s, seq, e, id);
      return seq;
    });
    return r.ok ? { s, e, fence: "ok", seq: r.value } : { s, e, fence: r.reason, current: r.current };
  });
}

function status() {
  const owners: Record<string, number> = {};
  let routed = 0;
  for (let s = 0; s < leases.shardCount; s++) {
    const r = leases.route(s);
    if (!r) continue;
    routed++;
    owners[r.node] = (owners[r.node] ?? 0) + 1;
  }
  return { event: "status", id, up: link.up, held: [...leases.heldShards()], owners, routed, nodes: [...leases.nodes().keys()].sort() };
}

let buf = "";
for await (const chunk of Bun.stdin.stream()) {
  buf += new TextDecoder().decode(chunk);
  let i;
  while ((i = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (!line.trim()) continue;
    const c = JSON.parse(line);
    if (c.cmd === "status") out({ ...status(), tag: c.tag });
    else if (c.cmd === "write") {
      const pairs = c.pairs as [number, number][];
      const local = pairs.filter(([s, e]) => leases.holds(s, e));
      const refused = pairs.filter(([s, e]) => !leases.holds(s, e)).map(([s, e]) => ({ s, e, local: false }));
      out({ event: "write", tag: c.tag, results: [...refused, ...fencedWrite(local).map((r) => ({ ...r, local: true }))] });
    } else if (c.cmd === "force-write") out({ event: "force-write", tag: c.tag, results: fencedWrite(c.pairs) });
  }
}
await leases.stop();
link.close();
fence.close();
