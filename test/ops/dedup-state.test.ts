/**
 * tools/dedup-state.ts (issue 20 target 5's report), run as a process on a real server's data directory: the
 * acceptance records it counts are the ones the server left (an old client's `accepted` rows, none for a
 * confirming one), with their bytes, and each of its starts reaches listening, /readyz and the keys loaded, in
 * that order of events, and stops cleanly. After a kill -9 the first start finds the WAL files the kill left.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { ROOT, startServer, type TestServer } from "../helpers/harness.ts";
import { barrier, confirming } from "../wire/util.ts";

// A bound on waiting for subprocesses, not a timing assertion.
setDefaultTimeout(60_000);

const servers: TestServer[] = [];
afterAll(() => servers.forEach((s) => s.cleanup()));

async function tool(dir: string, args: string[]): Promise<any> {
  const p = Bun.spawn([process.execPath, `${ROOT}/tools/dedup-state.ts`, "--data-dir", dir, ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`dedup-state exited ${code}: ${err}`);
  return JSON.parse(out.trim().split("\n").pop()!);
}

const p = new Uint8Array([1, 2, 3]);

test("rows and bytes of the records an old client left and a confirming one did not; timed starts after kill -9 and after a clean stop", async () => {
  // A confirming sender's record is written only if its confirmation comes more than one to two commit windows after
  // its `sent`: a 200 ms window, so that "none written" does not depend on a busy machine answering within 5 ms.
  const s = await startServer({ args: ["--canary-interval", "0", "--queue-commit-ms", "200"] });
  servers.push(s);
  const bob = await s.newDevice("bob");
  const rb = await s.raw();
  await rb.login(bob);
  // Bob never acks: his 50 copies stay queued (items), and no receipt is queued back to the senders.

  const old = await s.raw(); // no sc: a record kept for the retention per message
  await old.login(await s.newDevice("carol"));
  for (let i = 0; i < 30; i++) old.send({ t: "msg", id: `c${i}`, to: "bob", p: [[bob.device, p]] });
  for (let i = 0; i < 30; i++) await old.expect("sent");
  const a = await confirming(s, await s.newDevice("alice"));
  for (let i = 0; i < 20; i++) a.send({ t: "msg", id: `a${i}`, to: "bob", p: [[bob.device, p]] });
  for (let i = 0; i < 20; i++) await a.expect("sent");
  a.send({ t: "ack", sc: 20 });
  await barrier(a);
  await barrier(rb);

  // Live (--no-start): read beside the running server.
  const live = await tool(s.dataDir, ["--no-start"]);
  expect(live.starts).toEqual([]);
  expect(live.rows.accepted).toBe(30);

  await s.kill9();
  const r = await tool(s.dataDir, ["--runs", "2"]);
  expect(r.files.wal).toBeGreaterThan(0); // left by the kill: the first start recovers it
  expect(r.files.total).toBe(r.files.db + r.files.wal + r.files.shm);
  expect(r.rows).toEqual({ accepted: 30, unconfirmed: 0, items: 50 });
  expect(r.table_bytes.accepted).toBeGreaterThan(0);
  expect(r.starts.length).toBe(2);
  for (const st of r.starts) {
    expect(st.listening_ms).toBeGreaterThan(0);
    expect(st.ready_ms).toBeGreaterThanOrEqual(st.listening_ms); // /readyz is asked only after the listening line
    expect(st.keys_loaded_ms).toBeGreaterThanOrEqual(st.listening_ms);
  }
  expect(r.after_clean_stop_median).toEqual(r.starts[1]);
});
