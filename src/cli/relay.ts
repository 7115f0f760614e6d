/** `switchboard relay`: a TURN relay (src/transport/relay/) until SIGINT or SIGTERM. */
import { configFrom, resolveSettings } from "../core/config.ts";
import { log } from "../core/log.ts";
import { parseSecrets } from "../protocol/turn-rest.ts";
import { EventLoopMonitor } from "../core/metrics.ts";
import { serveRelayHttp } from "../transport/relay/http.ts";
import { TurnRelay } from "../transport/relay/server.ts";

export async function relay(flags: Record<string, string>): Promise<void> {
  const config = configFrom(resolveSettings({ flags }));
  const r = config.relay;
  const secrets = parseSecrets(config.calls.secret);
  if (!secrets.length) throw new Error("relay: calls.secret is empty; give the chat server's TURN secret (--calls-secret, SWITCHBOARD_CALLS_SECRET or [calls] secret)");
  if (r.minPort > r.maxPort) throw new Error(`relay: relay.min_port (${r.minPort}) is above relay.max_port (${r.maxPort})`);
  const lag = new EventLoopMonitor(null);
  lag.start();
  const turn = new TurnRelay({
    host: r.host, port: r.port, publicIp: r.publicIp, realm: r.realm, secrets, minPort: r.minPort, maxPort: r.maxPort,
    defaultLifetime: r.defaultLifetime, maxLifetime: r.maxLifetime, pps: r.pps, bps: r.bps, perDevice: r.perDevice,
    maxAllocations: r.maxAllocations, capacityPps: r.capacityPps, capacityLagMs: r.capacityLagMs, allowLoopback: r.allowLoopback,
  }, lag);
  try {
    await turn.start();
  } catch (e) {
    throw new Error(`relay: cannot listen on udp ${r.host}:${r.port}: ${(e as Error).message}; choose another with --relay-port`);
  }
  const http = r.httpPort >= 0 ? serveRelayHttp(turn, lag, r.httpHost, r.httpPort, config.calls.ttl * 1000) : null;
  console.log(JSON.stringify({ event: "listening", udp: turn.port, http: http?.port ?? null, pid: process.pid }));
  const stop = (signal: string) => {
    log.info("relay stopping", { signal });
    lag.stop();
    void http?.stop(true);
    turn.stop();
    process.exit(0);
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}
