/**
 * A message to a 1 024-member group wakes each offline member device at most
 * once (one job per device, whatever the number of messages), and online
 * members not at all. Most members have no device: they cost the fan-out
 * nothing and must not cost a push either.
 */
import { afterAll, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { pushCalls } from "../../src/client/push.ts";
import type { SwitchboardClient } from "../../src/client/client.ts";
import { startGateway, webhookArgs, type Gateway } from "./gateway.ts";

const MEMBERS = 1024;
const OFFLINE = 48;
const ONLINE = 6;
let srv: TestServer | undefined;
let gw: Gateway | undefined;
const online: SwitchboardClient[] = [];
afterAll(async () => {
  for (const c of online) await c.close();
  srv?.cleanup();
  await gw?.close();
});

test(`three messages to a ${MEMBERS}-member group: one push per offline member device, none for online ones`, async () => {
  gw = await startGateway();
  srv = await startServer({ args: webhookArgs(gw.fake.url + "/hook", { "escalate-after": 3600 }) });
  const s = srv;
  const names = Array.from({ length: MEMBERS - 1 }, (_, i) => `m${i}`);
  // Members without devices: accounts only, written before they are needed (the server reads accounts.db on demand).
  const store = new SqliteAccountStore(s.dataDir);
  for (const n of names.slice(OFFLINE + ONLINE)) store.createAccount(n, 3600);
  store.close();
  for (const [i, name] of names.slice(0, OFFLINE + ONLINE).entries()) {
    const c = await s.client(await s.newDevice(name));
    await pushCalls(c).register({ p: "webhook", token: `tok-${name}` });
    if (i < OFFLINE) await c.close();
    else online.push(c);
  }
  const owner = await s.client(await s.newDevice("owner"));
  const { g } = await owner.createGroup("big", names.slice(0, 255));
  for (let i = 255; i < names.length; i += 256) await owner.addMembers(g, names.slice(i, i + 256));
  expect((await owner.groupInfo(g)).members.length).toBe(MEMBERS);
  for (let i = 0; i < 3; i++) await owner.sendGroup(g, `group secret ${i}`);
  await waitFor(() => gw!.bodies.length >= OFFLINE, `${OFFLINE} pushes`);
  await waitFor(async () => (await s.metric("switchboard_push_in_flight")) === 0, "no push in flight");
  expect(await s.metric("switchboard_push_jobs_open")).toBe(OFFLINE);
  const perToken = new Map<string, number>();
  for (const b of gw.bodies) perToken.set(b.token, (perToken.get(b.token) ?? 0) + 1);
  expect([...perToken.keys()].sort()).toEqual(names.slice(0, OFFLINE).map((n) => `tok-${n}`).sort());
  expect([...perToken.values()].every((n) => n === 1)).toBe(true);
  for (const text of gw.raw) expect(text).not.toContain(g.slice(1));
  await owner.close();
}, 180_000);
