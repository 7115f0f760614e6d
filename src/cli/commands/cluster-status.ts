/**
 * `switchboard cluster status`: what GET /cluster of a running node says —
 * its Redis link, its view of who holds the 4096 home shards, per configured
 * node whether it is up, its address, shards and how stale its leases look
 * from here, what its link holds in memory here (items and bytes not on disk, from send to ack: bounded by
 * cluster.link_held_items/_bytes, past which sends towards it are refused) and its link lag (batches this node
 * sent it that it has not acknowledged durable yet), the moves not over (shard, target, state, since when), and the redirects this
 * node answered (logins of accounts homed elsewhere) per second over the last minute. Exit 1 when a configured node is down or a shard has no live
 * owner (sends to it get retry_after), so scripts can wait on it.
 */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Assignment, parseNodes, shardOf } from "../../core/cluster/shards.ts";
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { httpBase } from "../../ops/trace-cli.ts";
import { out } from "../util.ts";

/**
 * The node of `nodes` (cluster.nodes) that is the account's home: the placement the servers use, unless a move
 * took its shard elsewhere, as the node whose data dir is `dataDir` last learned (its cluster.db, homes.ts).
 */
export function homeNodeOf(account: string, nodes: string, dataDir?: string): string {
  const shard = shardOf(account);
  const path = dataDir === undefined ? null : join(dataDir, "cluster.db");
  if (path !== null && existsSync(path)) {
    const db = new Database(path, { readonly: true });
    try {
      const moved = db.query<{ node: string }, [number]>("SELECT node FROM shard_home WHERE shard = ?").get(shard);
      if (moved) return moved.node;
    } catch {
      // no shard_home table: nothing ever moved here
    } finally {
      db.close();
    }
  }
  return new Assignment(parseNodes(nodes)).ownerOf(shard)!;
}

interface NodeRow { id: string; up: boolean; address: string | null; shards: number; liveShards: number; oldestLeaseSeenMs: number; linkLag: number; linkHeld: { items: number; bytes: number } | null }
interface Move { shard: number; target: string; since: number; state: string }
interface Status {
  node: string; redis: { url: string; up: boolean }; viewAgeMs: number | null; leaseTtlMs: number;
  held: number; heldEpochs: { min: number; max: number } | null; unowned: number; nodes: NodeRow[]; moves?: Move[];
  redirects: { total: number; lastWindow: number; perSecond: number; windowS: number };
}

/** Bytes as KiB with one decimal (what a link holds: up to cluster.link_held_bytes, 32 MiB by default). */
const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

export default defineCommand({
  name: "cluster status",
  section: "server",
  synopsis: "cluster status [--config FILE] [--http-port N] [--json]",
  summary: `a cluster node's view (GET /cluster): Redis, the nodes of cluster.nodes with their
addresses, shards, lease ages, link held and lag, epochs held here, moves
not over, redirects/s;
exit 1 if a node is down or a shard unowned`,
  usage: "switchboard cluster status [--config FILE] [--http-port N] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  async run({ flags, json }) {
    const url = `${httpBase(flags, "cluster status")}/cluster`;
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new Error(`cannot reach the server at ${url}: ${(e as Error).message}\n  is it running? Pass the --config, or --http-port, it runs with`);
    }
    const body = await res.text();
    if (res.status === 404) throw new Error(`the server at ${url} is not a cluster node (cluster.redis is not set)`);
    if (!res.ok) throw new Error(`the server answered ${res.status} at ${url}: ${body.trim()}`);
    const st = JSON.parse(body) as Status;
    const healthy = st.unowned === 0 && st.nodes.every((n) => n.up);
    if (json) {
      out(st);
      return healthy ? 0 : 1;
    }
    const view = st.viewAgeMs === null ? "never read" : `read ${st.viewAgeMs} ms ago`;
    console.log(`node ${st.node}   redis ${st.redis.url} ${st.redis.up ? "up" : "DOWN"}   view ${view}   lease ttl ${st.leaseTtlMs} ms`);
    const epochs = st.heldEpochs ? `, epochs ${st.heldEpochs.min}..${st.heldEpochs.max}` : "";
    console.log(`holds ${st.held} shards here${epochs}; ${st.unowned} of 4096 with no live owner${st.unowned ? " (sends to them get retry_after)" : ""}`);
    const r = st.redirects;
    console.log(`redirects ${r.perSecond}/s over the last ${r.windowS} s (${r.lastWindow}), ${r.total} since this node started`);
    const w = Math.max(4, ...st.nodes.map((n) => n.id.length));
    console.log(`${"node".padEnd(w)}  state  ${"address".padEnd(21)}  shards  live  oldest lease seen  ${"link held".padStart(17)}  link lag`);
    for (const n of st.nodes) {
      const self = n.id === st.node; // to itself there is no link
      const lag = self ? "-" : String(n.linkLag ?? 0);
      const h = n.linkHeld ?? { items: 0, bytes: 0 };
      const held = self ? "-" : `${h.items} (${kib(h.bytes)})`;
      console.log(`${n.id.padEnd(w)}  ${(n.up ? "up" : "DOWN").padEnd(5)}  ${(n.address ?? "-").padEnd(21)}  ${String(n.shards).padStart(6)}  ${String(n.liveShards).padStart(4)}  ${`${n.oldestLeaseSeenMs} ms ago`.padEnd(17)}  ${held.padStart(17)}  ${lag.padStart(8)}`);
    }
    const moves = st.moves ?? [];
    if (moves.length === 0) console.log("moves: none pending");
    for (const m of moves) console.log(`moving shard ${m.shard} to ${m.target}: ${m.state}${m.since > 0 ? `, since ${new Date(m.since).toISOString()} (${Math.round((Date.now() - m.since) / 1000)} s)` : ""}`);
    return healthy ? 0 : 1;
  },
});
