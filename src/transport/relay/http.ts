/**
 * The relay's HTTP side: GET /load (what the chat server sheds new calls by),
 * GET /metrics (Prometheus text), POST /revoke (the server's signed message
 * that a device is revoked: its allocations end before the answer is sent).
 */
import { CONTROL_SIGNATURE_HEADER, verifyControl } from "./auth.ts";
import type { TurnRelay } from "./server.ts";

export interface RelayLoad {
  /** Percent of capacity: the highest of pps over relay.capacity_pps, event-loop lag over relay.capacity_lag_ms and allocations over relay.max_allocations; at 100 new allocations are refused (508). */
  load: number;
  allocations: number;
  pps: number;
  lag_ms: number;
  max_allocations: number;
  shed: boolean;
}

/** The relay's event-loop lag (core's EventLoopMonitor, handed in by the CLI: transport imports no core). */
export interface LagView {
  recentMs: number;
}

export function relayLoad(relay: TurnRelay, lag: LagView): RelayLoad {
  // Allocations count at once (the relay's own sweep reads pps and lag once a second).
  const o = relay.opts;
  const load = Math.max(relay.load, o.maxAllocations > 0 ? Math.round((relay.allocationCount / o.maxAllocations) * 100) : 0);
  return { load, allocations: relay.allocationCount, pps: relay.ppsLastSecond, lag_ms: Math.round(lag.recentMs), max_allocations: relay.opts.maxAllocations, shed: relay.shed };
}

export function relayMetrics(relay: TurnRelay, lag: LagView): string {
  const c = relay.counters;
  const lines = [
    "# HELP switchboard_relay_allocations Allocations open now.",
    "# TYPE switchboard_relay_allocations gauge",
    `switchboard_relay_allocations ${relay.allocationCount}`,
    "# HELP switchboard_relay_allocations_total Allocations granted.",
    "# TYPE switchboard_relay_allocations_total counter",
    `switchboard_relay_allocations_total ${c.allocateOk}`,
    "# HELP switchboard_relay_refused_total Requests answered with a STUN error, by code (401 challenges not counted).",
    "# TYPE switchboard_relay_refused_total counter",
    ...[...c.refused].map(([code, n]) => `switchboard_relay_refused_total{code="${code}"} ${n}`),
    "# HELP switchboard_relay_packets_total Packets relayed, by direction (in: peer to client).",
    "# TYPE switchboard_relay_packets_total counter",
    `switchboard_relay_packets_total{dir="in"} ${c.packetsIn}`,
    `switchboard_relay_packets_total{dir="out"} ${c.packetsOut}`,
    "# HELP switchboard_relay_bytes_total Payload bytes relayed, by direction.",
    "# TYPE switchboard_relay_bytes_total counter",
    `switchboard_relay_bytes_total{dir="in"} ${c.bytesIn}`,
    `switchboard_relay_bytes_total{dir="out"} ${c.bytesOut}`,
    "# HELP switchboard_relay_dropped_total Packets dropped: no permission, or over the allocation's pps/bps cap.",
    "# TYPE switchboard_relay_dropped_total counter",
    `switchboard_relay_dropped_total ${c.dropped}`,
    "# HELP switchboard_relay_revoked_total Allocations ended by a device revocation.",
    "# TYPE switchboard_relay_revoked_total counter",
    `switchboard_relay_revoked_total ${c.revoked}`,
    "# HELP switchboard_relay_pps Packets relayed over the last second, both ways.",
    "# TYPE switchboard_relay_pps gauge",
    `switchboard_relay_pps ${relay.ppsLastSecond}`,
    "# HELP switchboard_relay_event_loop_lag_seconds Largest lateness of a 100 ms timer over the last second.",
    "# TYPE switchboard_relay_event_loop_lag_seconds gauge",
    `switchboard_relay_event_loop_lag_seconds ${lag.recentMs / 1000}`,
  ];
  return lines.join("\n") + "\n";
}

/** Serves the relay's HTTP port; `revokeMs`: how long a revoked device is refused new allocations (its credentials' longest TTL). */
export function serveRelayHttp(relay: TurnRelay, lag: LagView, host: string, port: number, revokeMs: number) {
  return Bun.serve({
    hostname: host,
    port,
    async fetch(req) {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === "/load") return Response.json(relayLoad(relay, lag));
      if (req.method === "GET" && url.pathname === "/metrics") return new Response(relayMetrics(relay, lag), { headers: { "content-type": "text/plain; version=0.0.4" } });
      if (req.method === "GET" && url.pathname === "/healthz") return new Response("ok\n");
      if (req.method === "POST" && url.pathname === "/revoke") {
        const body = await req.text();
        const m = verifyControl(relay.opts.secrets, body, req.headers.get(CONTROL_SIGNATURE_HEADER) ?? "", Date.now());
        if (!m) return new Response("bad signature or stale message\n", { status: 403 });
        return Response.json({ ended: relay.revoke(m.device, revokeMs) });
      }
      return new Response("not found\n", { status: 404 });
    },
  });
}
