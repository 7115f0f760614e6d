/** The `push` load scenario, tiny: its result line's shape and integrity counters (never timings). */
import { expect, test } from "bun:test";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");

test("push scenario: 40 offline devices, 2 SIGKILLs: every device with messages woken, no job lost, no extra fields", async () => {
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), "push", "--devices", "40", "--messages", "200", "--kills", "2", "--server-cpus", ""], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) console.error(out, err);
  const lines = out.trim().split("\n");
  expect(lines.filter((l) => l.startsWith("{"))).toHaveLength(1);
  const r = JSON.parse(lines.at(-1)!);
  expect(code).toBe(0);
  expect(r).toMatchObject({ scenario: "push", params: { devices: 40, messages: 200, kills: 2 }, acked: 600, devices_messaged: 40, jobs_lost: 0, bad_signatures: 0, extra_fields: 0 });
  expect(r.pushes_per_device.median).toBeGreaterThanOrEqual(1);
  expect(lines.some((l) => l.startsWith("push: pushes per offline device"))).toBe(true);
}, 120_000);
