/**
 * The CLI keeps its device's resumption ticket across processes (KEY.ticket,
 * docs/PROTOCOL.md §4.11; src/client/ticket.ts TicketSlot): real CLI
 * subprocesses against a real server process, counted by the server's
 * switchboard_logins_total. A one-shot `send` after another resumes (no
 * Ed25519 login); a stored ticket that is garbage, or whose secret is wrong,
 * is dropped and the command logs in with the device key, showing nothing.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, type TestServer } from "../helpers/harness.ts";
import { Cli } from "./run.ts";

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

let srv: TestServer;
let cwd: string;
let cli: Cli;
const logins = async () => ({
  ok: await srv.metric("switchboard_logins_total", '{result="ok"}'),
  resumed: await srv.metric("switchboard_logins_total", '{result="resumed"}'),
  refused: await srv.metric("switchboard_logins_total", '{result="ticket_refused"}'),
});
const delta = (a: Awaited<ReturnType<typeof logins>>, b: Awaited<ReturnType<typeof logins>>) => ({ ok: b.ok - a.ok, resumed: b.resumed - a.resumed, refused: b.refused - a.refused });
/** One-shot `send` from alice: exit 0, nothing on stderr (Cli.ok), and how the server counted its login. */
async function send(text: string): Promise<ReturnType<typeof delta>> {
  const before = await logins();
  await cli.ok(["send", "--key", "alice.key", "--to", "bob", "--plain", text]);
  return delta(before, await logins());
}
const ticketFile = () => join(cwd, "alice.key.ticket");

beforeAll(async () => {
  srv = await startServer();
  cwd = mkdtempSync(join(tmpdir(), "sb-cli-ticket-"));
  cli = new Cli(cwd);
  for (const u of ["alice", "bob"]) await cli.ok(["device", "enroll", "--user", u, "--code", srv.addUser(u), "--key", `${u}.key`, "--port", String(srv.tcp)]);
});
afterAll(() => {
  srv?.cleanup();
  if (cwd) rmSync(cwd, { recursive: true, force: true });
});

describe("the CLI's stored resumption ticket", () => {
  test("two sends in a row: the first signs (no ticket stored), the second and third resume", async () => {
    rmSync(ticketFile(), { force: true });
    expect(await send("one")).toEqual({ ok: 1, resumed: 0, refused: 0 });
    expect(existsSync(ticketFile())).toBe(true);
    expect(statSync(ticketFile()).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(readFileSync(ticketFile(), "utf8"));
    expect(stored).toMatchObject({ v: 1, u: "alice", d: 1, server: `127.0.0.1:${srv.tcp}` });
    expect(stored.tks).toMatch(/^[0-9a-f]{64}$/);
    expect(await send("two")).toEqual({ ok: 0, resumed: 1, refused: 0 });
    // Each proof's ts is later than the one before, across processes too (the stored `last`).
    const last = JSON.parse(readFileSync(ticketFile(), "utf8")).last;
    expect(last).toBeGreaterThan(0);
    expect(await send("three")).toEqual({ ok: 0, resumed: 1, refused: 0 });
    expect(JSON.parse(readFileSync(ticketFile(), "utf8")).last).toBeGreaterThan(last);
  });

  test("a corrupted ticket file: ignored, the login signs with no message, and a good ticket replaces it", async () => {
    writeFileSync(ticketFile(), "{ not json \u0000\u00ff", { mode: 0o600 });
    expect(await send("after garbage")).toEqual({ ok: 1, resumed: 0, refused: 0 });
    expect(JSON.parse(readFileSync(ticketFile(), "utf8")).v).toBe(1);
    expect(await send("resumed again")).toEqual({ ok: 0, resumed: 1, refused: 0 });
  });

  test("a ticket whose secret is wrong: the server refuses it, the CLI signs on the same connection, shows nothing, stores the new ticket", async () => {
    const t = JSON.parse(readFileSync(ticketFile(), "utf8"));
    t.tks = (t.tks[0] === "0" ? "1" : "0") + t.tks.slice(1);
    writeFileSync(ticketFile(), JSON.stringify(t), { mode: 0o600 });
    expect(await send("after a bad secret")).toEqual({ ok: 1, resumed: 0, refused: 1 });
    expect(JSON.parse(readFileSync(ticketFile(), "utf8")).tks).not.toBe(t.tks);
    expect(await send("resumed once more")).toEqual({ ok: 0, resumed: 1, refused: 0 });
  });
});
