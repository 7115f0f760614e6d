/**
 * The inbound pacing's budget is per event-loop turn (src/transport/listener.ts, `used`): a light load, a few
 * stanzas per poll, is never held, however many stanzas it sends in all. The count is reset by a turn; with the turn
 * queued only when the budget ran out, the count summed every poll since, so every `budget` (128) stanzas the rest
 * of one poll's reads waited a turn: 3.5 % of the stanzas at `pairs --pairs 500 --rate 11000` with the server 40 %
 * busy (BENCHMARKS.md "commitw").
 *
 * Now the turn is queued when half the budget is used (one setImmediate per 64 stanzas at the default 128, not one
 * per poll: test/transport/flush-hold.test.ts counts them), so a poll that reads fewer than half a budget after it
 * is never held. A real server in this process; three connections each send one ping per round and wait for the
 * three pongs, so a poll has at most three stanzas. 300 rounds: 900 stanzas, seven times the budget. Counted, not
 * timed; with the turn queued at the budget's end 7 were held (one per 128, checked by mutation).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/core/config.ts";
import { SwitchboardServer } from "../../src/core/server.ts";
import { DEFAULT_MODULES } from "../../src/modules/index.ts";
import { RawConn } from "../helpers/harness.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-pacing-poll-"));
let server: SwitchboardServer | undefined;
afterAll(async () => {
  await server?.stop({ graceMs: 500 }).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

test("a few stanzas per poll are never held, over many times the turn budget", async () => {
  const config = loadConfig({
    env: {},
    flags: { "--data-dir": dir, "--tcp-port": "0", "--tls-port": "-1", "--http-port": "-1", "--canary-interval": "0", "--log-level": "warn" },
  });
  server = new SwitchboardServer(config);
  for (const m of DEFAULT_MODULES) server.load(m);
  const { tcp } = await server.listen();
  const metric = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(server!.metrics.render())![1]);
  expect(metric("switchboard_inbound_turn_budget")).toBe(128);
  const conns = await Promise.all([1, 2, 3].map(async () => {
    const c = await RawConn.open(tcp!);
    await c.hello();
    return c;
  }));
  const before = metric("switchboard_inbound_held_total");
  const ROUNDS = 300;
  for (let n = 1; n <= ROUNDS; n++) {
    for (const c of conns) c.send({ t: "ping", n });
    await Promise.all(conns.map((c) => c.expect((s) => s.t === "pong" && (s as { n?: number }).n === n)));
  }
  expect(metric("switchboard_inbound_held_total") - before).toBe(0);
  for (const c of conns) c.end();
}, 60_000);
