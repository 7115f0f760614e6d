/**
 * `loadtest calls`, a tiny run: its result line's shape, the counts adding
 * up, and the shedding order it shows (group calls refused first, then 1:1,
 * the established call's signals going on). No timings are asserted.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ROOT } from "./relay-process.ts";

test("loadtest calls --calls 2 --duration 2 --overload", async () => {
  const p = Bun.spawn([process.execPath, join(ROOT, "loadtest/main.ts"), "calls", "--calls", "2", "--duration", "2", "--overload", "--relay-cpus", "", "--server-cpus", ""], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const line = out.trim().split("\n").reverse().find((l) => l.startsWith("{\"scenario\""));
  expect(line, `${out}\n${err}`).toBeDefined();
  const r = JSON.parse(line!);
  expect(r.params).toEqual({ calls: 2, duration: 2, pps: 50 });
  expect(r.sent).toBe(2 * 2 * 2 * 50); // calls x directions x seconds x pps
  expect(r.lost).toBe(r.lost_by_direction[0] + r.lost_by_direction[1]);
  for (const k of ["p50", "p99", "max"]) expect(typeof r.latency_ms[k]).toBe("number");
  expect(typeof r.added_latency_ms.p99).toBe("number");
  expect(r.shedding.levels.map((l: any) => [l.group, l.direct])).toEqual([["rang", "rang"], ["overloaded", "rang"], ["overloaded", "overloaded"]]);
  expect(r.shedding.established_call_signals_ok).toBe(true);
  expect(code).toBe(r.lost === 0 ? 0 : 1); // the exit status says whether anything was lost
}, 120_000);
