/** The cluster.* settings' checks of config.ts (kept here: config.ts holds the one SETTINGS table and its reader). */
import type { Value } from "../config.ts";
import { parseNodes } from "./shards.ts";

/** cluster.*: consistent only as a whole (a node id that is in the node list, a host:port advertise). */
export function clusterSettingErrors(values: Record<string, Value>, sources: Record<string, string>): string[] {
  const redis = values["cluster.redis"] as string;
  const id = values["cluster.node_id"] as string;
  const nodes = parseNodes(values["cluster.nodes"] as string);
  const adv = values["cluster.advertise"] as string;
  const set = ["cluster.node_id", "cluster.nodes", "cluster.advertise"].filter((k) => values[k] !== ""); // `config --check` output writes them empty
  if (!redis) return set.length ? [`config: ${set.join(", ")} set (from ${sources[set[0]!]}) but cluster.redis is not; set cluster.redis to run as a cluster node, or leave them all unset`] : [];
  const errs: string[] = [];
  if (!/^rediss?:\/\//.test(redis)) errs.push(`config: cluster.redis (from ${sources["cluster.redis"]}) must be a redis:// URL, got ${JSON.stringify(redis)}`);
  if (!/^[A-Za-z0-9_.-]+$/.test(id)) errs.push(`config: cluster.node_id (from ${sources["cluster.node_id"]}) must be set with cluster.redis, using letters, digits, - _ . (got ${JSON.stringify(id)})`);
  else if (!nodes.includes(id)) errs.push(`config: cluster.node_id ${JSON.stringify(id)} is not in cluster.nodes (${nodes.length ? nodes.join(",") : "empty"}, from ${sources["cluster.nodes"]}); list every node id of the cluster there`);
  if (adv && !/^[^:\s]+:\d{1,5}$/.test(adv)) errs.push(`config: cluster.advertise (from ${sources["cluster.advertise"]}) must be host:port, got ${JSON.stringify(adv)}`);
  const advWs = values["cluster.advertise_ws"] as string;
  if (advWs && !/^wss?:\/\/[^\s]+$/.test(advWs)) errs.push(`config: cluster.advertise_ws (from ${sources["cluster.advertise_ws"]}) must be a ws:// or wss:// URL, got ${JSON.stringify(advWs)}`);
  const host = values["tcp.host"] as string;
  if (!adv && ["0.0.0.0", "::", ""].includes(host)) errs.push(`config: cluster.advertise must be set when tcp.host (from ${sources["tcp.host"]}) is the wildcard ${JSON.stringify(host)}: redirected clients need this node's host:port as they reach it`);
  return errs;
}
