/**
 * Paced traffic (issue 20 target 2): one frame per read, and each read's end flushes what it wrote (FlushBatch.hold,
 * src/transport/listener.ts). Nothing else should be scheduled for it: before the hold, every read that wrote also
 * scheduled a setImmediate that then found nothing to flush, about two per message. A real server in this process
 * (so the test can count the process's setImmediate calls; the SDK schedules none) and two SDK clients over TCP,
 * one message at a time, each waiting for its receipt. Counts only, no time.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Counted from before the server's modules load: the flush batch takes setImmediate when it is made.
let immediates = 0;
const realImmediate = globalThis.setImmediate;
globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => {
  immediates++;
  return realImmediate(fn, ...args);
}) as typeof setImmediate;

const { loadConfig } = await import("../../src/core/config.ts");
const { SwitchboardServer } = await import("../../src/core/server.ts");
const { DEFAULT_MODULES } = await import("../../src/modules/index.ts");
const { SwitchboardClient } = await import("../../src/client/client.ts");
const { enrollIn } = await import("../helpers/in-process.ts");
const { waitFor } = await import("../helpers/harness.ts");
const { collect } = await import("../wire/util.ts");

const dir = mkdtempSync(join(tmpdir(), "sb-flush-hold-"));
type Server = InstanceType<typeof SwitchboardServer>;
type Client = InstanceType<typeof SwitchboardClient>;
let server: Server | undefined;
const clients: Client[] = [];

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await server?.stop({ graceMs: 500 }).catch(() => {});
  globalThis.setImmediate = realImmediate;
  rmSync(dir, { recursive: true, force: true });
});

test("a paced message schedules no flush callback: each read's end flushes what it wrote", async () => {
  const config = loadConfig({
    env: {},
    flags: {
      "--data-dir": dir, "--tcp-port": "0", "--tls-port": "-1", "--http-port": "-1", "--canary-interval": "0", "--log-level": "warn",
      "--queue-commit-ms": "1000", // acks before the commit: the sent rides on the receipt, nothing goes out from a timer
    },
  });
  server = new SwitchboardServer(config);
  for (const m of DEFAULT_MODULES) server.load(m);
  const { tcp } = await server.listen();
  const [ka, kb] = [await enrollIn(server, tcp!, "alice"), await enrollIn(server, tcp!, "bob")];
  const alice = new SwitchboardClient({ host: "127.0.0.1", port: tcp!, key: ka });
  const bob = new SwitchboardClient({ host: "127.0.0.1", port: tcp!, key: kb });
  clients.push(alice, bob);
  const a = collect(alice);
  const b = collect(bob);
  await alice.connect();
  await bob.connect();
  await bob.send("alice", "hello"); // bob wrote to alice: her receipts are not a stranger's (§6.11)
  await alice.send("bob", "warm-up"); // device lists cached
  await waitFor(() => a.receipts.length === 1 && b.receipts.length === 1, "the warm-up's receipts");

  const n = 40;
  immediates = 0;
  for (let i = 1; i <= n; i++) {
    await alice.send("bob", `m${i}`);
    await waitFor(() => a.receipts.length === 1 + i, `the receipt of m${i}`);
  }
  const counted = immediates;
  expect(b.messages.length).toBe(1 + n);
  console.log(`setImmediate calls for ${n} paced messages: ${counted}`);
  // Three reads per message at the server (the msg, bob's ack, alice's ack of the receipt), two of which write.
  // Without the hold that was about 2 n callbacks; what may remain is not per message (a sweep, a stray turn).
  expect(counted).toBeLessThan(n / 4);
});
