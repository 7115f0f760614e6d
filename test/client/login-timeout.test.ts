/**
 * A login whose path dies after the server's hello: the SDK gives up on
 * that connection and reconnects. Before, only the hello was bounded: the
 * auth went out, nothing came back (no ready, no RST), and the session
 * waited until TCP gave up on the auth's retransmits (about 15 minutes),
 * the device away all that time. Real server, real sockets; between them a
 * TCP relay that, on its first connection, passes the hello each way and
 * then nothing more (the path that died).
 */
import { afterAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { SwitchboardClient } from "../../src/client/client.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";

let srv: TestServer | undefined;
let relay: { stop(): void } | undefined;
afterAll(() => {
  relay?.stop();
  srv?.cleanup();
});

interface Pipe {
  n: number;
  up: Socket<undefined> | null;
  held: Uint8Array[];
  /** Chunks passed client -> server and server -> client (the dead path passes one each way: the hellos). */
  toServer: number;
  toClient: number;
}

test("no ready after the hello: the connection is cut after helloTimeoutMs and the session logs in on a new one", async () => {
  srv = await startServer();
  const s = srv;
  const kf = await s.newDevice("dora");
  let connections = 0;
  const dead = (p: Pipe) => p.n === 1;
  const listener = Bun.listen<Pipe>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      async open(down) {
        const p: Pipe = { n: ++connections, up: null, held: [], toServer: 0, toClient: 0 };
        down.data = p;
        p.up = await Bun.connect({
          hostname: "127.0.0.1",
          port: s.tcp,
          socket: {
            data(_u, chunk) {
              if (dead(p) && p.toClient >= 1) return; // the server's answers to the auth never arrive
              p.toClient++;
              down.write(chunk);
            },
            close() {
              if (!dead(p)) down.end();
            },
            error() {},
          },
        });
        for (const c of p.held.splice(0)) p.up.write(c);
      },
      data(down, chunk) {
        const p = down.data;
        if (dead(p) && p.toServer >= 1) return; // nor does the auth reach the server
        p.toServer++;
        if (p.up) p.up.write(chunk);
        else p.held.push(chunk);
      },
      close(down) {
        if (!dead(down.data)) down.data.up?.end();
      },
      error() {},
    },
  });
  relay = listener;
  const closes: string[] = [];
  const c = new SwitchboardClient({ host: "127.0.0.1", port: listener.port, key: kf, tickets: false, helloTimeoutMs: 500 });
  c.on("close", (i) => void closes.push(i.reason));
  let ready = false;
  void c.connect().then(() => (ready = true));
  // The bound on this wait is the test's, not the SDK's: without the login bound the session never gets here.
  await waitFor(() => ready, "the session ready over a second connection", 20_000);
  expect(connections).toBe(2);
  expect(closes).toHaveLength(1); // the dead attempt, cut by the SDK
  const r = await c.request("devices", { u: "dora" }).catch((e: Error) => e);
  expect(r).not.toBeInstanceOf(Error);
  await c.close();
}, 60_000);
