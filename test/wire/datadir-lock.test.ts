/**
 * One server per data directory (src/store/lock.ts): a second server on a
 * directory in use refuses to start and names the pid that holds it; after
 * `kill -9` of the holder a restart takes the directory without cleanup.
 * Real server processes throughout.
 */
import { afterAll, expect, test } from "bun:test";
import { BUN, MAIN, ROOT, startServer, type TestServer } from "../helpers/harness.ts";

let srv: TestServer | null = null;
afterAll(() => srv?.cleanup());

/** Runs a second `serve` on the directory; returns its exit status and what it said on stderr. */
async function secondServer(dataDir: string): Promise<{ code: number; stderr: string }> {
  const p = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dataDir, "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0", "--log-level", "warn"], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const killer = setTimeout(() => p.kill("SIGKILL"), 20_000); // if it wrongly started, it would serve for ever
  const code = await p.exited;
  clearTimeout(killer);
  return { code, stderr: await new Response(p.stderr).text() };
}

test("a second server on a data directory in use refuses to start, naming the holder's pid; kill -9 frees it", async () => {
  srv = await startServer();
  const first = await secondServer(srv.dataDir);
  expect(first.code).toBe(1);
  expect(first.stderr).toContain(`is in use by another switchboard server (pid ${srv.proc.pid})`);

  // The holder dies without cleaning up: its lock dies with it, and the restart needs no manual step.
  const old = srv.proc.pid;
  await srv.kill9();
  await srv.restart();
  expect(srv.proc.pid).not.toBe(old);
  const raw = await srv.raw();
  await raw.hello(); // it serves
  raw.end();
  const again = await secondServer(srv.dataDir);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain(`(pid ${srv.proc.pid})`);

  // A clean stop releases it too.
  expect(await srv.stop()).toBe(0);
  await srv.restart();
  const raw2 = await srv.raw();
  await raw2.hello();
  raw2.end();
}, 60_000);
