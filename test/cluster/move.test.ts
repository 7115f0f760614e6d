/**
 * Shard moves: 3 real `switchboard serve` processes and a private redis-server.
 * Proves, over real sockets and node links:
 * - `switchboard cluster move SHARD NODE` under load (a sender on another shard of the same node sending
 *   closed-loop to an account of the moved shard, the recipient connected, a second device of it offline):
 *   every message sent is delivered once, in order, with seqs that only grow (no number reused across the
 *   move: the conversation is numbered by the moved account's home); the connected device is moved to the new
 *   home by the SDK (its messages after the move come from there), the offline device logs in through the old
 *   home, is redirected, and drains everything queued for it before the move from the new home; the new home
 *   holds the shard at a later epoch, the old one not; the moved account then sends from its new home;
 * - the modules' rows move too: the moved account's key bundle is fetched from its new home, its contacts are
 *   there, its blocks hold against an account of a third node and one of its old home, its push endpoint is on
 *   the new home and gone from the old;
 * - refusals: a move of a shard the node does not hold names its home; to a node not configured is refused.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, status, threeNodes } from "./three-nodes.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { Sent } from "../../src/client/types.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { BUN, MAIN, ROOT, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";
import { SecureClient } from "../../src/client/secure.ts";
import { pushCalls } from "../../src/client/push.ts";
import { webhookArgs } from "../push/gateway.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TTL = 4000;
// A webhook push provider, so that a device can register an endpoint (it moves with the shard); nothing is pushed here.
const { nodes, clients, device, args, connect: client } = threeNodes(TTL, ["--presence-stranger-receipts", "100000", ...webhookArgs("http://127.0.0.1:9/hook", { "escalate-after": 3600 })]);

const text = (p: Uint8Array) => new TextDecoder().decode(p);

async function run(...argv: string[]): Promise<{ code: number; out: string }> {
  const p = Bun.spawn([BUN, MAIN, ...argv], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out: out + err };
}
const cli = (n: TestServer, ...argv: string[]) => run("cluster", "move", ...argv, "--http-port", String(n.http));

describe("shard moves", () => {
  test("cluster move under load: once, in order, no seq reused; devices follow to the new home", async () => {
    // The recipient's name is the lower one: the conversation is numbered by its home, which moves.
    const r = accountOn("n1", "mb_");
    let s = accountOn("n1", "ms_");
    for (let i = 0; shardOf(s) === shardOf(r); i++) s = accountOn("n1", `ms${i}_`);
    const s3 = accountOn("n3", "mt_"); // a sender on another node: its copies cross a link during the move
    const [ks, kr1, kr2, ks3] = [await device(s), await device(r), await device(r), await device(s3)];
    const got1: string[] = [];
    const seqs1: number[] = [];
    const cr = await client(kr1, "n1", (c) => c.on("message", (m) => {
      got1.push(text(m.payload));
      seqs1.push(m.seq);
    }));
    const cs = await client(ks, "n1");
    const cs3 = await client(ks3, "n3");
    const sent: Sent[] = [];
    const sent3: Sent[] = [];
    let stop = false;
    const load = (async () => {
      for (let k = 0; !stop || k < 30; k++) sent.push(await cs.send(r, `m${k}`));
    })();
    const load3 = (async () => {
      for (let k = 0; !stop || k < 30; k++) sent3.push(await cs3.send(r, `t${k}`));
    })();
    const mine = (got: string[], p: string) => got.filter((x) => x.startsWith(p));
    await waitFor(() => got1.length >= 10, "the first 10 messages before the move", 30_000);
    const before = (await status(nodes.get("n1")!)).held;
    const mv = await cli(nodes.get("n1")!, r, "n2");
    expect(mv.out).toContain(`shard ${shardOf(r)} moved to n2`);
    expect(mv.code).toBe(0);
    const atMove = sent.length;
    await waitFor(() => sent.length >= atMove + 20, "20 more messages sent after the move", 60_000);
    stop = true;
    await Promise.all([load, load3]);
    const [n, n3] = [sent.length, sent3.length];
    await waitFor(() => got1.length >= n + n3, `all ${n + n3} messages on the connected device (have ${got1.length})`, 60_000);
    expect(mine(got1, "m")).toEqual(Array.from({ length: n }, (_, k) => `m${k}`));
    expect(mine(got1, "t")).toEqual(Array.from({ length: n3 }, (_, k) => `t${k}`));
    expect(got1.length).toBe(n + n3);
    for (let k = 1; k < n; k++) expect(sent[k]!.seq).toBeGreaterThan(sent[k - 1]!.seq);
    for (let k = 1; k < n3; k++) expect(sent3[k]!.seq).toBeGreaterThan(sent3[k - 1]!.seq);
    expect(seqs1.filter((_, i) => got1[i]!.startsWith("m"))).toEqual(sent.map((x) => x.seq));
    // The shard: on n2 at a later epoch, not on n1.
    const [st1, st2] = [await status(nodes.get("n1")!), await status(nodes.get("n2")!)];
    expect(st1.held).toBe(before - 1);
    expect(st2.nodes.find((x: { id: string }) => x.id === "n2").shards).toBeGreaterThan(0);
    // The offline device logs in through the old home: redirected, it drains all from the new one.
    const got2: string[] = [];
    await client(kr2, "n1", (c) => c.on("message", (m) => void got2.push(text(m.payload))));
    await waitFor(() => got2.length >= n + n3, `all ${n + n3} messages on the device that was offline (have ${got2.length})`, 60_000);
    expect(mine(got2, "m")).toEqual(Array.from({ length: n }, (_, k) => `m${k}`));
    expect(mine(got2, "t")).toEqual(Array.from({ length: n3 }, (_, k) => `t${k}`));
    expect(got2.length).toBe(n + n3);
    // The moved account sends from its new home, numbered there above everything before.
    const back: string[] = [];
    cs.on("message", (m) => void back.push(text(m.payload)));
    const x = await cr.send(s, "back");
    expect(x.seq).toBeGreaterThan(sent[n - 1]!.seq);
    await waitFor(() => back.includes("back"), "the reply from the new home", 30_000);
    expect(await nodes.get("n1")!.metric("switchboard_cluster_redirects_total")).toBeGreaterThan(0);
    // A new account of the moved shard is created beside its new home, and refused beside the old one.
    let fresh = "mn_0";
    for (let i = 1; shardOf(fresh) !== shardOf(r); i++) fresh = `mn_${i}`;
    const add = (id: string) => run("user", "add", fresh, "--data-dir", nodes.get(id)!.dataDir, ...args(id));
    const old = await add("n1");
    expect(old.out).toContain("belongs on cluster node n2, not n1");
    expect((await add("n2")).code).toBe(0);
  }, 180_000);

  test("the modules' rows go with the shard: key bundles, contacts, blocks (both ways, across nodes after the move), push endpoints", async () => {
    const r = accountOn("n1", "mk_");
    const c3 = accountOn("n3", "mc_");
    const b3 = accountOn("n3", "mx_");
    const y = accountOn("n1", "my_"); // stays on n1: r's block of it becomes a block across nodes
    const [kr, kc, kb, ky] = [await device(r), await device(c3), await device(b3), await device(y)];
    const dir = mkdtempSync(join(tmpdir(), "sb-move-e2e-"));
    const cr = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get("n1")!.tcp, key: kr });
    clients.push(cr);
    const sr = await SecureClient.open(cr, { statePath: join(dir, "r.e2e"), otkTarget: 5 });
    await cr.connect();
    await sr.whenPublished();
    await cr.request("contacts.add", { u: c3 });
    await cr.request("block.add", { u: b3 });
    await cr.request("block.add", { u: y });
    await pushCalls(cr).register({ p: "webhook", token: `tok-${r}` });
    const endpoints = async (id: string) => nodes.get(id)!.metric("switchboard_push_endpoints");
    const [e1, e2] = [await endpoints("n1"), await endpoints("n2")];
    const mv = await cli(nodes.get("n1")!, r, "n2");
    expect(mv.code).toBe(0);
    // The push endpoint: on the new home (read into its memory), gone from the old.
    expect([await endpoints("n1"), await endpoints("n2")]).toEqual([e1 - 1, e2 + 1]);
    const [cc, cb, cy] = [await client(kc, "n3"), await client(kb, "n3"), await client(ky, "n1")];
    // The bundle is answered by r's new home (without its rows there: `missing`).
    const f = await cc.request<{ bundles: unknown[]; missing: number[] }>("keys.fetch", { u: r });
    expect(f.missing).toEqual([]);
    expect(f.bundles.length).toBe(1);
    // r's contacts and blocks, at its new home (the SDK follows the redirect).
    await waitFor(() => cr.isReady, "r reconnected at its new home", 30_000);
    expect((await cr.request<{ u: string[] }>("contacts.list")).u).toEqual([c3]);
    // The blocks still hold, from a third node and from r's old home.
    await expect(cb.send(r, "x")).rejects.toMatchObject({ code: "blocked" });
    await expect(cy.send(r, "x")).rejects.toMatchObject({ code: "blocked" });
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test("a group homed in a moved shard moves with it: members, messages, info, from every node", async () => {
    const a = accountOn("n1", "ga_");
    const b = accountOn("n2", "gb_");
    const c = accountOn("n3", "gc_");
    const [ka, kb, kc] = [await device(a), await device(b), await device(c)];
    const got: Record<string, string[]> = { a: [], b: [], c: [] };
    const on = (k: string) => (x: SwitchboardClient) => x.on("message", (m) => void got[k]!.push(text(m.payload)));
    const [A, B, C] = [await client(ka, "n1", on("a")), await client(kb, "n2", on("b")), await client(kc, "n3", on("c"))];
    const { g } = await A.createGroup("moving", [b, c]);
    await A.sendGroup(g, "before");
    await waitFor(() => got.b!.includes("before") && got.c!.includes("before"), "the message before the move", 30_000);
    const mv = await cli(nodes.get("n1")!, String(shardOf(g)), "n3");
    expect(mv.code).toBe(0);
    // Sent from the group's new home, from its old one and from a third node: every member gets each once.
    for (const [who, x] of [["c", C], ["a", A], ["b", B]] as const) await x.sendGroup(g, `after-${who}`);
    const want = ["after-a", "after-b", "after-c"];
    const theirs = (k: string) => want.filter((w) => w !== `after-${k}`);
    await waitFor(() => Object.entries(got).every(([k, l]) => theirs(k).every((w) => l.includes(w))), `the messages after the move (have ${JSON.stringify(got)})`, 30_000);
    for (const [k, l] of Object.entries(got)) expect(l.filter((x) => x.startsWith("after")).sort()).toEqual(theirs(k));
    expect((await B.request<{ members: unknown[] }>("group.info", { g })).members.length).toBe(3);
  }, 120_000);

  test("refused: a shard this node does not hold (names its home), a node not in cluster.nodes", async () => {
    const a = accountOn("n3", "mr_");
    const r1 = await cli(nodes.get("n1")!, a, "n2");
    expect(r1.code).toBe(1);
    expect(r1.out).toContain("not_owner");
    expect(r1.out).toContain("n3");
    const r2 = await cli(nodes.get("n3")!, a, "n9");
    expect(r2.code).toBe(1);
    expect(r2.out).toContain("bad_node");
  }, 60_000);
});
