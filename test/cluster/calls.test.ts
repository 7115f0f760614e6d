/**
 * Call signaling across cluster nodes (3 real nodes, a private redis-server):
 * a caller homed on n1 rings a callee homed on n2, both of whose devices ring
 * there; one answers, the caller gets the answer on n1 and the other device
 * stops; ICE and hangup cross back; an unanswered call to a callee on n3
 * leaves its missed-call notice there.
 */
import { describe, expect, test } from "bun:test";
import { callControl } from "../../src/client/calls.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import type { CallSignal } from "../../src/client/types.ts";
import { waitFor } from "../helpers/harness.ts";
import { accountOn, homeOf, threeNodes } from "./three-nodes.ts";

const t = threeNodes(3000);

async function online(kf: KeyFile) {
  const signals: CallSignal[] = [];
  const missed: { from: string; id: string }[] = [];
  const c = await t.nodes.get(homeOf(kf.account))!.client(kf, {
    setup: (c) => {
      c.on("call", (s) => signals.push(s));
      c.on("missedCall", (m) => missed.push(m));
    },
  });
  t.clients.push(c);
  return { c, kf, calls: callControl(c), signals, missed };
}
type Online = Awaited<ReturnType<typeof online>>;
const until = async (o: Online, kind: string, id: string) => {
  await waitFor(() => o.signals.some((s) => s.kind === kind && s.id === id), `${kind} of ${id} at ${o.kf.account}/${o.kf.device}`);
  return o.signals.find((s) => s.kind === kind && s.id === id)!;
};

describe("calls across nodes", () => {
  test("ring on n2 from n1, answer, stop, ice and hangup back; a missed call on n3", async () => {
    const a = accountOn("n1", "caller");
    const b = accountOn("n2", "callee");
    const m = accountOn("n3", "missed");
    const caller = await online(await t.device(a));
    const callee = [await online(await t.device(b)), await online(await t.device(b))];
    const id = await caller.calls.call(b, (d) => new Uint8Array([d]));
    const offers = await Promise.all(callee.map((c) => until(c, "offer", id)));
    expect(offers.map((o) => o.payload![0])).toEqual(callee.map((c) => c.kf.device));
    callee[0]!.calls.answer(offers[0]!, new Uint8Array([7]));
    const answer = await until(caller, "answer", id);
    expect(answer.payload).toEqual(new Uint8Array([7]));
    expect((await until(callee[1]!, "stop", id)).why).toBe("answered");
    caller.calls.ice(b, id, callee[0]!.kf.device, new Uint8Array([1]));
    await until(callee[0]!, "ice", id);
    callee[0]!.calls.ice(a, id, caller.kf.device, new Uint8Array([2]));
    await until(caller, "ice", id);
    callee[0]!.calls.hangup(a, id, caller.kf.device);
    await until(caller, "hangup", id);

    const missedKey = await t.device(m);
    const gone = await caller.calls.call(m, () => new Uint8Array([3]));
    await waitFor(async () => (await t.nodes.get("n3")!.http_get("/metrics")).text.includes("switchboard_calls_ringing 1"), "the ring on n3");
    caller.calls.hangup(m, gone);
    const late = await online(missedKey);
    await waitFor(() => late.missed.length > 0, "the missed call on n3");
    expect(late.missed[0]).toMatchObject({ from: a, id: gone });
  });
});
