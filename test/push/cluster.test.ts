/**
 * Push in cluster mode: 3 real `switchboard serve` processes, a private
 * redis-server and one local webhook gateway (every node configured with
 * it). A device's queue, and so its push job, lives on its home node; a
 * message from a device on another node is forwarded to that home over the
 * link, queued there, and the wake-up goes out from there: exactly one per
 * offline device, however many senders on however many nodes, none from the
 * senders' nodes, none for a device that is connected, and no content.
 * And kill -9 of the home while its push is in flight: after the restart
 * the home sends it again, under the same key, and no other node does.
 */
import { describe, expect, test } from "bun:test";
import { SwitchboardClient } from "../../src/client/client.ts";
import { pushCalls } from "../../src/client/push.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { waitFor } from "../helpers/harness.ts";
import { accountOn, homeOf, threeNodes } from "../cluster/three-nodes.ts";
import { delivered, startGateway, webhookArgs } from "./gateway.ts";

const gw = await startGateway();
// An hour to the visible stage: one job's only push inside the test is its silent one.
const { nodes, clients, device } = threeNodes(4000, webhookArgs(gw.fake.url + "/hook", { "escalate-after": 3600, "timeout-ms": 3000 }));

async function client(key: KeyFile): Promise<SwitchboardClient> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(homeOf(key.account))!.tcp, key });
  clients.push(c);
  await c.connect();
  return c;
}

describe("push across cluster nodes", () => {
  test("messages from devices on two other nodes to an offline device: one wake-up, from its home only, no content", async () => {
    const r = accountOn("n2", "pr");
    const kr = await device(r);
    const rc = await client(kr);
    await pushCalls(rc).register({ p: "webhook", token: `tok-${r}` });
    await rc.close();
    const [s1, s3] = [accountOn("n1", "ps"), accountOn("n3", "pt")];
    const [c1, c3] = [await client(await device(s1)), await client(await device(s3))];
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) sends.push(c1.send(r, `cluster secret ${i} from ${s1}`), c3.send(r, `cluster secret ${i} from ${s3}`));
    await Promise.all(sends); // every `sent`: the copies and the job are durable on n2
    await waitFor(() => gw.to(`tok-${r}`).length >= 1, "the wake-up");
    const n2 = nodes.get("n2")!;
    await waitFor(async () => (await n2.metric("switchboard_push_in_flight")) === 0, "no push in flight on n2");
    // More messages collapse into the job already sent: still one.
    for (let i = 0; i < 5; i++) await c1.send(r, `later ${i}`);
    await waitFor(async () => (await n2.metric("switchboard_push_in_flight")) === 0, "no push in flight on n2");
    const got = gw.to(`tok-${r}`);
    expect(got).toHaveLength(1);
    expect(got[0]!.urgency).toBe("silent");
    expect(await delivered(n2)).toBe(1);
    expect(await delivered(nodes.get("n1")!)).toBe(0);
    expect(await delivered(nodes.get("n3")!)).toBe(0);
    expect(await nodes.get("n1")!.metric("switchboard_push_jobs_open")).toBe(0);
    expect(await nodes.get("n3")!.metric("switchboard_push_jobs_open")).toBe(0);
    expect(await n2.metric("switchboard_push_jobs_open")).toBe(1);
    for (const text of gw.raw) for (const bad of ["secret", s1, s3, "later"]) expect(text).not.toContain(bad);

    // The device logs in at its home: its job closes, and it gets every message.
    let n = 0;
    const back = new SwitchboardClient({ host: "127.0.0.1", port: n2.tcp, key: kr });
    clients.push(back);
    back.on("message", () => void n++);
    await back.connect();
    await waitFor(() => n === 45, "the 45 messages");
    await waitFor(async () => (await n2.metric("switchboard_push_jobs_open")) === 0, "the job closed by the login");
  }, 120_000);

  test("a device connected to its home gets no push from any node", async () => {
    const r = accountOn("n3", "po");
    const rc = await client(await device(r));
    await pushCalls(rc).register({ p: "webhook", token: `tok-${r}` });
    let n = 0;
    rc.on("message", () => void n++);
    const s = accountOn("n1", "pq");
    const c = await client(await device(s));
    for (let i = 0; i < 10; i++) await c.send(r, `online ${i}`);
    await waitFor(() => n === 10, "the 10 messages");
    for (const id of ["n1", "n2", "n3"]) expect(await nodes.get(id)!.metric("switchboard_push_jobs_open")).toBe(0);
    expect(gw.to(`tok-${r}`)).toHaveLength(0);
  }, 60_000);
});

describe("push across cluster nodes, kill -9 of the home", () => {
  test("the home killed with the wake-up in flight: after its restart it sends it again, same key, once delivered", async () => {
    const r = accountOn("n2", "pk");
    const kr = await device(r);
    const rc = await client(kr);
    const tok = `tok-${r}`;
    await pushCalls(rc).register({ p: "webhook", token: tok });
    await rc.close();
    gw.held.add(tok);
    const c1 = await client(await device(accountOn("n1", "pl")));
    await c1.send(r, "wake up");
    await waitFor(() => gw.to(tok).length === 1, "the push held at the gateway");
    const n2 = nodes.get("n2")!;
    await n2.kill9();
    gw.held.delete(tok);
    await n2.restart(); // its lease (2 x 3 s, at least 5 s) runs out in the file, then the job goes again
    await waitFor(async () => (await delivered(n2)) === 1, "the push delivered by the restarted home", 60_000);
    const got = gw.to(tok);
    expect(got).toHaveLength(2);
    expect(got[1]!.id).toBe(got[0]!.id); // the same request, by key: a gateway that dedupes wakes the device once
    for (const id of ["n1", "n3"]) expect(await delivered(nodes.get(id)!)).toBe(0);
  }, 120_000);
});

process.on("beforeExit", () => void gw.close());
