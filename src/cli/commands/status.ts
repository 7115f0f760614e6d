/**
 * `switchboard status`: what the running server says of itself (GET
 * /admin/status): version, uptime, connections by transport, sessions,
 * queue depth and oldest item, commit latency, canary, storage, cluster
 * role. Exit 1 when something needs the operator (a store file that cannot
 * commit, a failing canary), so a script can check it.
 */
import { defineCommand } from "../command.ts";
import { ADMIN_FLAGS, ADMIN_NOTES, adminCall } from "../admin.ts";
import type { Status } from "../../core/admin.ts";
import { localTime, out } from "../util.ts";

function duration(s: number): string {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} days`;
}

export function formatStatus(st: Status): string[] {
  const lines = [`switchboard ${st.version}, pid ${st.pid}, up ${duration(st.uptime_s)} (since ${localTime(st.started)})`];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(12)} ${v}`);
  row("connections", `tcp ${st.connections.tcp}, tls ${st.connections.tls}`);
  row("sessions", String(st.sessions));
  row("queue", `${st.queue.depth} items${st.queue.oldest_age_s === null ? "" : `, oldest ${duration(Math.round(st.queue.oldest_age_s))} old`}`);
  row("commit", st.commit.count === 0 ? "no commits yet" : `p50 ${st.commit.p50_ms} ms, p99 ${st.commit.p99_ms} ms (${st.commit.count} commits)`);
  if (st.canary === "off") row("canary", "off (canary.interval = 0)");
  else {
    const c = (st.canary as { canary?: { last_ok_age_s?: number | null; last_rtt_ms?: number | null; error?: string } }).canary ?? {};
    const detail = c.last_ok_age_s == null ? "no round trip yet" : `last round trip ${c.last_ok_age_s} s ago${c.last_rtt_ms == null ? "" : `, ${c.last_rtt_ms} ms`}`;
    row("canary", st.canary.ok ? `ok (${detail})` : `FAILING: ${String((st.canary as { reason?: string }).reason)} (${detail}${c.error ? `; ${c.error}` : ""})`);
  }
  if (st.storage.ok) row("storage", "ok");
  for (const f of st.storage.faults) row("storage", `FAULT ${f.cause} on ${f.file} since ${localTime(f.since)}: new sends are refused, retried every second`);
  const c = st.cluster;
  row("cluster", c.role === "single" ? "single" : `node ${c.node} of ${c.nodes}, holding ${c.held} shards, redis ${c.redis_up ? "up" : "DOWN"}`);
  row("modules", st.modules.map((m) => `${m.name} ${m.version}`).join(", ") || "none");
  return lines;
}

export default defineCommand({
  name: "status",
  section: "admin",
  synopsis: "status [--json]",
  summary: "the running server: version, uptime, connections, sessions, queue, commit\nlatency, canary, storage, cluster role (exit 1 if storage or canary fail)",
  usage: "switchboard status [--config FILE | --http-port N] [--json]",
  flags: ADMIN_FLAGS,
  notes: ADMIN_NOTES,
  async run({ flags, json }) {
    const { status, body } = await adminCall(flags, "GET", "/admin/status", "status");
    if (status !== 200) throw new Error(`the server answered ${status}: ${body.message ?? JSON.stringify(body)}`);
    const st = body as unknown as Status;
    if (json) out(st);
    else console.log(formatStatus(st).join("\n"));
    return st.storage.ok && (st.canary === "off" || st.canary.ok) ? 0 : 1;
  },
});
