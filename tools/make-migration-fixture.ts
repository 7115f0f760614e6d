/**
 * Writes test/fixtures/data-3337863/: a data directory written by the first
 * release's own server (3337863), for test/store/migration.test.ts. The test
 * then needs no checkout of the old release (CI has none): it copies the
 * fixture and checks today's server migrates it and delivers what it holds.
 *
 * How it was made (run once; rerun only to change what the fixture holds):
 *
 *   git worktree add --detach /work/wt/base 3337863   # or any checkout of 3337863
 *   bun tools/make-migration-fixture.ts /work/wt/base
 *
 * The script runs a small writer under the old release's code (its harness,
 * its server, its SDK, cwd = the checkout): alice sends 25 messages to bob,
 * who never connects (they stay queued); she sends 3 to carol, who is online,
 * reads them up to the last one (a 1:1 read mark) and disconnects (last seen).
 * The directory is copied without what a server makes anew when it is
 * missing and what is not data: tls/ (a dev certificate) and canary/ (the
 * canary's device keys; private keys have no place in the tree), lock.db and
 * lock.pid, and the empty -wal/-shm files of a clean stop. fixture.json
 * records the key files of alice, bob and carol, the bodies sent to bob,
 * carol's read mark and her last-seen time as the old server stored them.
 */
import { Database } from "bun:sqlite";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const BASE = resolve(process.argv[2] ?? process.env.SWITCHBOARD_BASE ?? "/work/wt/base");
const COMMIT = "3337863";
const OUT = resolve(import.meta.dir, "../test/fixtures/data-3337863");
const N = 25;

const head = Bun.spawnSync(["git", "-C", BASE, "rev-parse", "HEAD"]).stdout.toString().trim();
if (!head.startsWith(COMMIT)) {
  console.error(`${BASE} is not a checkout of ${COMMIT} (HEAD is ${head || "unknown"}); make one with: git worktree add --detach ${BASE} ${COMMIT}`);
  process.exit(1);
}

const work = mkdtempSync(join(tmpdir(), "sb-fixture-"));
const dataDir = join(work, "data");
const writer = join(work, "old-writer.ts");
writeFileSync(
  writer,
  `import { startServer } from ${JSON.stringify(join(BASE, "test/helpers/harness.ts"))};
const srv = await startServer({ dataDir: ${JSON.stringify(dataDir)} });
const alice = await srv.newDevice("alice");
const bob = await srv.newDevice("bob");
const carol = await srv.newDevice("carol");
const a = await srv.client(alice);
const bodies = [];
for (let i = 0; i < ${N}; i++) {
  const text = "old message " + i;
  await a.send("bob", new TextEncoder().encode(text)); // resolves on sent: durable
  bodies.push(text);
}
const seen = [];
const c = await srv.client(carol, { setup: (cl) => cl.on("message", (m) => { seen.push(m.seq); cl.ack(m.q); }) });
let readSeq = 0;
for (let i = 0; i < 3; i++) readSeq = (await a.send("carol", new TextEncoder().encode("to carol " + i))).seq;
const read = new Promise((ok) => a.on("receipt", (r) => { if (r.kind === "read" && r.seq === readSeq) ok(); }));
while (!seen.includes(readSeq)) await Bun.sleep(10);
c.markRead("alice", readSeq);
await read; // the server stored the mark before it sent the receipt
await c.close();
await a.close();
if ((await srv.stop()) !== 0) throw new Error("old server did not stop cleanly");
console.log(JSON.stringify({ alice, bob, carol, bodies, readSeq }));
`,
);
const p = Bun.spawn([process.execPath, writer], { cwd: BASE, stdout: "pipe", stderr: "inherit" });
const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
if (code !== 0) {
  console.error(`the ${COMMIT} writer failed (exit ${code}): ${out}`);
  process.exit(1);
}
const r = JSON.parse(out.trim().split("\n").pop()!) as { alice: unknown; bob: unknown; carol: unknown; bodies: string[]; readSeq: number };

const accounts = new Database(join(dataDir, "accounts.db"), { readonly: true });
const lastSeen = (accounts.query("SELECT last_seen FROM accounts WHERE name = 'carol'").get() as { last_seen: number | null }).last_seen;
const mark = (accounts.query("SELECT seq FROM read_marks WHERE account = 'carol' AND peer = 'alice'").get() as { seq: number } | null)?.seq;
accounts.close();
if (lastSeen === null || mark !== r.readSeq) throw new Error(`the old server did not store carol's last seen (${lastSeen}) or read mark (${mark}, expected ${r.readSeq})`);

rmSync(OUT, { recursive: true, force: true });
for (const f of walFiles(dataDir)) if (statSync(f).size > 0) throw new Error(`${f} still holds frames after a clean stop; the fixture would lose them`);
cpSync(dataDir, OUT, { recursive: true, filter: (src) => !/\/(tls|canary|lock\.db|lock\.pid)$/.test(src) && !/-(wal|shm)$/.test(src) });
writeFileSync(
  join(OUT, "fixture.json"),
  JSON.stringify({ madeBy: `tools/make-migration-fixture.ts on ${COMMIT}`, alice: r.alice, bob: r.bob, carol: r.carol, bodies: r.bodies, carolReadMark: { peer: "alice", seq: r.readSeq }, carolLastSeen: lastSeen }, null, 2) + "\n",
);
rmSync(work, { recursive: true, force: true });

let bytes = 0;
const walk = (d: string): void => {
  for (const f of readdirSync(d)) {
    const x = join(d, f);
    if (statSync(x).isDirectory()) walk(x);
    else bytes += statSync(x).size;
  }
};
walk(OUT);
console.log(`wrote ${OUT} (${bytes} bytes)${existsSync(join(OUT, "queues")) ? "" : " WITHOUT queues/"}`);

function walFiles(d: string): string[] {
  return readdirSync(d, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith("-wal")).map((f) => join(d, f));
}
