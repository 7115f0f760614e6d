/**
 * A push gateway that accepts connections and never answers does not block
 * or slow delivery: while the server's push requests to it hang (in flight,
 * each up to push.timeout_ms), two online devices exchange 400 messages and
 * every one arrives, and an offline device's queue drains at its login.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls } from "../../src/client/push.ts";
import { startHanging } from "./fakes.ts";
import { webhookArgs } from "./gateway.ts";

let srv: TestServer | undefined;
let hang: Awaited<ReturnType<typeof startHanging>> | undefined;
afterAll(async () => {
  srv?.cleanup();
  await hang?.close();
});

test("a hanging gateway holds push slots, never a delivery", async () => {
  hang = await startHanging();
  srv = await startServer({ args: webhookArgs(`http://127.0.0.1:${hang.port}/hook`, { "timeout-ms": 60_000 }) });
  const s = srv;
  const names = Array.from({ length: 20 }, (_, i) => `off${i}`);
  const keys = [];
  for (const n of names) {
    const kf = await s.newDevice(n);
    const c = await s.client(kf);
    await pushCalls(c).register({ p: "webhook", token: `t-${n}` });
    await c.close();
    keys.push(kf);
  }
  const a = await s.client(await s.newDevice("ann"));
  let got = 0;
  const b = await s.client(await s.newDevice("ben"), { setup: (c) => c.on("message", () => got++) });
  await Promise.all(names.map((n) => a.send(n, "wake up")));
  await waitFor(async () => (await s.metric("switchboard_push_in_flight")) === names.length && hang!.accepted >= 1, "every push hanging at the gateway");
  await Promise.all(Array.from({ length: 400 }, (_, i) => a.send("ben", `m${i}`)));
  await waitFor(() => got === 400, "ben has all 400");
  expect(await s.metric("switchboard_push_in_flight")).toBe(names.length); // still hanging: delivery went on beside them
  let drained = 0;
  const off = await s.client(keys[0]!, { setup: (c) => c.on("message", () => drained++) });
  await waitFor(() => drained === 1, "an offline device drains its queue at login");
  for (const c of [a, b, off]) await c.close();
}, 60_000);
