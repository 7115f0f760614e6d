/**
 * A shard holding more than one link frame's worth of queued messages moves in chunks: 3 real `switchboard serve`
 * processes and a private redis-server, the default chunk size (cluster.move_chunk_bytes, 4 MiB). An account of n1
 * has 20 messages of 900 000 bytes queued for its offline device (about 18 MiB: more than HARD_MAX_FRAME, so one
 * `S` item for the shard could not be sent at all; before chunks the move timed out and the shard stayed);
 * `POST /cluster/move` sends its shard to n2. Proves: the move succeeds in several chunks, the new home holds the
 * shard, and the device, logging in through the old home, is redirected and gets the 20 messages from the new home
 * once, in order, byte for byte. The cut itself (sizes, order, every kind of row) is in chunks.test.ts; rows of every
 * kind over a chunk in move-rows.test.ts; kill -9 mid-shipment is move-kill.test.ts, with chunks of 1 KiB there.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, status, threeNodes } from "./three-nodes.ts";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { waitFor } from "../helpers/harness.ts";
import { HARD_MAX_FRAME } from "../../src/protocol/frame.ts";

const TTL = 4000;
const SIZE = 900_000;
const COUNT = 20;
const { nodes, device, connect: client } = threeNodes(TTL, ["--limits-max-frame", String(1 << 20)]);
const text = (p: Uint8Array) => new TextDecoder().decode(p);
const body = (k: number) => `c${k}:`.padEnd(SIZE, String.fromCharCode(97 + (k % 26)));

describe("chunked shard shipments", () => {
  test(`a shard with ${COUNT} x ${SIZE} bytes queued (more than one link frame) moves whole`, async () => {
    expect(COUNT * SIZE).toBeGreaterThan(HARD_MAX_FRAME);
    const r = accountOn("n1", "cb_");
    const s = accountOn("n3", "cs_");
    const [ks, kr] = [await device(s), await device(r)];
    const cs = await client(ks, "n3");
    for (let k = 0; k < COUNT; k++) await cs.send(r, body(k));
    const src = nodes.get("n1")!;
    const res = (await fetch(`http://127.0.0.1:${src.http}/cluster/move?shard=${shardOf(r)}&to=n2`, { method: "POST" }).then((x) => x.json())) as Record<string, unknown>;
    expect(res).toMatchObject({ ok: true, shards: 1, items: COUNT });
    expect(res.chunks as number).toBeGreaterThanOrEqual(4); // 18 MiB in chunks of at most 4 MiB
    expect((await status(nodes.get("n2")!)).held).toBeGreaterThan(0);
    const got: string[] = [];
    await client(kr, "n1", (c) => c.on("message", (m) => void got.push(text(m.payload))));
    await waitFor(() => got.length >= COUNT, `all ${COUNT} messages (have ${got.length})`, 90_000);
    await Bun.sleep(500); // a duplicate would arrive right behind
    expect(got.length).toBe(COUNT);
    for (let k = 0; k < COUNT; k++) expect(got[k] === body(k)).toBe(true);
  }, 240_000);
});
