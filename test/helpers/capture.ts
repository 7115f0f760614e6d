/**
 * A capturing TCP proxy for the end-to-end proofs: on a free port, to the port
 * `upstream()` names when a connection opens (so it can be started before the
 * server it fronts), keeping every byte of each connection, per direction.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { join } from "node:path";

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

/** Every file under `dir`, whole (SQLite databases with their WAL and shm files, blobs, certificates). */
export function filesUnder(dir: string): { path: string; bytes: Buffer }[] {
  const out: { path: string; bytes: Buffer }[] = [];
  const walk = (p: string) => {
    for (const name of readdirSync(p)) {
      const f = join(p, name);
      if (statSync(f).isDirectory()) walk(f);
      else out.push({ path: f, bytes: readFileSync(f) });
    }
  };
  walk(dir);
  return out;
}
