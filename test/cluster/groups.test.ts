/**
 * Groups across nodes: 3 real `switchboard serve` processes and a private
 * redis-server, members homed on all 3. A group lives on the node its id is
 * homed on (the creator's: ids are drawn until they are homed there); the
 * other nodes forward its operations over the node links. Proves, over real
 * sockets:
 * - create/add/remove/leave from any node: every member device gets each
 *   event once, in the group's sequence order; accounts named are checked
 *   on their homes (not "unknown" because not cached);
 * - messages from members of every node: fanned out to every member device
 *   (offline ones drain after they connect), sync copies to the sender's
 *   other device, `sent`, then a `dlv` receipt per member device after it,
 *   `read` receipts, and `group.state` counts from the group's node;
 * - kill -9 of the group's node mid-stream and its restart: every send ends
 *   `sent`, nothing acknowledged before the kill is missing, no duplicate,
 *   every member sees the group's messages in one sequence order.
 * Randomized burst sizes: the seed is printed on failure. No timing assertions.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { GroupEvent, Message, Receipt, Sent } from "../../src/client/types.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { waitFor } from "../helpers/harness.ts";
import { prng } from "../helpers/prng.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { plan } from "./three-nodes.ts";

const TTL = 4000;
const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);

const { nodes, clients, device } = threeNodes(TTL, ["--presence-stranger-receipts", "100000", "--queue-commit-ms", "100"]);


/** What one device heard, in wire order. */
interface Ear {
  c: SwitchboardClient;
  msgs: Message[];
  events: GroupEvent[];
  log: string[];
}
async function client(key: KeyFile, via = homeOf(key.account)): Promise<Ear> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(via)!.tcp, key });
  clients.push(c);
  const e: Ear = { c, msgs: [], events: [], log: [] };
  c.on("message", (m: Message) => e.msgs.push(m));
  c.on("group", (g: GroupEvent) => e.events.push(g));
  c.on("sent", (x: Sent) => void e.log.push(`sent ${x.id}`));
  c.on("receipt", (r: Receipt) => void e.log.push(`${r.kind} ${r.id ?? r.seq} ${r.account}.${r.device}`));
  await c.connect();
  return e;
}
const text = (p: Uint8Array) => new TextDecoder().decode(p);
const groupNode = (g: string) => plan.ownerOf(shardOf(g))!;

describe(`groups with members on all 3 nodes (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  test("membership events, fan-out, sync copies, sent then dlv, read receipts, group.state, an offline member draining", async () => {
    const a = accountOn("n1", "ga_"); // the admin: the group lives on n1
    const b = accountOn("n2", "gb_"); // two devices
    const c = accountOn("n3", "gc_"); // offline until the end
    const d = accountOn("n3", "gd_"); // added, then removed
    const e = accountOn("n2", "ge_"); // leaves
    const [ka, kb1, kc, kd, ke] = [await device(a), await device(b), await device(c), await device(d), await device(e)];
    const [A, B1, D, E] = [await client(ka), await client(kb1), await client(kd), await client(ke)];
    // Created on n1 with members of n2 and n3, which n1 has never looked up: checked on their homes.
    const { g } = await A.c.createGroup("three nodes", [b, c, e]);
    expect(groupNode(g)).toBe("n1");
    // A device of b enrolled on n2 after n1 cached b's list: n2's notice drops it there, and the first message
    // waits for b's new list on n1 (without that wait b2 gets no copy of it).
    // The create reaches b's home (n2) as an item that n2 expands to b's devices when it arrives, after the iq's
    // answer: enrolled before that, b2 would get the create too (docs/PROTOCOL.md §6.8). b1 holding it means n2
    // has expanded it, so b2 is enrolled after the create on both nodes.
    await waitFor(() => B1.events.some((x) => x.group === g && x.op === "create"), "the create on b1 (expanded on n2)", 30_000);
    const kb2 = await device(b);
    const B2 = await client(kb2);
    // Added by the admin; removed and left below from other nodes (forwarded iqs).
    await A.c.addMembers(g, [d]);
    const N = 8;
    const sends: Promise<Sent>[] = [];
    for (let k = 0; k < N; k++) {
      sends.push(B1.c.sendGroup(g, `b:${k}`)); // n2 -> n1 (forwarded), copies back to n2, n3, n1
      sends.push(A.c.sendGroup(g, `a:${k}`)); // local on n1, copies to n2, n3
      sends.push(D.c.sendGroup(g, `d:${k}`)); // n3 -> n1
    }
    const sent = await Promise.all(sends);
    await E.c.leaveGroup(g); // n2 -> n1
    // d removed by the admin after its messages: it hears of its own removal, then nothing more.
    await A.c.removeMembers(g, [d]);
    const after = await B1.c.sendGroup(g, "after");
    const all = [...sent, after];
    const texts = (ear: Ear) => ear.msgs.filter((m) => m.conversation === g).map((m) => text(m.payload));
    const senderOf = (t: string) => t.split(":")[0];
    const everyone = [...Array(N).keys()].flatMap((k) => [`b:${k}`, `a:${k}`, `d:${k}`]);
    // c connects now: its queued copies on n3 drain.
    const C = await client(kc);
    const want = (ear: Ear, from: string[], except: string) => [...everyone, "after"].filter((t) => from.includes(t === "after" ? "b" : senderOf(t)!) && (t === "after" ? except !== "b" : senderOf(t) !== except));
    await waitFor(() => texts(C).length >= 3 * N + 1, `c's drained messages (have ${texts(C).length})`, 60_000);
    await waitFor(() => texts(A).length >= 2 * N + 1 && texts(B2).length >= 3 * N + 1 && texts(B1).length >= 2 * N, "everyone's messages", 60_000);
    // Each device: every message meant for it once; in the group's sequence order; per sender in send order.
    const bySeq = new Map(all.map((x) => [x.id, x.seq]));
    for (const [ear, except] of [[A, "a"], [B1, "b"], [C, ""], [D, "d"]] as const) {
      const got = ear.msgs.filter((m) => m.conversation === g);
      expect(new Set(got.map((m) => m.id)).size).toBe(got.length);
      for (let i = 1; i < got.length; i++) expect(got[i]!.seq).toBeGreaterThan(got[i - 1]!.seq);
      const ts = got.map((m) => text(m.payload));
      for (const who of ["a", "b", "d"]) {
        if (who === except) continue;
        const mine = ts.filter((t) => senderOf(t) === who || (who === "b" && t === "after"));
        const expected = want(ear, [who], except).filter((t) => ear !== D || t !== "after");
        expect(mine).toEqual(expected);
      }
      for (const m of got) expect(m.seq).toBe(bySeq.get(m.id)!);
    }
    expect(texts(D)).not.toContain("after");
    // b's other device got sync copies of b1's messages (homed on n2, made on n1).
    expect(B2.msgs.filter((m) => m.sync).map((m) => text(m.payload))).toEqual([...[...Array(N).keys()].map((k) => `b:${k}`), "after"]);
    // Membership events: the same sequence on every device that was a member throughout.
    const evs = (ear: Ear) => ear.events.filter((x) => x.group === g).map((x) => `${x.op} ${x.members.join(",")}`);
    const full = ["create", `add ${d}`, `leave ${e}`, `remove ${d}`];
    await waitFor(() => evs(A).length >= 4 && evs(B1).length >= 4 && evs(C).length >= 4, "every event on every member", 30_000);
    for (const ear of [A, B1, C]) expect(evs(ear).map((x) => x.split(" ")[0] === "create" ? "create" : x)).toEqual(full);
    // b2 was enrolled after the create, d added by the second event.
    for (const ear of [B2, D]) expect(evs(ear)).toEqual([`add ${d}`, `leave ${e}`, `remove ${d}`]);
    // e (on n2) hears of its own leave as an item n1 sent to n2, not with the iq's answer: waited for, as above.
    await waitFor(() => evs(E).includes(`leave ${e}`), "the leave on e's device", 30_000);
    expect(evs(E)[evs(E).length - 1]).toBe(`leave ${e}`);
    // dlv receipts: to b1 (sender on n2, group on n1) for every other member's device, each once, after its sent
    // (b2's sync copies get none, as on one node).
    const devicesFor = [`${a}.${ka.device}`, `${c}.${kc.device}`, `${d}.${kd.device}`, `${e}.${ke.device}`];
    const bSent = sent.filter((x, i) => i % 3 === 0);
    const missing = () => bSent.flatMap((x) => devicesFor.filter((dv) => !B1.log.includes(`dlv ${x.id} ${dv}`)).map((dv) => `${x.id} ${dv}`));
    await waitFor(() => missing().length === 0, "dlv receipts of b's messages from every member device", 60_000).catch(() => {});
    expect(missing()).toEqual([]);
    for (const x of bSent) {
      const si = B1.log.indexOf(`sent ${x.id}`);
      expect(si).toBeGreaterThanOrEqual(0);
      for (const dv of devicesFor) {
        const di = B1.log.indexOf(`dlv ${x.id} ${dv}`);
        expect(di).toBeGreaterThan(si);
        expect(B1.log.lastIndexOf(`dlv ${x.id} ${dv}`)).toBe(di);
      }
    }
    // group.state from n2, answered by n1 with the marks the member nodes' acks made there (item h).
    const st = await B1.c.messageState(g, bSent[0]!.seq);
    expect(st.delivered).toBe(st.n);
    expect(st.n).toBeGreaterThanOrEqual(2);
    // c (on n3) reads up to the last message: a read receipt reaches b (n2) and a (n1).
    C.c.markRead(g, after.seq);
    await waitFor(() => B1.log.some((l) => l.startsWith(`read ${after.seq} ${c}`)) && A.log.some((l) => l.startsWith(`read ${after.seq} ${c}`)), "c's read receipt at b and a", 30_000);
  }, 180_000);

  test("kill -9 of the group's node mid-stream, then restart: nothing acknowledged lost, no duplicate, one order", async () => {
    const rand = prng(SEED);
    const owner = accountOn("n2", "kg_o_"); // the group lives on n2
    const s1 = accountOn("n1", "kg_s1_");
    const s3 = accountOn("n3", "kg_s3_");
    const r2 = accountOn("n2", "kg_r2_");
    const [ko, k1, k3, kr2] = [await device(owner), await device(s1), await device(s3), await device(r2)];
    const O = await client(ko);
    const { g } = await O.c.createGroup("killed", [s1, s3, r2]);
    expect(groupNode(g)).toBe("n2");
    const [S1, S3] = [await client(k1), await client(k3)];
    const acked: string[] = [];
    const all: Promise<Sent>[] = [];
    const want: string[] = [];
    let k = 0;
    const burst = (n: number) => {
      const ps: Promise<Sent>[] = [];
      for (let j = 0; j < n; j++) {
        const [who, body] = k % 2 === 0 ? [S1, `s1:${k}`] : [S3, `s3:${k}`];
        want.push(body);
        k++;
        const p = who.c.sendGroup(g, body);
        void p.then(() => acked.push(body));
        ps.push(p);
        all.push(p);
      }
      return ps;
    };
    for (let b = 0; b < 3; b++) await Promise.all(burst(4 + Math.floor(rand() * 12)));
    const before = acked.length;
    burst(4 + Math.floor(rand() * 12));
    await waitFor(() => acked.length > before, "a send of the last burst acknowledged");
    const n2 = nodes.get("n2")!;
    await n2.kill9();
    const ackedAtKill = [...acked];
    burst(4 + Math.floor(rand() * 12)); // refused with retry_after while n2 is down; the SDK resends
    await n2.restart();
    await Promise.all(all); // every send ends `sent`
    const total = k;
    // r2 (homed on n2) connects only now, through n3: what it gets was durable on n2.
    const R2 = await client(kr2, "n3");
    const texts = (ear: Ear) => ear.msgs.filter((m) => m.conversation === g).map((m) => text(m.payload));
    await waitFor(() => texts(R2).length >= total && texts(S1).length >= total / 2 - 1 && texts(S3).length >= total / 2 - 1, `${total} messages on the members`, 60_000).catch(() => {});
    for (const [ear, except] of [[R2, ""], [S1, "s1"], [S3, "s3"]] as const) {
      const got = ear.msgs.filter((m) => m.conversation === g);
      const ts = texts(ear);
      expect(new Set(ts).size).toBe(ts.length); // no duplicate
      for (let i = 1; i < got.length; i++) expect(got[i]!.seq).toBeGreaterThan(got[i - 1]!.seq); // one order
      const mine = want.filter((t) => !t.startsWith(`${except}:`) || except === "");
      expect(ackedAtKill.filter((x) => mine.includes(x) && !ts.includes(x))).toEqual([]); // nothing acknowledged lost
      // Per sender in send order, and all of them.
      for (const who of ["s1", "s3"]) if (who !== except) expect(ts.filter((t) => t.startsWith(`${who}:`))).toEqual(want.filter((t) => t.startsWith(`${who}:`)));
    }
  }, 180_000);
});
