/**
 * VoIP tokens are for calls only. A real server with APNs configured against
 * a local HTTP/2 stand-in; a copy of src/modules whose push module also
 * answers iq `push.ring.test` by calling `ctx.push.ring(u, d)`, the way the
 * calls module will. Proves: messages wake a device's regular token
 * (background, then alert), never its PushKit token, and a device with only
 * a PushKit token is not pushed for messages at all; a ring goes to the
 * PushKit token (push type voip), else to the regular endpoint as an
 * "incoming call" alert; a dead PushKit token is removed alone; push.clear
 * {voip} drops only it; a push.db of schema 1 with a VoIP row moves it to its
 * own slot.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { generateKeyPairSync } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { modulesWith } from "../helpers/modules-copy.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls } from "../../src/client/push.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { startApns, type Recorded } from "./fakes.ts";

const TOPIC = "org.example.chat";
const tmp = mkdtempSync(join(tmpdir(), "sb-voip-"));
const token = (c: string) => c.repeat(64);
const DEAD = token("d");
let apns: Awaited<ReturnType<typeof startApns>>;
let srv: TestServer;
let alice: SwitchboardClient;
let aliceKey: KeyFile;

/** What the calls module will do: the push module also answers iq `push.ring.test`. */
const RING = `[{ iq: "push.ring.test", handle: async (_conn, a) => ({ ok: true, r: await ctx.push.ring(a.u, a.d) }) }]`;

beforeAll(async () => {
  apns = await startApns((r) => (r.path.endsWith(DEAD) ? { status: 410, body: JSON.stringify({ reason: "Unregistered" }) } : { status: 200 }));
  writeFileSync(join(tmp, "AuthKey.p8"), generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string);
  writeFileSync(join(tmp, "ca.pem"), apns.ca);
  srv = await startServer({
    args: [
      "--modules-dir", modulesWith(tmp, "push", "test/push/voip.test.ts", RING), "--push-tick-ms", "50", "--push-escalate-after", "1",
      "--push-apns-team-id", "TEAM123456", "--push-apns-key-id", "KEY7654321", "--push-apns-key-file", join(tmp, "AuthKey.p8"),
      "--push-apns-topic", TOPIC, "--push-apns-url", apns.url, "--push-apns-ca-file", join(tmp, "ca.pem"),
    ],
  });
  aliceKey = await srv.newDevice("alice");
  alice = await srv.client(aliceKey);
});
afterAll(async () => {
  await alice?.close();
  srv?.cleanup();
  await apns?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const to = (t: string): Recorded[] => apns.requests.filter((r) => r.path === `/3/device/${t}`);
const ring = (u: string, d = 1) => alice.request("push.ring.test", { u, d });
const idle = () => waitFor(async () => (await srv.metric("switchboard_push_in_flight")) === 0, "no push in flight");

describe("VoIP tokens ring, messages wake the regular token", () => {
  test("a device with both: messages go to the regular token as background then alert; a ring to the PushKit token as voip", async () => {
    const c = await srv.client(await srv.newDevice("both"));
    const p = pushCalls(c);
    expect(await p.register({ p: "apns", token: token("a") })).toMatchObject({ p: "apns" });
    expect(await p.register({ p: "apns", token: token("b"), voip: true })).toMatchObject({ p: "apns", voip: true });
    expect(await p.info()).toMatchObject({ e: { p: "apns", token: token("a") }, voip: { p: "apns", token: token("b"), voip: true } });
    await c.close();
    for (let i = 0; i < 3; i++) await alice.send("both", `m${i}`);
    await waitFor(() => to(token("a")).length >= 2, "the silent and the visible push");
    await idle();
    expect(to(token("a")).map((r) => r.headers["apns-push-type"])).toEqual(["background", "alert"]);
    expect(to(token("b"))).toHaveLength(0);
    expect(await ring("both")).toEqual({ ok: true });
    const [r] = to(token("b"));
    expect(r!.headers["apns-push-type"]).toBe("voip");
    expect(r!.headers["apns-topic"]).toBe(`${TOPIC}.voip`);
    expect(to(token("a"))).toHaveLength(2);
  });

  test("a device with only a PushKit token gets no push for messages, and a ring", async () => {
    const c = await srv.client(await srv.newDevice("voiponly"));
    // The .voip topic names a PushKit token as the flag does.
    expect(await pushCalls(c).register({ p: "apns", token: token("c"), topic: `${TOPIC}.voip` })).toMatchObject({ voip: true });
    expect((await pushCalls(c).info()).e).toBeNull();
    await c.close();
    for (let i = 0; i < 3; i++) await alice.send("voiponly", `m${i}`);
    await alice.send("both", "a marker behind them"); // the both device's job is past its stages: nothing goes out for it
    await idle();
    expect(to(token("c"))).toHaveLength(0);
    expect(await srv.metric("switchboard_push_jobs_open")).toBe(1); // both's; none for voiponly
    expect(await ring("voiponly")).toEqual({ ok: true });
    expect(to(token("c")).map((r) => r.headers["apns-push-type"])).toEqual(["voip"]);
  });

  test("a ring to a device without a PushKit token is a visible alert; without any endpoint it says so", async () => {
    const c = await srv.client(await srv.newDevice("plain"));
    await pushCalls(c).register({ p: "apns", token: token("e") });
    const before = to(token("e")).length;
    expect(await ring("plain")).toEqual({ ok: true });
    const r = to(token("e"))[before]!;
    expect(r.headers["apns-push-type"]).toBe("alert");
    expect(r.headers["apns-expiration"]).toBe("0");
    expect(JSON.parse(r.body.toString()).aps.alert).toEqual({ "loc-key": "SB_INCOMING_CALL" });
    expect(await ring("alice")).toEqual({ ok: false, reason: "no-endpoint" });
    await c.close();
  });

  test("a dead PushKit token is removed alone; push.clear {voip} drops only the PushKit token", async () => {
    const c = await srv.client(await srv.newDevice("dead"));
    const p = pushCalls(c);
    await p.register({ p: "apns", token: token("f") });
    await p.register({ p: "apns", token: DEAD, voip: true });
    expect(await ring("dead")).toEqual({ ok: false, reason: "invalid-token" });
    expect(await p.info()).toEqual({ e: { p: "apns", token: token("f") }, providers: ["apns"] });
    await p.register({ p: "apns", token: token("9"), voip: true });
    expect(await p.unregister({ voip: true })).toEqual({ removed: true });
    expect(await p.info()).toEqual({ e: { p: "apns", token: token("f") }, providers: ["apns"] });
    await c.close();
  });

  test("push.db at schema 1 with a VoIP token in the only slot: the restart moves it to the VoIP slot", async () => {
    const c = await srv.client(await srv.newDevice("old"));
    await pushCalls(c).register({ p: "apns", token: token("7"), voip: true });
    await c.close();
    expect(await srv.stop()).toBe(0);
    // Back to what 1cd25cd wrote: one table, the VoIP token in it.
    const db = new Database(join(srv.dataDir, "push.db"));
    db.exec("DROP TABLE voip; PRAGMA user_version = 1");
    db.run("INSERT INTO endpoints (account, device, p, token, topic, voip, registered_at) VALUES ('old', 1, 'apns', ?, '', 1, 5)", [token("7")]);
    db.close();
    await srv.restart();
    await alice.close();
    alice = await srv.client(aliceKey);
    for (let i = 0; i < 2; i++) await alice.send("old", `m${i}`);
    await idle();
    expect(to(token("7"))).toHaveLength(0); // not woken as a VoIP push any more
    expect(await ring("old")).toEqual({ ok: true });
    expect(to(token("7")).map((r) => r.headers["apns-push-type"])).toEqual(["voip"]);
  });
});
