/** Latency histograms (hdr-histogram-js, microseconds) and their summaries in milliseconds. */
import * as hdr from "hdr-histogram-js";

export function newHistogram(): hdr.Histogram {
  // 1 µs .. 10 min, 3 significant digits.
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 });
}

/** Adds the compressed histograms the workers sent into one. */
export function merge(encoded: string[]): hdr.Histogram {
  const total = newHistogram();
  for (const e of encoded) {
    const h = hdr.decodeFromCompressedBase64(e);
    total.add(h);
    h.destroy();
  }
  return total;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

const ms = (us: number) => Math.round(us) / 1000;

export function summary(h: hdr.Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

export function fmtLatency(s: LatencySummary): string {
  return `p50 ${s.p50} ms, p90 ${s.p90} ms, p99 ${s.p99} ms, p99.9 ${s.p999} ms, max ${s.max} ms (n=${s.count})`;
}
