/**
 * An account's groups across nodes: 3 real `switchboard serve` processes and a private redis-server. A group lives
 * on the node it was created on, so one account's groups are spread over the nodes (lists.ts). Proves:
 * - `group.list` from any node lists every group of the caller, wherever it lives, each once, with its member
 *   count; after a `leave` on another node it is gone from the list;
 * - the per-account cap (`groups.max_per_account` 3 here) counts the groups on every node: a fourth group,
 *   created on another node or joined by `group.add` there, is refused with `too_many_groups` and nothing
 *   changes; after leaving one, the join passes;
 * - kill -9 of a node: `group.list` answers within its bounded wait with the groups of the nodes up and says
 *   `incomplete`; after the restart the list is whole again.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, allHeld, homeOf, plan, threeNodes } from "./three-nodes.ts";
import { ServerError, SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";

const TTL = 4000;
const { nodes, clients, device, args } = threeNodes(TTL, ["--groups-max-per-account", "3"]);

async function client(key: KeyFile): Promise<SwitchboardClient> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port: nodes.get(homeOf(key.account))!.tcp, key });
  clients.push(c);
  await c.connect();
  return c;
}
type List = { groups: { g: string; name: string; n: number }[]; incomplete?: boolean };
const sorted = (l: List) => [...l.groups].sort((x, y) => (x.name < y.name ? -1 : 1));
const groupNode = (g: string) => plan.ownerOf(shardOf(g))!;

describe("an account's groups across nodes", () => {
  test("group.list merges every node's groups; the per-account cap counts them all", async () => {
    const x = accountOn("n1", "lx"); // in a group on each node
    const [y, z] = [accountOn("n2", "ly"), accountOn("n3", "lz")];
    const [X, Y, Z] = [await client(await device(x)), await client(await device(y)), await client(await device(z))];
    const g1 = (await X.createGroup("g1 on n1", [y])).g;
    const g2 = (await Y.createGroup("g2 on n2", [x, z])).g;
    const g3 = (await Z.createGroup("g3 on n3", [x])).g;
    expect([g1, g2, g3].map(groupNode)).toEqual(["n1", "n2", "n3"]);
    expect(await X.request<List>("group.list")).toEqual({ groups: expect.any(Array) });
    expect(sorted(await X.request<List>("group.list"))).toEqual([
      { g: g1, name: "g1 on n1", n: 2 },
      { g: g2, name: "g2 on n2", n: 3 },
      { g: g3, name: "g3 on n3", n: 2 },
    ]);
    expect(sorted(await Y.request<List>("group.list")).map((r) => r.g)).toEqual([g1, g2]);

    // x is in 3 groups, one per node: a fourth anywhere is over its cap of 3.
    const refused = async (p: Promise<unknown>) => {
      const e = await p.then(() => null, (err) => err as ServerError);
      expect(e).toBeInstanceOf(ServerError);
      expect(e!.code).toBe(ErrorCode.TOO_MANY_GROUPS);
      expect(e!.message).toContain(x);
    };
    await refused(Y.createGroup("g4 on n2", [x])); // created on n2, which holds one of x's groups
    const g5 = (await Z.createGroup("g5 on n3", [])).g;
    await refused(Z.addMembers(g5, [x])); // joined on n3, which holds one of x's groups
    await refused(X.createGroup("g6 on n1", [])); // x's own: n1 holds one of them
    expect(sorted(await X.request<List>("group.list")).map((r) => r.g)).toEqual([g1, g2, g3]);

    // Leaving the group on n2 (from n1): gone from the list, and there is room for one more.
    await X.request("group.leave", { g: g2 });
    expect(sorted(await X.request<List>("group.list")).map((r) => r.g)).toEqual([g1, g3]);
    await Z.addMembers(g5, [x]);
    expect(sorted(await X.request<List>("group.list")).map((r) => r.g)).toEqual([g1, g3, g5]);
  }, 120_000);

  test("kill -9 of a node: group.list answers without its groups and says incomplete; whole again after its restart", async () => {
    const x = accountOn("n1", "kx");
    const z = accountOn("n3", "kz");
    const [X, Z] = [await client(await device(x)), await client(await device(z))];
    const g1 = (await X.createGroup("k1 on n1", [z])).g;
    const g3 = (await Z.createGroup("k3 on n3", [x])).g;
    expect(sorted(await X.request<List>("group.list")).map((r) => r.g)).toEqual([g1, g3]);
    const n3 = nodes.get("n3")!;
    await n3.kill9();
    const partial = await X.request<List>("group.list");
    expect(partial).toEqual({ groups: [{ g: g1, name: "k1 on n1", n: 2 }], incomplete: true });
    await n3.restart(args("n3"));
    await allHeld(nodes);
    const whole = await X.request<List>("group.list");
    expect(whole.incomplete).toBeUndefined();
    expect(sorted(whole).map((r) => r.g)).toEqual([g1, g3]);
  }, 120_000);
});
