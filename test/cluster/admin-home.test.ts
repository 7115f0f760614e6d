/**
 * The admin API's account operations in a cluster (src/core/admin.ts `check`): 3 real `switchboard serve`
 * processes and a private redis-server. An account's rows and sessions are on its home only, and a shard move
 * ships a snapshot of them, so a delete, disable, enable or kick is done on the home, never elsewhere and never
 * while the shard is frozen for a move:
 * - on a node that is not the account's home: refused `forbidden`, the message naming the home;
 * - on the home while its shard is frozen (n3, the target, SIGSTOPped so the move stays between its snapshot and
 *   its flip): refused `retry_after` (HTTP 503) with `retry_ms`. Before, n1 deleted the account there, the snapshot already on
 *   its way kept it at n3, and the deleted account's device logged in again at its new home (checked by mutation:
 *   without the check the device is `ready` at n3 after the move);
 * - after the flip: refused on the old home (naming n3), done on the new one, and the device's login is refused.
 */
import { expect, test } from "bun:test";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor, type TestServer } from "../helpers/harness.ts";
import { accountOn, threeNodes } from "./three-nodes.ts";

// Long enough that n3, stopped for the few seconds of the freeze, keeps its heartbeat and leases.
const TTL = 10_000;
const { nodes, device, connect } = threeNodes(TTL);

type Answer = { ok: boolean; reason?: string; message?: string; retry_ms?: number };
const admin = (n: TestServer, name: string, op: string) =>
  fetch(`http://127.0.0.1:${n.http}/admin/users/${name}/${op}`, { method: "POST" }).then((r) => r.json() as Promise<Answer>);

test("delete, disable, kick: done on the account's home only, refused elsewhere and while its shard is frozen for a move", async () => {
  const [n1, n2, n3] = [nodes.get("n1")!, nodes.get("n2")!, nodes.get("n3")!];
  const r = accountOn("n1", "ah_");
  const kf = await device(r);
  const closes: string[] = [];
  const c = await connect(kf, "n1", (c) => c.on("close", (i) => void closes.push(String(i.reason))));
  for (const op of ["delete", "disable", "enable", "devices/1/kick"]) {
    const a = await admin(n2, r, op);
    expect(a).toMatchObject({ ok: false, reason: "forbidden" });
    expect(a.message).toContain("homed on node n1");
  }
  expect(c.isReady).toBe(true); // n2 closed nothing

  n3.proc.kill("SIGSTOP");
  let move: Promise<{ ok: boolean }> | undefined;
  try {
    move = fetch(`http://127.0.0.1:${n1.http}/cluster/move?shard=${shardOf(r)}&to=n3`, { method: "POST" }).then((a) => a.json() as Promise<{ ok: boolean }>);
    // The freeze closes r's session in the same turn as the snapshot is taken: from here the rows are on their way.
    await waitFor(() => closes.length > 0, "r's device closed by the freeze", 30_000);
    for (const op of ["delete", "disable"]) {
      const a = await admin(n1, r, op);
      expect(a).toMatchObject({ ok: false, reason: "retry_after" });
      expect(a.retry_ms).toBeGreaterThan(0);
    }
  } finally {
    n3.proc.kill("SIGCONT");
  }
  expect(await move).toMatchObject({ ok: true });
  await waitFor(() => c.isReady && c.hello !== undefined, "the device back, at n3", 30_000);
  const old = await admin(n1, r, "delete");
  expect(old).toMatchObject({ ok: false, reason: "forbidden" });
  expect(old.message).toContain("homed on node n3");
  expect(await admin(n3, r, "delete")).toMatchObject({ ok: true });
  // Its session closed as revoked; its next login, by ticket or by key, is refused at n3.
  await waitFor(() => closes.includes("revoked"), "the session closed by the delete", 30_000);
  await c.close();
  const raw = await n3.raw();
  await expect(raw.login(kf)).rejects.toThrow();
  raw.end();
}, 90_000);
