/**
 * A capturing TCP proxy for the end-to-end proofs: on a free port, to the port
 * `upstream()` names when a connection opens (so it can be started before the
 * server it fronts), keeping every byte of each connection, per direction.
 */
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";

export interface Captured {
  dir: "in" | "out";
  chunks: Buffer[];
}

export async function capturingProxy(upstream: () => number): Promise<{ port: number; server: Server; streams: Captured[] }> {
  const streams: Captured[] = [];
  const server = createServer((client: Socket) => {
    const toServer: Captured = { dir: "in", chunks: [] };
    const toClient: Captured = { dir: "out", chunks: [] };
    streams.push(toServer, toClient);
    const up = netConnect(upstream(), "127.0.0.1");
    client.on("data", (d) => {
      toServer.chunks.push(Buffer.from(d));
      up.write(d);
    });
    up.on("data", (d) => {
      toClient.chunks.push(Buffer.from(d));
      client.write(d);
    });
    client.on("close", () => up.destroy());
    up.on("close", () => client.destroy());
    client.on("error", () => up.destroy());
    up.on("error", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { port: (server.address() as { port: number }).port, server, streams };
}
