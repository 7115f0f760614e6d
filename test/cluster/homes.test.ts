/**
 * A move's intent and its outcome (homes.ts, scripts.ts OUTCOME) against a real redis-server: each node is a
 * ShardHomes on its own cluster.db (a real file, with its ShardFence), as the server has it. The cases a restarted
 * mover meets (the double failure, CLUSTER.md "Moving shards"): the flip in `sb:homes`; Redis that kept its memory
 * (the flip never ran); Redis that lost it, with the target not merged since (the shard waits) and then merged
 * without a record of the move (the mover takes it back above the flip's epoch, and a third node's copy of the
 * flip no longer wins the merge).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ShardFence } from "../../src/core/cluster/fence.ts";
import { ShardHomes } from "../../src/core/cluster/homes.ts";
import { RedisLink } from "../../src/core/cluster/redis.ts";
import { waitFor } from "../helpers/harness.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const PLAN = ["n1", "n1", "n2", "n3"]; // shard → placement (4 shards are enough here)
let redis: TestRedis;
let link: RedisLink;
const dirs: string[] = [];
const fences: ShardFence[] = [];

function node(id: string): { homes: ShardHomes; fence: ShardFence; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), `sb-homes-${id}-`));
  dirs.push(dir);
  const fence = new ShardFence(join(dir, "cluster.db"));
  fences.push(fence);
  return { homes: new ShardHomes(fence, PLAN, id), fence, dir };
}

beforeAll(async () => {
  redis = await startRedis();
  link = new RedisLink(redis.url, { commandTimeoutMs: 1000 }).start();
  await waitFor(() => link.up, "the link");
});
afterAll(() => {
  link.close();
  for (const f of fences) f.close();
  redis.cleanup();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("a move's intent", () => {
  test("Redis kept its memory and has no flip: the flip never ran, the shard is this node's again", async () => {
    const { homes } = node("n1");
    await homes.sync(link); // sets sb:boot
    const boot = await redis.cli("GET", "sb:boot");
    homes.intend([0], [4], "n2", boot);
    expect(homes.ownerOf(0)).toBe("n2"); // not taken here while the outcome is unknown
    expect(homes.settle(0)).toBe(false); // the mover learned nothing: left to the merges
    expect(await homes.sync(link)).toEqual([0]);
    expect([homes.ownerOf(0), homes.moving(0)]).toEqual(["n1", false]);
  });

  test("the flip is in sb:homes: recorded as the home, the intent cleared; it survives a restart of the node", async () => {
    const { homes: before, fence } = node("n1");
    before.intend([1], [4], "n2", "an older boot");
    await redis.cli("HSET", "sb:homes", "1", "n2|5"); // the flip; the mover is killed before it records it
    const homes = new ShardHomes(fence, PLAN, "n1"); // its restart: the intent is read from its cluster.db
    expect([homes.ownerOf(1), homes.moving(1)]).toEqual(["n2", true]);
    expect(await homes.sync(link)).toEqual([1]);
    expect([homes.ownerOf(1), homes.epochOf(1), homes.moving(1)]).toEqual(["n2", 5, false]);
    const again = new ShardHomes(fence, PLAN, "n1"); // the same cluster.db, read at a start
    expect([again.ownerOf(1), again.moving(1)]).toEqual(["n2", false]);
  });

  test("Redis lost the flip: the shard waits for the target, which then merged no record of it: taken back above the flip", async () => {
    await redis.kill9();
    await redis.restart();
    await waitFor(() => link.up, "the link again");
    const a = node("n1");
    a.homes.intend([3], [7], "n2", "the boot before the restart");
    // The intent survives the mover's restart (read from its cluster.db).
    const mover = new ShardHomes(a.fence, PLAN, "n1");
    expect(mover.moving(3)).toBe(true);
    expect(await mover.sync(link)).toEqual([]); // n2 has not merged into this Redis: unknown, the shard waits
    expect(mover.ownerOf(3)).toBe("n2");
    const target = node("n2");
    await target.homes.sync(link); // n2 is back and merges: it never recorded the move
    expect(await mover.sync(link)).toEqual([3]);
    expect([mover.ownerOf(3), mover.epochOf(3), mover.moving(3)]).toEqual(["n1", 9, false]);
    expect(a.fence.epoch(3)).toBe(9); // the next lease of shard 3 here is above 9
    expect(await redis.cli("HGET", "sb:homes", "3")).toBe("n1|9");
    // A third node that heard of the flip (pub/sub) before Redis lost it merges its copy: the mover's home wins.
    const third = node("n3");
    third.homes.record(3, "n2", 8);
    expect(await third.homes.sync(link)).toEqual([3]);
    expect(third.homes.ownerOf(3)).toBe("n1");
    expect(await redis.cli("HGET", "sb:homes", "3")).toBe("n1|9");
  });

  test("the leftovers step: run (with the intent's note) only when the outcome names another node, the intent kept until it is done", async () => {
    // The flip never ran (Redis kept its memory, no move of shard 2): nothing is shipped, the shard is this node's.
    const a = node("n2");
    await a.homes.sync(link);
    const calls: [number, string, string | null][] = [];
    a.homes.away = (s, to, i) => void calls.push([s, to, i.note]);
    a.homes.intend([2], [4], "n3", await redis.cli("GET", "sb:boot"), ["the ledger"]);
    expect(a.homes.settle(2)).toBe(false);
    expect(await a.homes.sync(link)).toEqual([2]);
    expect([calls, a.homes.ownerOf(2), a.homes.moving(2)]).toEqual([[], "n2", false]);

    // The flip ran (in sb:homes), the mover was killed before its leftovers: its restart runs the step with the note.
    const b = node("n2");
    b.homes.intend([2], [6], "n3", "any boot", ["the ledger"]);
    await redis.cli("HSET", "sb:homes", "2", "n3|7");
    const restarted = new ShardHomes(b.fence, PLAN, "n2");
    restarted.away = (s, to, i) => void calls.push([s, to, i.note]);
    expect(await restarted.sync(link)).toContain(2);
    expect([calls, restarted.ownerOf(2), restarted.moving(2)]).toEqual([[[2, "n3", "the ledger"]], "n3", true]);
    await restarted.sync(link);
    expect(calls.length).toBe(1); // not again while it runs
    restarted.done(2, false); // the target did not ack: the next merge tries again
    await restarted.sync(link);
    expect(calls.length).toBe(2);
    restarted.done(2, true);
    expect(restarted.moving(2)).toBe(false);
    await restarted.sync(link);
    expect(calls.length).toBe(2);
    const again = new ShardHomes(b.fence, PLAN, "n2"); // cleared in cluster.db too, with its note
    expect([again.ownerOf(2), again.moving(2)]).toEqual(["n3", false]);
    expect(b.fence.db.query("SELECT count(*) AS n FROM shard_moving_note").get()).toEqual({ n: 0 });
  });
});
