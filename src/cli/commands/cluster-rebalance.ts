/**
 * `switchboard cluster rebalance`: asks the running node (POST /cluster/rebalance on its loopback HTTP port) to move
 * the shards it holds whose placement (cluster.nodes) is another live node back to that node, the same way as
 * `cluster move` (docs/CLUSTER.md "Moving shards"). After a drained node is back, run it on every other node.
 */
import { CONFIG_FLAGS, defineCommand } from "../command.ts";
import { clusterPost } from "./cluster-move.ts";
import { out } from "../util.ts";

export default defineCommand({
  name: "cluster rebalance",
  section: "server",
  synopsis: "cluster rebalance [--config FILE] [--http-port N] [--json]",
  summary: `move the shards this node holds whose placement is another live node back to it
(after a drained node restarted: run it on every other node)`,
  usage: "switchboard cluster rebalance [--config FILE] [--http-port N] [--json]",
  flags: [...CONFIG_FLAGS, "--json"],
  async run({ flags, json }) {
    const r = (await clusterPost(flags, "cluster rebalance", "/cluster/rebalance")) as { moved: number; left: number };
    if (json) out(r);
    else console.log(`moved ${r.moved} shards to their placement; this node holds ${r.left}`);
    return 0;
  },
});
