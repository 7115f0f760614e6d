/**
 * Inbound pacing adapts its budget to the listener's own work, not to the gap between turns (nextBudget,
 * src/transport/listener.ts). On a core shared with other processes that gap is mostly waiting for the CPU, and
 * halving on it kept an under-busy server at TURN_MIN with nearly every stanza held (BENCHMARKS.md "paced2").
 *
 * A real server in this process, and something else on its event loop: a chain of setImmediate callbacks that
 * each keep the thread for HOG_MS, so every gap from one pacing turn to the next is longer than turnMs
 * (--queue-commit-ms 400: turnMs 100 ms, HOG_MS 150) while the listener's own work per turn (at most TURN_MAX
 * pings, about 10 µs each here, so ~10 ms) stays far under it. A burst of pings in one write: the budget must
 * grow past its start (128). Halving on the gap keeps it at or under 128 (checked by mutation). The durations
 * only set the scene with a 10× margin either way; what is asserted is the budget, a count.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeFrame } from "../../src/protocol/codec.ts";
import { loadConfig } from "../../src/core/config.ts";
import { SwitchboardServer } from "../../src/core/server.ts";
import { DEFAULT_MODULES } from "../../src/modules/index.ts";
import { nextBudget, TURN_MAX, TURN_MIN } from "../../src/transport/listener.ts";
import { RawConn, waitFor } from "../helpers/harness.ts";
import { concatFrames, writeAll } from "../wire/util.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-pacing-work-"));
let server: SwitchboardServer | undefined;
let hogging = false;
afterAll(async () => {
  hogging = false;
  await server?.stop({ graceMs: 500 }).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

test("nextBudget: halved past turnMs down to TURN_MIN, else raised by TURN_MIN up to TURN_MAX", () => {
  expect(nextBudget(128, 1.3, 1.25)).toBe(64);
  expect(nextBudget(TURN_MIN, 9, 1.25)).toBe(TURN_MIN);
  expect(nextBudget(128, 1.25, 1.25)).toBe(128 + TURN_MIN);
  expect(nextBudget(TURN_MAX, 0, 1.25)).toBe(TURN_MAX);
});

test("a long gap between turns that is not the listener's work does not shrink the budget", async () => {
  const HOG_MS = 150;
  const config = loadConfig({
    env: {},
    flags: {
      "--data-dir": dir, "--tcp-port": "0", "--tls-port": "-1", "--http-port": "-1", "--canary-interval": "0", "--log-level": "warn",
      "--queue-commit-ms": "400",
    },
  });
  server = new SwitchboardServer(config);
  for (const m of DEFAULT_MODULES) server.load(m);
  const { tcp } = await server.listen();
  const budget = (): number => Number(/^switchboard_inbound_turn_budget (\d+)$/m.exec(server!.metrics.render())![1]);
  expect(budget()).toBe(128);

  const c = await RawConn.open(tcp!);
  await c.hello();
  const n = 3000;
  const burst = concatFrames(Array.from({ length: n }, (_, i) => encodeFrame({ t: "ping", n: i + 1 })));

  let highest = 0;
  let hogs = 0;
  hogging = true;
  const hog = (): void => {
    if (!hogging) return;
    const until = performance.now() + HOG_MS;
    while (performance.now() < until); // the thread kept from the listener, as another process on the core would
    highest = Math.max(highest, budget());
    hogs++;
    setImmediate(hog);
  };
  setImmediate(hog);
  try {
    await writeAll(c, burst);
    const pongs = (): number => c.received.filter((s) => s.t === "pong").length;
    // 30 hogs: as many turns (one of each per loop iteration), where 4 grow the budget by 4 TURN_MIN.
    await waitFor(() => highest >= 128 + 4 * TURN_MIN || pongs() === n || hogs >= 30, "the budget grown, 30 hogs, or every pong", 100_000);
  } finally {
    hogging = false;
  }
  console.log(`highest turn budget seen with a ${HOG_MS} ms hog between turns: ${highest} (${hogs} hogs)`);
  expect(highest).toBeGreaterThanOrEqual(128 + 4 * TURN_MIN);
  c.end();
}, 120_000);
