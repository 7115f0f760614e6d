/**
 * The full privacy matrix over real sockets, on any topology (one node: matrix.test.ts; watcher and target
 * homed on different nodes: test/cluster/presence-matrix.test.ts). Nine targets, one for each pair
 * of policies (last seen × online: everyone, contacts, nobody); 36 viewers,
 * one for each combination of the viewer's own policy (reciprocity: 3) ×
 * contact relation (none, target lists viewer, viewer lists target, both:
 * 4) × block (none, target blocks viewer, viewer blocks target: 3). Every
 * viewer subscribes to every target and asks `presence` of each, every
 * target goes active, then idle (offline after the grace), and every viewer
 * types to every target. Every frame each connection received is then
 * checked against the rules as PROTOCOL.md §6.10 states them (written here
 * again, not imported): no forbidden field, ever; and every allowed one did
 * arrive (so a server that sends nothing fails too). Not a test file.
 */
import { expect } from "bun:test";
import { waitFor, type RawConn } from "../helpers/harness.ts";
import { barrier } from "../wire/util.ts";
import type { Pst, Res } from "../../src/protocol/stanzas.ts";
import { iq, ok, psts } from "./util.ts";

const POLICIES = ["everyone", "contacts", "nobody"] as const;
type P = (typeof POLICIES)[number];
const RELATIONS = ["none", "target-lists-viewer", "viewer-lists-target", "both"] as const;
const BLOCKS = ["none", "target-blocks-viewer", "viewer-blocks-target"] as const;

interface Target { name: string; ls: P; online: P; c?: RawConn }
interface Viewer { name: string; policy: P; relation: (typeof RELATIONS)[number]; block: (typeof BLOCKS)[number]; c?: RawConn; asked: Map<number, string> }

/** The grace a topology's servers must run with (`MATRIX_ARGS`). */
export const GRACE = 200;
/** The server flags the matrix needs (every node of a topology). */
export const MATRIX_ARGS = ["--presence-grace-ms", String(GRACE), "--presence-coalesce-ms", "0", "--presence-stranger-rate", "100000", "--presence-typing-rate", "1000"];

/** Where the matrix's accounts live: a name for the i-th target / viewer, and a logged-in connection of a new device. */
export interface Topology {
  target(i: number): string;
  viewer(i: number): string;
  login(account: string): Promise<RawConn>;
}

/** The rule as documented: owner shares a field under policy p with other. */
function shares(p: P, ownerListsOther: boolean): boolean {
  return p === "everyone" || (p === "contacts" && ownerListsOther);
}
function expected(t: Target, v: Viewer): { online: boolean; ls: boolean } {
  if (v.block !== "none") return { online: false, ls: false };
  const tListsV = v.relation === "target-lists-viewer" || v.relation === "both";
  const vListsT = v.relation === "viewer-lists-target" || v.relation === "both";
  return {
    online: shares(t.online, tListsV) && shares(v.policy, vListsT),
    ls: shares(t.ls, tListsV) && shares(v.policy, vListsT),
  };
}
const label = (t: Target, v: Viewer) => `target ls=${t.ls} online=${t.online}; viewer policy=${v.policy} relation=${v.relation} block=${v.block}`;

/**
 * Runs the whole matrix on a topology; throws (a failed expect) listing every pair whose frames broke the rule.
 */
export async function runMatrix(top: Topology): Promise<void> {
  const targets: Target[] = [];
  for (const ls of POLICIES) for (const online of POLICIES) targets.push({ name: top.target(targets.length), ls, online });
  const viewers: Viewer[] = [];
  for (const policy of POLICIES) for (const relation of RELATIONS) for (const block of BLOCKS) viewers.push({ name: top.viewer(viewers.length), policy, relation, block, asked: new Map() });

  for (const x of [...targets, ...viewers]) x.c = await top.login(x.name);
  for (const t of targets) await ok(t.c!, "privacy.set", { ls: t.ls, online: t.online });
  for (const v of viewers) {
    await ok(v.c!, "privacy.set", { ls: v.policy, online: v.policy });
    const names = targets.map((t) => t.name);
    if (v.relation === "viewer-lists-target" || v.relation === "both") await ok(v.c!, "contacts.add", { u: names });
    if (v.block === "viewer-blocks-target") for (const n of names) await ok(v.c!, "block.add", { u: n });
    for (const t of targets) {
      if (v.relation === "target-lists-viewer" || v.relation === "both") await ok(t.c!, "contacts.add", { u: [v.name] });
      if (v.block === "target-blocks-viewer") await ok(t.c!, "block.add", { u: v.name });
    }
  }

  // Subscribe, and ask once.
  for (const v of viewers) {
    await ok(v.c!, "presence.sub", { u: targets.map((t) => t.name) });
    for (const t of targets) {
      const r = await iq(v.c!, "presence", { u: t.name });
      v.asked.set(r.id, t.name);
    }
  }
  // Every target in use, then not; every viewer types to every target.
  for (const t of targets) await ok(t.c!, "presence.state", { s: "active" });
  for (const v of viewers) for (const t of targets) v.c!.send({ t: "pres", to: t.name, s: "typing" });
  for (const t of targets) await ok(t.c!, "presence.state", { s: "idle" });

  // Wait until every allowed final frame is in (offline after the grace, with last seen where shown).
  for (const v of viewers) {
    for (const t of targets) {
      const e = expected(t, v);
      if (!e.online && !e.ls) continue;
      await waitFor(() => psts(v.c!, t.name).some((f) => (e.online ? f.online === false : true) && (e.ls ? typeof f.ls === "number" : true)), `final frame: ${label(t, v)}`);
    }
  }
  // Typing that may pass, in: in a cluster it goes from the viewer's node to the target's on its own, and nothing
  // above (the targets' frames go the other way) orders it before this point.
  for (const v of viewers) {
    if (v.block !== "none" || v.relation === "none") continue;
    for (const t of targets) await waitFor(() => t.c!.received.some((s) => s.t === "pres" && (s as { u: string }).u === v.name), `typing from ${v.name} at ${t.name}: ${label(t, v)}`);
  }
  await Bun.sleep(GRACE * 2);
  for (const x of [...targets, ...viewers]) await barrier(x.c!);

  let pairs = 0;
  const failures: string[] = [];
  for (const v of viewers) {
    const subRes = v.c!.received.filter((s): s is Res => s.t === "res" && !!s.r && Array.isArray((s.r as { p?: unknown }).p));
    expect(subRes.length).toBe(1);
    const sub = subRes[0]!.r as { p: ({ u: string } & Record<string, unknown>)[]; no: string[] };
    for (const t of targets) {
      pairs++;
      const e = expected(t, v);
      const what = label(t, v);
      const shown: Record<string, unknown>[] = [];
      // Every frame about t: the subscription's answer, the presence answer, every pst.
      const entry = sub.p.find((x) => x.u === t.name);
      if (entry) shown.push(entry);
      if (!e.online && !e.ls) {
        if (entry || !sub.no.includes(t.name)) failures.push(`${what}: subscribed although nothing may be seen`);
      } else if (!entry) failures.push(`${what}: not subscribed although something may be seen`);
      for (const s of v.c!.received) if (s.t === "res" && v.asked.get(s.id) === t.name) shown.push((s.r ?? {}) as Record<string, unknown>);
      const frames = psts(v.c!, t.name);
      shown.push(...(frames as unknown as Record<string, unknown>[]));
      for (const f of shown) {
        if ("online" in f && !e.online) failures.push(`${what}: online sent: ${JSON.stringify(f)}`);
        if ("ls" in f && !e.ls) failures.push(`${what}: ls sent: ${JSON.stringify(f)}`);
      }
      // Completeness: what may be seen was seen.
      if (e.online && !frames.some((f: Pst) => f.online === true)) failures.push(`${what}: online never shown`);
      if (e.online && !frames.some((f: Pst) => f.online === false)) failures.push(`${what}: offline never shown`);
      if (e.ls && !frames.some((f: Pst) => typeof f.ls === "number")) failures.push(`${what}: last seen never shown`);
      if (frames.some((f) => f.end !== undefined)) failures.push(`${what}: subscription ended: ${JSON.stringify(frames)}`);
      // Typing: relayed only without a block and with a contact either way (no messages were sent).
      const typed = t.c!.received.filter((s) => s.t === "pres" && (s as { u: string }).u === v.name).length;
      const mayType = v.block === "none" && v.relation !== "none";
      if (typed !== (mayType ? 1 : 0)) failures.push(`${what}: ${typed} typing notices reached the target`);
    }
  }
  expect(pairs).toBe(9 * 36);
  expect(failures).toEqual([]);
  for (const x of [...targets, ...viewers]) x.c!.end();
}
