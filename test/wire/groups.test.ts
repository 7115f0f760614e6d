/**
 * Groups over real sockets: membership and its events, fan-out to every
 * member device through the per-device queues, receipts and aggregate
 * state, membership races, offline members draining later, dedup, bounds,
 * kill -9; plus device linked/revoked notices and key-version checks
 * (devices_stale) of 1:1 sends.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import type { SwitchboardClient, GroupEvent, DeviceEvent, Message, Receipt } from "../../src/client/client.ts";
import { ServerError } from "../../src/client/client.ts";
import type { Evt, MsgS, Res } from "../../src/protocol/stanzas.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { barrier, dec, enc, msgFrame, rawLogin } from "./util.ts";

let srv: TestServer;
beforeAll(async () => {
  srv = await startServer();
});
afterAll(() => srv?.cleanup());

interface Seen {
  messages: Message[];
  receipts: Receipt[];
  groups: GroupEvent[];
  devices: DeviceEvent[];
}

type CS = [SwitchboardClient, Seen];

async function connect(s: TestServer, kf: KeyFile): Promise<[SwitchboardClient, Seen]> {
  const seen: Seen = { messages: [], receipts: [], groups: [], devices: [] };
  const c = await s.client(kf, {
    setup: (c) => {
      c.on("message", (m) => seen.messages.push(m));
      c.on("receipt", (r) => seen.receipts.push(r));
      c.on("group", (e) => seen.groups.push(e));
      c.on("device", (e) => seen.devices.push(e));
    },
  });
  return [c, seen];
}

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ServerError);
    expect((e as ServerError).code).toBe(code);
    return;
  }
  throw new Error(`expected a ${code} failure, but it succeeded`);
}

let n = 0;
const uniq = (p: string) => `${p}${++n}`;

describe("membership", () => {
  test("create, info, list, rename, promote, demote: admins only, events to every member device in sequence order", async () => {
    const [A, B, C, D] = [uniq("ga"), uniq("gb"), uniq("gc"), uniq("gd")];
    const ka1 = await srv.newDevice(A);
    const ka2 = await srv.newDevice(A);
    const kb = await srv.newDevice(B);
    const kc = await srv.newDevice(C);
    const kd = await srv.newDevice(D);
    const [[a1, sa1], [a2, sa2], [b, sb], [c, sc], [d]] = (await Promise.all([ka1, ka2, kb, kc, kd].map((k) => connect(srv, k)))) as [CS, CS, CS, CS, CS];

    const { g, seq } = await a1.createGroup("team", [B, C]);
    expect(g).toMatch(/^#[a-z0-9]{16}$/);
    for (const s of [sa1, sa2, sb, sc]) await waitFor(() => s.groups.length >= 1, "create event");
    for (const s of [sa1, sa2, sb, sc]) {
      expect(s.groups[0]).toMatchObject({ op: "create", group: g, seq, by: A, name: "team" });
      expect([...s.groups[0]!.members].sort()).toEqual([A, B, C].sort());
    }

    const info = await b.groupInfo(g);
    expect(info).toMatchObject({ g, name: "team", creator: A });
    expect(info.members.map((m) => [m.u, m.admin]).sort()).toEqual([[A, true], [B, false], [C, false]].sort() as never);
    expect((await c.groups()).groups).toEqual([{ g, name: "team", n: 3 }]);
    expect((await d.groups()).groups).toEqual([]);

    // Non-admins, non-members, unknown groups and bad arguments.
    await rejects(b.renameGroup(g, "mine"), "forbidden");
    await rejects(b.addMembers(g, [D]), "forbidden");
    await rejects(b.removeMembers(g, [C]), "forbidden");
    await rejects(d.groupInfo(g), "not_member");
    await rejects(d.leaveGroup(g), "not_member");
    await rejects(a1.groupInfo("#nosuchgroup"), "not_member"); // the same answer as for a group one is not in (no probing)
    await rejects(a1.groupInfo("nohash"), "bad_field");
    await rejects(a1.addMembers(g, ["no-such-account-x"]), "unknown_user");
    await rejects(a1.addMembers(g, [B]), "bad_field"); // already a member
    await rejects(a1.renameGroup(g, ""), "bad_field");
    await rejects(a1.renameGroup(g, "x".repeat(65)), "bad_field");
    await rejects(a1.createGroup("y".repeat(65)), "bad_field");
    await rejects(a1.demote(g, [A]), "forbidden"); // the last admin

    const r1 = await a1.promote(g, [B]);
    const r2 = await b.renameGroup(g, "renamed by bob");
    const r3 = await b.demote(g, [A]);
    await rejects(a1.renameGroup(g, "no longer admin"), "forbidden");
    expect(r1.seq).toBeLessThan(r2.seq);
    expect(r2.seq).toBeLessThan(r3.seq);
    for (const s of [sa1, sa2, sb, sc]) {
      await waitFor(() => s.groups.length >= 4, "three more events");
      expect(s.groups.map((e) => [e.op, e.seq, e.by, e.members, e.name ?? null])).toEqual([
        ["create", seq, A, s.groups[0]!.members, "team"],
        ["promote", r1.seq, A, [B], null],
        ["rename", r2.seq, B, [], "renamed by bob"],
        ["demote", r3.seq, B, [A], null],
      ]);
    }
    expect((await c.groupInfo(g)).name).toBe("renamed by bob");
    for (const x of [a1, a2, b, c, d]) await x.close();
  });

  test("the last admin leaving promotes the longest-standing member; the last member leaving deletes the group", async () => {
    const [A, B, C] = [uniq("la"), uniq("lb"), uniq("lc")];
    const [[a], [b, sb], [c, sc]] = (await Promise.all([A, B, C].map(async (u) => connect(srv, await srv.newDevice(u))))) as [CS, CS, CS];
    const { g } = await a.createGroup("heirs", [B]);
    await a.addMembers(g, [C]);
    const left = await a.leaveGroup(g);
    await waitFor(() => sc.groups.some((e) => e.op === "promote"), "promotion");
    const promote = sc.groups.find((e) => e.op === "promote")!;
    expect(promote.members).toEqual([B]);
    expect(promote.seq).toBeGreaterThan(left.seq);
    expect(sc.groups.find((e) => e.op === "leave")).toMatchObject({ by: A, members: [A], seq: left.seq });
    expect((await b.groupInfo(g)).members.map((m) => [m.u, m.admin])).toEqual([[B, true], [C, false]]);
    await rejects(a.groupInfo(g), "not_member");
    await b.leaveGroup(g);
    await c.leaveGroup(g);
    await rejects(c.groupInfo(g), "not_member"); // gone, and answered as any group one is not in
    expect(sb.groups.length).toBeGreaterThan(0);
    for (const x of [a, b, c]) await x.close();
  });

  test("the member cap and the per-account group cap refuse with their own codes", async () => {
    const small = await startServer({ args: ["--groups-max-members", "3", "--groups-max-per-account", "2"] });
    try {
      const [A, B, C, D] = ["ca", "cb", "cc", "cd"];
      const [a, b] = (await Promise.all([A, B].map(async (u) => (await connect(small, await small.newDevice(u)))[0]))) as [SwitchboardClient, SwitchboardClient];
      for (const u of [C, D]) await small.newDevice(u);
      await rejects(a.createGroup("big", [B, C, D]), "group_full");
      const { g } = await a.createGroup("three", [B, C]);
      await rejects(a.addMembers(g, [D]), "group_full");
      await a.createGroup("second", [B]);
      await rejects(b.createGroup("third"), "too_many_groups");
      await rejects(a.createGroup("third for a"), "too_many_groups");
      await a.close();
      await b.close();
    } finally {
      small.cleanup();
    }
  });
});

describe("group messages", () => {
  test("fan-out to every member device, sync copies, offline members later; per-device dlv receipts; read receipts; aggregate state", async () => {
    const [A, B, C] = [uniq("ma"), uniq("mb"), uniq("mc")];
    const ka1 = await srv.newDevice(A);
    const ka2 = await srv.newDevice(A);
    const kb = await srv.newDevice(B);
    const kc1 = await srv.newDevice(C);
    const kc2 = await srv.newDevice(C); // stays offline at first
    const [[a1, sa1], [a2, sa2], [b, sb], [c1, sc1]] = (await Promise.all([ka1, ka2, kb, kc1].map((k) => connect(srv, k)))) as [CS, CS, CS, CS];
    const { g } = await a1.createGroup("fan", [B, C]);

    const sent = await a1.sendGroup(g, "hello group");
    expect(sent.to).toBe(g);
    for (const s of [sb, sc1, sa2]) await waitFor(() => s.messages.some((m) => m.id === sent.id), "the message");
    for (const s of [sb, sc1]) {
      const m = s.messages.find((m) => m.id === sent.id)!;
      expect(m).toMatchObject({ conversation: g, from: A, fromDevice: ka1.device, to: g, seq: sent.seq, sync: false });
      expect(dec(m.payload)).toBe("hello group");
    }
    expect(sa2.messages.find((m) => m.id === sent.id)).toMatchObject({ conversation: g, sync: true, seq: sent.seq });
    expect(sa1.messages.some((m) => m.id === sent.id)).toBe(false); // never back to the sending device

    // dlv receipts: one per member device that has it, to every device of the sender.
    const dlvs = (s: Seen) => s.receipts.filter((r) => r.kind === "dlv" && r.id === sent.id).map((r) => `${r.account}/${r.device}/${r.with}`).sort();
    for (const s of [sa1, sa2]) await waitFor(() => dlvs(s).length === 2, "two dlv receipts");
    expect(dlvs(sa1)).toEqual([`${B}/1/${g}`, `${C}/1/${g}`].sort());
    let st = await a1.messageState(g, sent.seq);
    expect(st).toMatchObject({ g, seq: sent.seq, id: sent.id, n: 2, delivered: 2, read: 0 });
    await rejects(b.messageState(g, sent.seq), "forbidden");
    await rejects(a1.messageState(g, sent.seq + 1000), "not_found");

    // The offline device drains later, and its ack is one more receipt.
    const [c2, sc2] = await connect(srv, kc2);
    await waitFor(() => sc2.messages.some((m) => m.id === sent.id), "drained message");
    await waitFor(() => dlvs(sa1).length === 3, "the third dlv");

    // Read up to seq: a read receipt to the sender's devices, and to the reader's other devices.
    b.markRead(g, sent.seq);
    for (const s of [sa1, sa2]) await waitFor(() => s.receipts.some((r) => r.kind === "read" && r.account === B && r.with === g && r.seq === sent.seq), "read receipt");
    c1.markRead(g, sent.seq);
    await waitFor(() => sc2.receipts.some((r) => r.kind === "read" && r.account === C && r.device === kc1.device && r.with === g), "read sync to the reader's other device");
    await waitFor(async () => (await a1.messageState(g, sent.seq)).read === 2, "state read by 2");
    st = await a1.messageState(g, sent.seq);
    expect(st).toMatchObject({ n: 2, delivered: 2, read: 2 });
    expect(sb.receipts.filter((r) => r.kind === "read")).toEqual([]); // a reader gets no receipt of its own read on its only device
    // The operator's delivery trace of a group message: every copy, by kind, and the acks.
    const tr = JSON.parse((await srv.http_get(`/trace?from=${A}&id=${encodeURIComponent(sent.id)}`)).text).messages[0];
    expect(tr).toMatchObject({ from: A, to: g, seq: sent.seq });
    expect(tr.copies.map((c: { account: string; device: number; kind: string; acked: number | null }) => [c.account, c.device, c.kind, c.acked !== null]).sort()).toEqual(
      [[A, ka2.device, "sync", true], [B, 1, "group", true], [C, 1, "group", true], [C, 2, "group", true]].sort(),
    );
    for (const x of [a1, a2, b, c1, c2]) await x.close();
  });

  test("only members send; unknown groups and bad ids; a resent id is answered with the original `sent` and delivered once", async () => {
    const [A, B, D] = [uniq("sa"), uniq("sb"), uniq("sd")];
    const ka = await srv.newDevice(A);
    const kb = await srv.newDevice(B);
    const kd = await srv.newDevice(D);
    const [a, b, dd] = await Promise.all([rawLogin(srv, ka), rawLogin(srv, kb), rawLogin(srv, kd)]);
    a.send({ t: "iq", id: 1, op: "group.create", a: { name: "members only", m: [B] } });
    const res = (await a.expect((s) => s.t === "res" && s.id === 1)) as Res;
    expect(res.ok).toBe(true);
    const g = (res.r as { g: string }).g;

    dd.send({ t: "gmsg", id: "x1", g, p: enc("intruder") });
    expect(await dd.expect("err")).toMatchObject({ e: "not_member", id: "x1" });
    dd.send({ t: "gmsg", id: "x2", g: "#doesnotexist", p: enc("?") });
    expect(await dd.expect("err")).toMatchObject({ e: "not_member", id: "x2" }); // a missing group looks like a foreign one
    dd.send({ t: "gmsg", id: "x3", g: "alice", p: enc("?") });
    expect(await dd.expect("err")).toMatchObject({ e: "bad_field", id: "x3" });
    dd.send({ t: "read", u: g, seq: 1 });
    expect(await dd.expect("err")).toMatchObject({ e: "not_member" });

    a.send({ t: "gmsg", id: "once", g, p: enc("one copy") });
    const s1 = await a.expect("sent");
    a.send({ t: "gmsg", id: "once", g, p: enc("one copy") });
    const s2 = await a.expect("sent");
    expect(s2).toEqual(s1);
    await barrier(a);
    await barrier(b);
    const got = b.received.filter((s) => s.t === "msg" && s.id === "once");
    expect(got.length).toBe(1);
    for (const c of [a, b, dd]) c.end();
  });

  test("membership race: a removed member gets exactly the messages sent before its removal, an added one nothing before its addition", async () => {
    const [A, B, C] = [uniq("ra"), uniq("rb"), uniq("rc")];
    const ka = await srv.newDevice(A);
    const kb = await srv.newDevice(B);
    const kc = await srv.newDevice(C);
    const [a, b, c] = await Promise.all([rawLogin(srv, ka), rawLogin(srv, kb), rawLogin(srv, kc)]);
    a.send({ t: "iq", id: 1, op: "group.create", a: { name: "race", m: [B, C] } });
    const g = (((await a.expect((s) => s.t === "res" && s.id === 1)) as Res).r as { g: string }).g;

    // Each round: bob sends a burst while alice removes carol, then re-adds her, in one write each.
    const membership: { op: "remove" | "add"; seq: number }[] = [];
    let iq = 10;
    for (let round = 0; round < 8; round++) {
      const burst = Array.from({ length: 10 }, (_, i) => ({ t: "gmsg", id: `r${round}-${i}`, g, p: enc(`r${round}-${i}`) }));
      // Interleave: half of the burst, the removal, the other half; the two connections race on the server.
      for (const m of burst.slice(0, 5)) b.send(m);
      a.send({ t: "iq", id: ++iq, op: "group.remove", a: { g, m: [C] } });
      for (const m of burst.slice(5)) b.send(m);
      const rm = (await a.expect((s) => s.t === "res" && s.id === iq)) as Res;
      expect(rm.ok).toBe(true);
      membership.push({ op: "remove", seq: (rm.r as { seq: number }).seq });
      for (const m of burst) b.send({ ...m, id: m.id + "-after" });
      a.send({ t: "iq", id: ++iq, op: "group.add", a: { g, m: [C] } });
      const ad = (await a.expect((s) => s.t === "res" && s.id === iq)) as Res;
      membership.push({ op: "add", seq: (ad.r as { seq: number }).seq });
    }
    for (let i = 0; i < 160; i++) await b.expect("sent");
    const sentSeqs = b.received.filter((s) => s.t === "sent").map((s) => (s as { seq: number }).seq);
    expect(new Set(sentSeqs).size).toBe(160);
    // Carol's view: acknowledge everything; it must be exactly the messages whose seq falls inside a membership interval.
    await barrier(b);
    await barrier(c);
    const inGroup = (seq: number) => {
      let member = true; // created with carol in it
      for (const ev of membership) {
        if (ev.seq > seq) break;
        member = ev.op === "add";
      }
      return member;
    };
    const expected = sentSeqs.filter(inGroup).sort((x, y) => x - y);
    await waitFor(() => c.received.filter((s) => s.t === "msg").length >= expected.length, "carol's messages");
    await barrier(c);
    const got = c.received.filter((s): s is MsgS => s.t === "msg").map((m) => m.seq);
    expect(got).toEqual(expected); // in order, nothing after a removal, nothing before an addition
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.length).toBeLessThan(160);
    // And carol heard of every removal and addition, in order.
    const evs = c.received.filter((s): s is Evt => s.t === "evt" && s.k === "grp" && (s.op === "remove" || s.op === "add"));
    expect(evs.map((e) => [e.op, e.seq])).toEqual(membership.map((m) => [m.op, m.seq]));
    for (const x of [a, b, c]) x.end();
  });

  test("offline members drain in order later, and everything `sent` survives kill -9", async () => {
    const own = await startServer();
    try {
      const [A, B, C] = ["oa", "ob", "oc"];
      const ka = await own.newDevice(A);
      const kb = await own.newDevice(B);
      const kc = await own.newDevice(C);
      const [a] = await connect(own, ka);
      const { g } = await a.createGroup("later", [B, C]);
      const sent = [];
      for (let i = 0; i < 60; i++) sent.push(a.sendGroup(g, `m${i}`));
      const all = await Promise.all(sent);
      await own.kill9();
      await own.restart();
      const [b, sb] = await connect(own, kb);
      const [c, sc] = await connect(own, kc);
      for (const s of [sb, sc]) {
        await waitFor(() => s.messages.length >= 60, "drain");
        expect(s.messages.map((m) => dec(m.payload))).toEqual(all.map((_, i) => `m${i}`));
        expect(s.messages.map((m) => m.seq)).toEqual(all.map((x) => x.seq));
        expect(s.groups.map((e) => e.op)).toEqual(["create"]);
      }
      await b.close();
      await c.close();
    } finally {
      own.cleanup();
    }
  });

  test("a member device at its queue bound is skipped and the sender told with a `full` receipt; the others get it", async () => {
    const tight = await startServer({ args: ["--queue-max-messages", "3"] });
    try {
      const [A, B, C] = ["fa", "fb", "fc"];
      const ka = await tight.newDevice(A);
      await tight.newDevice(B); // offline all along: its queue fills
      const kc = await tight.newDevice(C);
      const [a, sa] = await connect(tight, ka);
      const [c, sc] = await connect(tight, kc);
      const { g } = await a.createGroup("bounded", [B, C]); // the create event is bob's first item
      const sent = [];
      for (let i = 0; i < 4; i++) sent.push(await a.sendGroup(g, `f${i}`));
      await waitFor(() => sc.messages.length === 4, "carol gets all four");
      await waitFor(() => sa.receipts.some((r) => r.kind === "full"), "a full receipt");
      const full = sa.receipts.filter((r) => r.kind === "full");
      expect(full.map((r) => [r.account, r.device, r.with, r.seq])).toEqual([[B, 1, g, sent[2]!.seq], [B, 1, g, sent[3]!.seq]]);
      await a.close();
      await c.close();
    } finally {
      tight.cleanup();
    }
  });
});

describe("devices", () => {
  test("an account's devices are told when a device is linked or revoked", async () => {
    const A = uniq("da");
    const k1 = await srv.newDevice(A);
    const [a1, s1] = await connect(srv, k1);
    const k2 = await srv.newDevice(A, "laptop");
    await waitFor(() => s1.devices.length === 1, "linked notice");
    expect(s1.devices[0]).toMatchObject({ op: "linked", account: A, device: k2.device, name: "laptop" });
    const k3 = await srv.newDevice(A, "tablet"); // stays offline
    await a1.request("device.revoke", { d: k2.device });
    await waitFor(() => s1.devices.length === 3, "revoked notice");
    expect(s1.devices[2]).toMatchObject({ op: "revoked", account: A, device: k2.device });
    // The offline device learns of it all when it connects (queued, in order): the revocation of device 2.
    const [a3, s3] = await connect(srv, k3);
    await waitFor(() => s3.devices.length === 1, "queued notice");
    expect(s3.devices[0]).toMatchObject({ op: "revoked", device: k2.device });
    expect(await a1.devices(A)).toEqual([k1.device, k3.device]);
    await a1.close();
    await a3.close();
  });

  test("a payload that names an old key version is refused with devices_stale; the current one or none is accepted", async () => {
    const own = await startServer();
    try {
      const ka = await own.newDevice("ka");
      const kb = await own.newDevice("kb");
      // Key versions are set by the keys module when a device publishes; here directly in the store, server stopped.
      await own.stop();
      const store = new SqliteAccountStore(own.dataDir);
      store.setKeyVersion("kb", kb.device, 7777);
      store.close();
      await own.restart();
      const a = await rawLogin(own, ka);
      a.send({ t: "iq", id: 1, op: "devices", a: { u: "kb" } });
      expect(((await a.expect("res")) as Res).r).toMatchObject({ devices: [{ d: kb.device, kv: 7777 }] });
      a.send({ t: "msg", id: "old", to: "kb", p: [[kb.device, enc("x"), 1234]] });
      const err = await a.expect("err");
      expect(err).toMatchObject({ e: "devices_stale", id: "old", x: { stale: { kb: [[kb.device, 7777]] } } });
      a.send({ t: "msg", id: "cur", to: "kb", p: [[kb.device, enc("x"), 7777]] });
      expect(await a.expect("sent")).toMatchObject({ id: "cur" });
      a.send(msgFrame("none", "kb", [kb.device]));
      expect(await a.expect("sent")).toMatchObject({ id: "none" });
      a.end();
    } finally {
      own.cleanup();
    }
  });

  test("the SDK refetches device key versions and resends by itself after devices_stale", async () => {
    const raw = (k: KeyObject) => new Uint8Array(Buffer.from((k.export({ format: "jwk" }) as { x: string }).x, "base64url"));
    const x25519 = () => raw(generateKeyPairSync("x25519").publicKey);
    /** A fresh end-to-end identity, published the way a client publishes it (keys module, docs/PROTOCOL.md §5.4). */
    const publish = (c: SwitchboardClient) => {
      const { publicKey, privateKey } = generateKeyPairSync("ed25519");
      const dh = x25519();
      const k = x25519();
      return c.request<{ kv: number }>("keys.publish", {
        ik: raw(publicKey), dh, dhs: new Uint8Array(sign(null, dh, privateKey)), spk: { id: 1, k, s: new Uint8Array(sign(null, k, privateKey)) },
      });
    };
    const [A, B] = [uniq("sta"), uniq("stb")];
    const [a] = await connect(srv, await srv.newDevice(A));
    const [b, sb] = await connect(srv, await srv.newDevice(B));
    const kv1 = (await publish(b)).kv;
    await a.send(B, "for the first keys");
    expect(a.keyVersion(B, 1)).toBe(kv1);
    const kv2 = (await publish(b)).kv; // bob reinstalled: new identity, new key version
    expect(kv2).not.toBe(kv1);
    const refusedBefore = await srv.metric("switchboard_messages_refused_total");
    const sent = await a.send(B, "for the new keys"); // refused once as stale, refetched, resent
    expect(await srv.metric("switchboard_messages_refused_total")).toBe(refusedBefore + 1);
    expect(a.keyVersion(B, 1)).toBe(kv2);
    await waitFor(() => sb.messages.some((m) => m.id === sent.id), "the resent message");
    expect(sb.messages.map((m) => dec(m.payload))).toEqual(["for the first keys", "for the new keys"]);
    await a.close();
    await b.close();
  });
});
