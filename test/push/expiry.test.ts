/**
 * Jobs of devices that never return: a job expires a queue retention after
 * it opened (its items have expired by then), so nothing is left behind; if
 * messages that came later still wait, a fresh job opens and escalates from
 * its first stage again (a new key). Real server with a 4 s retention, a
 * real webhook gateway; no silent-push interval, so only expiry decides.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { offlineWebhookDevice, startGateway, webhookArgs, type Gateway } from "./gateway.ts";

let srv: TestServer | undefined;
let gw: Gateway | undefined;
afterAll(async () => {
  srv?.cleanup();
  await gw?.close();
});

test("a job expires with the retention; later messages re-open one, which pushes again; then nothing is left", async () => {
  gw = await startGateway();
  srv = await startServer({
    args: [...webhookArgs(gw.fake.url + "/hook", { "escalate-after": 3600, "silent-interval": 0 }), "--queue-retention", "4", "--queue-expire-every", "1"],
  });
  const s = srv;
  await offlineWebhookDevice(s, "gone", "gone-phone");
  const alice = await s.client(await s.newDevice("alice"));
  await alice.send("gone", "first");
  await waitFor(() => gw!.bodies.length === 1, "the first silent push");
  const first = gw.bodies[0]!.id;
  // Messages keep coming while the first job ages: they collapse into it, until it expires and a new one opens.
  let i = 0;
  await waitFor(async () => {
    await alice.send("gone", `later ${i++}`);
    return gw!.bodies.length >= 2;
  }, "a second push from a fresh job", 30_000);
  const second = gw.bodies[1]!;
  expect(second.urgency).toBe("silent"); // escalation starts over
  expect(second.id.split(".")[0]).not.toBe(first.split(".")[0]); // a new job, a new key
  expect(i).toBeGreaterThan(1);
  // No more messages: everything expires, and the last job with it.
  await waitFor(async () => (await s.metric("switchboard_push_jobs_open")) === 0, "no job left", 30_000);
  const pushes = gw.bodies.length;
  expect(pushes).toBeLessThanOrEqual(3); // one per job, at most one job per retention period of the sending
  await alice.close();
}, 60_000);
