/**
 * `switchboard call` from two processes, as a person would from two
 * terminals: one rings, the other answers, and a UDP echo goes both ways
 * through `switchboard relay` on TURN credentials from the server.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeKeyFile } from "../../src/client/keys.ts";
import { BUN, MAIN, startServer, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";
import { ROOT, startRelay, type RelayProcess } from "./relay-process.ts";

const SECRET = "cli-call-secret";
let srv: TestServer;
let relay: RelayProcess;
const dir = mkdtempSync(join(tmpdir(), "sb-call-"));
const procs: LineProcess[] = [];

beforeAll(async () => {
  relay = await startRelay(SECRET);
  srv = await startServer({ args: ["--calls-secret", SECRET, "--calls-turn-urls", `turn:127.0.0.1:${relay.udp}?transport=udp`] });
});
afterAll(() => {
  for (const p of procs) p.kill();
  srv?.cleanup();
  relay?.proc.kill();
  rmSync(dir, { recursive: true, force: true });
});

const cli = (args: string[]) => {
  const p = new LineProcess([BUN, MAIN, "call", "--port", String(srv.tcp), ...args], { cwd: ROOT, env: CLEAN_ENV });
  procs.push(p);
  return p;
};

for (const sealed of [true, false]) test(`switchboard call --to rings, switchboard call --answer takes it, 20 packets echo through the relay (${sealed ? "sealed payloads" : "--plain"})`, async () => {
  const tag = sealed ? "s" : "p";
  const a = join(dir, `alice${tag}.key`);
  const b = join(dir, `bob${tag}.key`);
  writeKeyFile(a, await srv.newDevice(`alice${tag}`));
  writeKeyFile(b, await srv.newDevice(`bob${tag}`));
  const plain = sealed ? [] : ["--plain"];
  const callee = cli(["--key", b, "--answer", ...plain]);
  expect((await callee.event("waiting")).sealed).toBe(sealed);
  const caller = cli(["--key", a, "--to", `bob${tag}`, "--count", "20", ...plain]);
  const ringing = await callee.event("ringing");
  expect(ringing.from).toBe(`alice${tag}`);
  const echo = await caller.event("echo");
  expect({ sent: echo.sent, received: echo.received }).toEqual({ sent: 20, received: 20 });
  expect(await caller.proc.exited).toBe(0);
  const hung = await callee.event("hangup");
  expect(hung.echoed).toBe(20);
  expect(await callee.proc.exited).toBe(0);
  expect(await relay.metric('switchboard_relay_packets_total{dir="out"}')).toBeGreaterThanOrEqual(40);
});
