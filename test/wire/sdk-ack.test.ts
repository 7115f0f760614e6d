/**
 * The SDK with autoAck: false: a delivery the application has not
 * acknowledged is emitted again after a reconnect (at least once), and one
 * it has acknowledged is not (the SDK's dedup takes over only then).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { Message } from "../../src/client/client.ts";
import { dec } from "./util.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer();
});
afterAll(() => srv?.cleanup());

// Over WS as over TCP: the SDK's reconnect (wire-ws.ts) after a dropped connection, and the redelivery.
for (const transport of ["tcp", "ws"] as const) test(`autoAck: false: unacknowledged deliveries come again after a reconnect; acknowledged ones do not (${transport})`, async () => {
  const A = `acka-${transport}`;
  const B = `ackb-${transport}`;
  const a = await srv.client(await srv.newDevice(A));
  const got: Message[] = [];
  let readies = 0;
  const b = await srv.client(await srv.newDevice(B), {
    transport,
    autoAck: false,
    setup: (c) => {
      c.on("message", (m) => got.push(m));
      c.on("ready", () => readies++);
    },
  });
  await a.send(B, "one");
  await a.send(B, "two");
  await waitFor(() => got.length === 2, "two messages");
  const acked = await srv.metric("switchboard_deliveries_acked_total");
  b.ack(got[0]!.q); // the application handled "one" only
  await waitFor(async () => (await srv.metric("switchboard_deliveries_acked_total")) >= acked + 1, "the ack to reach the server");
  b.dropConnection();
  await waitFor(() => readies === 2, "the reconnect");
  await waitFor(() => got.length === 3, "the redelivery");
  await a.send(B, "three"); // a barrier of sorts: it arrives after whatever the server redelivers
  await waitFor(() => got.some((m) => dec(m.payload) === "three"), "the third message");
  expect(got.map((m) => dec(m.payload))).toEqual(["one", "two", "two", "three"]);
  await a.close();
  await b.close();
});
