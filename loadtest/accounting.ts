/**
 * Adding up what the workers counted (sent, delivered, lost, duplicates,
 * out of order) and turning it into the run's verdict and exit status.
 */
import type { Totals, WindowStats } from "./ipc.ts";
import { merge, summary, type LatencySummary } from "./stats.ts";

/** The workers' totals, summed field by field. */
export function sumTotals(all: Totals[]): Totals {
  const tot: Totals = { ...all[0]! };
  for (const t of all.slice(1)) for (const k of Object.keys(tot) as (keyof Totals)[]) tot[k] += t[k];
  return tot;
}

/** The measured windows of the workers: counts summed, histograms merged. */
export function sumWindows(windows: WindowStats[]) {
  const sum = (f: (w: WindowStats) => number) => windows.reduce((a, w) => a + f(w), 0);
  return {
    counts: { sent: sum((w) => w.sent), delivered: sum((w) => w.delivered), acked: sum((w) => w.acked), receipts: sum((w) => w.receipts) },
    /** send -> msg at the recipient */
    delivery: summary(merge(windows.map((w) => w.hist))),
    /** send -> sent */
    sent: summary(merge(windows.map((w) => w.sent_hist))),
    /** send -> dlv receipt at the sender (groups: the last member's) */
    receipt: summary(merge(windows.map((w) => w.rcpt_hist))),
    /** open loop: intended send time -> written */
    lag: summary(merge(windows.map((w) => w.lag_hist))),
  };
}

/** A latency summary as the result lines carry it. */
export function latencyJson(s: LatencySummary) {
  return { p50: s.p50, p90: s.p90, p99: s.p99, p999: s.p999, max: s.max, mean: s.mean, count: s.count };
}

/** The banner of a loss: `what` the server had acknowledged and never delivered, with a few examples. */
export function lostBanner(n: number, ids: string[], what = "MESSAGES"): string {
  return `!!!!!!!! LOST ${n} ${what} THE SERVER HAD ACKNOWLEDGED WITH "sent" !!!!!!!!  e.g. ${ids.join(", ")}`;
}

/**
 * The exit status of a run that moved messages, with its banner on stderr:
 * 1 a loss (`lost`: its banner, or null), 3 duplicates or out-of-order
 * deliveries, 4 anything else wrong (`warning`: what, or null), 0 clean.
 */
export function verdict(v: { lost: string | null; duplicates: number; outOfOrder: number; integrityNote?: string; warning: string | null }): number {
  if (v.lost) {
    console.error(`\n${v.lost}\n`);
    return 1;
  }
  if (v.duplicates > 0 || v.outOfOrder > 0) {
    console.error(`\n!!!! INTEGRITY: ${v.duplicates} duplicate and ${v.outOfOrder} out-of-order deliveries !!!!${v.integrityNote ?? ""}\n`);
    return 3;
  }
  if (v.warning) {
    console.error(`\nloadtest: WARNING: ${v.warning}\n`);
    return 4;
  }
  return 0;
}
