/**
 * A ring to a device that is not connected: the server sends it a ring push
 * (ctx.push.ring, here through a signed-webhook gateway), content-free; the
 * device connects while the call still rings, gets the offer then, answers,
 * and the caller has the answer.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { callControl } from "../../src/client/calls.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import type { CallSignal } from "../../src/client/types.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { offlineWebhookDevice, startGateway, webhookArgs, type Gateway } from "../push/gateway.ts";

let srv: TestServer;
let gw: Gateway;
const clients: SwitchboardClient[] = [];

beforeAll(async () => {
  gw = await startGateway();
  srv = await startServer({ args: webhookArgs(`${gw.fake.url}/hook`) });
});
afterAll(async () => {
  for (const c of clients) c.close();
  srv?.cleanup();
  await gw?.close();
});

test("an offline callee gets a ring push, then the offer when it connects, and its answer reaches the caller", async () => {
  const carolKey = await offlineWebhookDevice(srv, "carol", "carol-token");
  const aliceSignals: CallSignal[] = [];
  const alice = await srv.client(await srv.newDevice("alice"), { setup: (c) => c.on("call", (s) => aliceSignals.push(s)) });
  clients.push(alice);
  const secret = new Uint8Array([0xc0, 0xff, 0xee, 0x11, 0x22, 0x33]);
  const id = await callControl(alice).call("carol", () => secret);
  await waitFor(() => gw.to("carol-token").some((b) => b.urgency === "ring"), "a ring push for carol's device");
  const raw = gw.raw.find((r) => r.includes("carol-token"))!;
  expect(raw.includes("alice")).toBe(false); // content-free: not even who calls
  expect(raw.includes(Buffer.from(secret).toString("base64"))).toBe(false);
  const carolSignals: CallSignal[] = [];
  const carol = await srv.client(carolKey, { setup: (c) => c.on("call", (s) => carolSignals.push(s)) });
  clients.push(carol);
  await waitFor(() => carolSignals.some((s) => s.kind === "offer" && s.id === id), "the offer after the wake-up");
  const offer = carolSignals.find((s) => s.kind === "offer")!;
  expect(offer.payload).toEqual(secret);
  callControl(carol).answer(offer, new Uint8Array([1]));
  await waitFor(() => aliceSignals.some((s) => s.kind === "answer" && s.id === id), "the answer at the caller");
  expect(await srv.metric("switchboard_call_ring_pushes_total", '{r="sent"}')).toBe(1);
});
