/**
 * Prometheus text exposition with no dependency but hdr-histogram-js.
 * Counters are plain numbers bumped on the hot path (no label maps there:
 * labelled counters are created once and kept by the caller). Gauges are
 * read through callbacks at scrape time, so they cost nothing in between.
 */
import * as hdr from "hdr-histogram-js";

type Labels = Record<string, string>;

function fmtLabels(labels: Labels | undefined): string {
  if (!labels) return "";
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

export class Counter {
  value = 0;
  constructor(readonly labels?: Labels) {}
  inc(n = 1): void {
    this.value += n;
  }
}

/**
 * What `metrics.enabled = false` hands out: the same shape, recording
 * nothing. Every counter of such a server is one of these, so each call site
 * still sees a single class (no polymorphic call on the hot path); the point
 * is to measure what recording costs (README, "Operations").
 */
class NoopCounter extends Counter {
  override inc(): void {}
}

/**
 * An HDR histogram exported as a Prometheus summary (quantiles from HDR).
 * Latencies are recorded in microseconds and exported in seconds (divisor
 * 1e6); counts (divisor 1) are recorded and exported as they are.
 */
export class Histogram {
  private h: hdr.Histogram;
  count = 0;
  sum = 0;
  constructor(readonly labels?: Labels, readonly divisor = 1e6) {
    // 32-bit buckets, not "packed": 40 ns per record instead of 880 ns (loadtest/microbench.ts), for ~200 KB each.
    this.h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, bitBucketSize: 32 });
  }
  /** Records one value in microseconds. */
  record(us: number): void {
    const v = us < 1 ? 1 : Math.round(us);
    this.h.recordValue(v);
    this.count++;
    this.sum += v;
  }
  quantile(q: number): number {
    return this.count === 0 ? 0 : this.h.getValueAtPercentile(q * 100);
  }
}

class NoopHistogram extends Histogram {
  override record(): void {}
}

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "summary";
  counters?: Counter[];
  gauges?: { labels?: Labels; read: () => number }[];
  histograms?: Histogram[];
}

export class Metrics {
  private families = new Map<string, Family>();

  /** `enabled: false`: counters and histograms record nothing (they read 0); gauges, read at scrape time, still work. */
  constructor(readonly opts: { enabled?: boolean } = {}) {}

  get enabled(): boolean {
    return this.opts.enabled !== false;
  }

  private family(name: string, help: string, type: Family["type"]): Family {
    let f = this.families.get(name);
    if (!f) {
      f = { name, help, type };
      this.families.set(name, f);
    } else if (f.type !== type) {
      throw new Error(`metrics: ${name} is already a ${f.type}; pick another name for the ${type}`);
    }
    return f;
  }

  counter(name: string, help: string, labels?: Labels): Counter {
    const f = this.family(name, help, "counter");
    const key = fmtLabels(labels);
    const existing = f.counters?.find((c) => fmtLabels(c.labels) === key);
    if (existing) return existing;
    const c = this.enabled ? new Counter(labels) : new NoopCounter(labels);
    (f.counters ??= []).push(c);
    return c;
  }

  gauge(name: string, help: string, read: () => number, labels?: Labels): void {
    const f = this.family(name, help, "gauge");
    const key = fmtLabels(labels);
    f.gauges = (f.gauges ?? []).filter((g) => fmtLabels(g.labels) !== key);
    f.gauges.push({ labels, read });
  }

  histogram(name: string, help: string, labels?: Labels, divisor = 1e6): Histogram {
    const f = this.family(name, help, "summary");
    const key = fmtLabels(labels);
    const existing = f.histograms?.find((h) => fmtLabels(h.labels) === key);
    if (existing) return existing;
    const h = this.enabled ? new Histogram(labels, divisor) : new NoopHistogram(labels, divisor);
    (f.histograms ??= []).push(h);
    return h;
  }

  /** Counts renders, so that gauges sharing one expensive read can do it once per scrape. */
  scrapes = 0;

  render(): string {
    this.scrapes++;
    const out: string[] = [];
    for (const f of this.families.values()) {
      out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
      for (const c of f.counters ?? []) out.push(`${f.name}${fmtLabels(c.labels)} ${c.value}`);
      for (const g of f.gauges ?? []) {
        let v: number;
        try {
          v = g.read();
        } catch {
          v = NaN;
        }
        out.push(`${f.name}${fmtLabels(g.labels)} ${Number.isFinite(v) ? v : "NaN"}`);
      }
      for (const h of f.histograms ?? []) {
        for (const q of [0.5, 0.9, 0.99, 0.999]) {
          out.push(`${f.name}${fmtLabels({ ...h.labels, quantile: String(q) })} ${h.quantile(q) / h.divisor}`);
        }
        out.push(`${f.name}_sum${fmtLabels(h.labels)} ${h.sum / h.divisor}`, `${f.name}_count${fmtLabels(h.labels)} ${h.count}`);
      }
    }
    return out.join("\n") + "\n";
  }
}

/**
 * Event-loop lag, measured as the lateness of a timer: every `intervalMs`
 * a timeout is armed, and how much later than asked it fires is time the
 * loop spent on something else (a long commit, a burst of frames, GC). One
 * timer, about ten wake-ups a second: nothing next to the traffic.
 *
 * `recentMs` is the largest lateness of the last second, which is what
 * admission control compares with its threshold (one late timer is noise; a
 * second of them is a loop that cannot keep up). The RSS is sampled here
 * too, once a second, so that refusing a login never costs a syscall.
 */
export class EventLoopMonitor {
  /** Lateness of the last timer, ms. */
  lastMs = 0;
  /** Largest lateness of the last `window` samples, ms. */
  recentMs = 0;
  /** Resident set size at the last sample, bytes. */
  rss = 0;
  private samples: number[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private expected = 0;
  private ticks = 0;

  constructor(
    private histogram: Histogram | null,
    readonly intervalMs = 100,
    private window = 10,
  ) {}

  start(): void {
    if (this.timer !== null) return;
    this.rss = process.memoryUsage.rss();
    this.arm();
  }

  private arm(): void {
    this.expected = performance.now() + this.intervalMs;
    this.timer = setTimeout(() => this.tick(), this.intervalMs);
  }

  private tick(): void {
    const late = Math.max(0, performance.now() - this.expected);
    this.lastMs = late;
    this.samples.push(late);
    if (this.samples.length > this.window) this.samples.shift();
    let max = 0;
    for (const v of this.samples) if (v > max) max = v;
    this.recentMs = max;
    this.histogram?.record(late * 1000);
    if (++this.ticks % Math.max(1, Math.round(1000 / this.intervalMs)) === 0) this.rss = process.memoryUsage.rss();
    this.arm();
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
