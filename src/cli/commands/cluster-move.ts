/**
 * `switchboard cluster move SHARD NODE`: asks the running node that holds a home shard (POST /cluster/move on
 * its loopback HTTP port) to move it to another node: its sends and logins get retry_after meanwhile, its rows
 * go to NODE over the node link, the lease flips at a new epoch, and its devices are redirected there
 * (docs/CLUSTER.md "Moving a shard"). SHARD is a number (0..4095) or an account name (its home shard).
 */
import { shardOf } from "../../core/cluster/shards.ts";
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { httpBase } from "../../ops/trace-cli.ts";
import { out } from "../util.ts";

/** POST to a cluster node's loopback HTTP port (`cluster move`, `cluster rebalance`): its JSON answer (200, or 409: refused). */
export async function clusterPost(flags: Record<string, string>, cmd: string, path: string, which = "it runs with"): Promise<unknown> {
  const url = `${httpBase(flags, cmd)}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { method: "POST" });
  } catch (e) {
    throw new Error(`cannot reach the server at ${url}: ${(e as Error).message}\n  is it running? Pass the --config, or --http-port, ${which}`);
  }
  const body = await res.text();
  if (res.status === 404) throw new Error(`the server at ${url} is not a cluster node (cluster.redis is not set)`);
  if (res.status !== 200 && res.status !== 409) throw new Error(`the server answered ${res.status} at ${url}: ${body.trim()}`);
  return JSON.parse(body);
}

export default defineCommand({
  name: "cluster move",
  section: "server",
  synopsis: "cluster move SHARD NODE [--config FILE] [--http-port N] [--json]",
  summary: `move a home shard (a number, or an account name for its shard) from the node
that holds it (the one --config / --http-port names) to NODE: rows shipped, lease flipped, devices redirected`,
  usage: "switchboard cluster move SHARD NODE [--config FILE] [--http-port N] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  args: [2, 2],
  async run({ flags, rest, json }) {
    const [what, node] = [rest[0]!, rest[1]!];
    const shard = /^\d+$/.test(what) ? Number(what) : shardOf(what);
    const r = (await clusterPost(flags, "cluster move", `/cluster/move?shard=${shard}&to=${encodeURIComponent(node)}`, "of the node that holds the shard")) as { ok: true; epoch: number; accounts: number; items: number } | { ok: false; reason: string; message: string };
    if (json) out({ shard, to: node, ...r });
    else if (r.ok) console.log(`shard ${shard} moved to ${node} at epoch ${r.epoch}: ${r.accounts} accounts, ${r.items} queued items`);
    else console.error(`shard ${shard} not moved (${r.reason}): ${r.message}`);
    return r.ok ? 0 : 1;
  },
});
