/**
 * The open loop of a load worker (worker.ts, groups-worker.ts): messages go
 * out at the worker's share of the target rate, round robin over its
 * senders, each stamped with its intended send time rather than the moment
 * it is written, so a stall in the generator or the server shows up as
 * latency (no coordinated omission).
 */
import { flushAll } from "./lean.ts";

export interface OpenLoopSender {
  /** Messages this sender may write; 0 = until stopped. */
  quota: number;
  /** The number its next message gets (from 1). */
  next: number;
}

/**
 * Starts the loop (a 1 ms timer); `emit` writes one message of `o` for
 * `intended` (performance.now() ms); `lag` is told how late, in µs, each was
 * written; the loop ends when `running()` says so or its stop function is called.
 */
export function startOpenLoop<S extends OpenLoopSender>(
  senders: S[],
  ratePerS: number,
  emit: (o: S, intended: number) => void,
  lag: (us: number) => void,
  running: () => boolean,
): () => void {
  const t0 = performance.now();
  const perMs = ratePerS / 1000;
  let issued = 0;
  let rr = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const tick = () => {
    if (!running()) return;
    const now = performance.now();
    const due = Math.floor((now - t0) * perMs);
    let active = senders.length;
    while (issued < due && active > 0) {
      const o = senders[rr]!;
      rr = (rr + 1) % senders.length;
      if (o.quota !== 0 && o.next > o.quota) {
        active--;
        continue;
      }
      const intended = t0 + issued / perMs;
      emit(o, intended);
      lag(Math.max(1, Math.round((now - intended) * 1000)));
      issued++;
    }
    flushAll();
    timer = setTimeout(tick, 1);
  };
  tick();
  return () => {
    if (timer) clearTimeout(timer);
  };
}
