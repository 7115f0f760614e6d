/**
 * Inbound backpressure over WebSocket, asserted (docs/WEBSOCKET.md "Not done yet" item 5): the server is made
 * slow deterministically, not by load. A test module's iq `keys.hold` blocks the server's event loop until the
 * test creates a file (it writes "entered" first, so the test knows the loop is held); meanwhile a WS client
 * writes N pings, which wait in the kernel. Once released, the server reads them in one go, far over one turn's
 * budget and over BACKLOG_PAUSE, so it must stop reading that socket (`ws.pause()`, counted in
 * switchboard_inbound_paused_total) and read it again once half is handled (switchboard_inbound_resumed_total).
 * Nothing is lost: every pong, in order; a ping written after them is read, so the socket is not left paused.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { modulesWith } from "../helpers/modules-copy.ts";
import { BACKLOG_PAUSE, TURN_MIN } from "../../src/transport/listener.ts";
import { rawLogin } from "../wire/util.ts";

setDefaultTimeout(120_000); // bounds on waiting for a subprocess, not timing assertions

const tmp = mkdtempSync(join(tmpdir(), "sb-wsbp-"));
let srv: TestServer;

/** The keys module also answers iq `keys.hold {dir}`: it holds the event loop (Atomics.wait) until <dir>/release exists. */
const GATE = `[{ iq: "keys.hold", handle: (_conn, a) => {
  const fs = require("node:fs");
  fs.writeFileSync(a.dir + "/entered", "");
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!fs.existsSync(a.dir + "/release")) Atomics.wait(cell, 0, 0, 5);
  return { ok: true, r: {} };
} }]`;

beforeAll(async () => {
  srv = await startServer({ args: ["--modules-dir", modulesWith(tmp, "keys", "test/ws/backpressure.test.ts", GATE)] });
});
afterAll(() => {
  srv?.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

test("a server held while a WS client writes: the socket is paused, resumed, and every ping is answered in order", async () => {
  // Far more than one read can hold back from the pause: the first read alone is over budget + BACKLOG_PAUSE.
  const N = 8 * (BACKLOG_PAUSE + 128 + TURN_MIN);
  const holder = await rawLogin(srv, await srv.newDevice("bpholder"));
  const w = await rawLogin(srv, await srv.newDevice("bpwriter"), "ws");
  const before = { paused: await srv.metric("switchboard_inbound_paused_total"), resumed: await srv.metric("switchboard_inbound_resumed_total") };
  const gate = mkdtempSync(join(tmp, "gate-"));
  holder.send({ t: "iq", id: 7, op: "keys.hold", a: { dir: gate } });
  await waitFor(() => existsSync(join(gate, "entered")), "the server holding its event loop in keys.hold");
  // All N are written into the socket before the server can read one: each is a whole WS message.
  for (let i = 1; i <= N; i++) w.send({ t: "ping", n: i });
  writeFileSync(join(gate, "release"), "");
  await holder.expect((s) => s.t === "res" && (s as { id?: number }).id === 7);
  await waitFor(() => w.received.filter((s) => s.t === "pong").length >= N || w.closed, `${N} pongs`, 60_000);
  expect(w.closed).toBe(false);
  expect(w.received.filter((s) => s.t === "pong").map((s) => (s as { n?: number }).n)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
  const paused = (await srv.metric("switchboard_inbound_paused_total")) - before.paused;
  const resumed = (await srv.metric("switchboard_inbound_resumed_total")) - before.resumed;
  expect(paused).toBeGreaterThanOrEqual(1);
  expect(resumed).toBe(paused); // every pause ended: the backlog is gone
  expect(await srv.metric("switchboard_inbound_held")).toBe(0);
  // Read again after the burst: a ping written now is answered.
  w.send({ t: "ping", n: N + 1 });
  expect((await w.expect((s) => s.t === "pong" && (s as { n?: number }).n === N + 1)).t).toBe("pong");
  holder.end();
  w.end();
});
