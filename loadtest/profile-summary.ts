/**
 * Summarises a `.cpuprofile` written by `bun --cpu-prof` (e.g. via
 * `npm run loadtest -- pairs --spawn --server-bun-flags "--cpu-prof --cpu-prof-dir DIR"`)
 * by SAMPLE COUNT: the markdown report of `--cpu-prof-md` weights each sample
 * by the time since the previous one, which charges idle gaps to whatever ran
 * next; counting samples does not.
 *
 *   bun loadtest/profile-summary.ts FILE.cpuprofile [top=40]
 *
 * Prints the top functions by self samples, then inclusive shares of the
 * server's hot-path building blocks (a sample counts once per bucket even if
 * the bucket's function recurses).
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

const file = process.argv[2];
if (!file) {
  console.error("usage: bun loadtest/profile-summary.ts FILE.cpuprofile [top]");
  process.exit(2);
}
const top = Number(process.argv[3] ?? 40);
const prof = JSON.parse(readFileSync(file, "utf8")) as { nodes: Node[]; samples: number[] };
const byId = new Map<number, Node>();
const parent = new Map<number, number>();
for (const n of prof.nodes) {
  byId.set(n.id, n);
  for (const c of n.children ?? []) parent.set(c, n.id);
}
const short = (url: string) => url.replace(/^.*\/node_modules\//, "").replace(/^.*\/src\//, "src/").replace(/^\/.*\//, "");
const label = (n: Node) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url ? `${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : "[native]"}`;

const IGNORE = new Set(["(root)", "(program)", "(idle)", "(garbage collector)"]);
let total = 0;
const special = new Map<string, number>();
const self = new Map<string, number>();
/** Inclusive buckets: first matching rule on the stack (innermost first) wins only for its own bucket. */
const BUCKETS: [name: string, match: (n: Node) => boolean][] = [
  ["SQLite group commit (Shard.flush)", (n) => n.callFrame.functionName === "flush" && n.callFrame.url.includes("queue-shard")],
  ["any bun:sqlite call", (n) => n.callFrame.url.startsWith("bun:sqlite")],
  ["msgpackr pack (encodeBody; often inlined)", (n) => n.callFrame.functionName === "encodeBody" || n.callFrame.url.includes("msgpackr/pack.js")],
  // decodeBodyAt: the listener decodes each frame where it lies in its chunk; decoder.ts: the strict decoder, whose entry points are often inlined.
  ["body decoder (decodeBody, decodeBodyAt)", (n) => n.callFrame.functionName === "decodeBody" || n.callFrame.functionName === "decodeBodyAt" || n.callFrame.url.includes("src/protocol/decoder.ts") || n.callFrame.url.includes("msgpackr/unpack.js")],
  ["validator (validate)", (n) => n.callFrame.functionName === "validate" && n.callFrame.url.includes("stanzas")],
  ["socket write (Conn.flush)", (n) => n.callFrame.functionName === "flush" && n.callFrame.url.includes("connection.ts")],
  ["latency histogram (Histogram.record)", (n) => n.callFrame.functionName === "record" && n.callFrame.url.includes("metrics.ts")],
  ["messaging onMsg", (n) => n.callFrame.functionName === "onMsg"],
  ["messaging onAcked (dlv receipts)", (n) => n.callFrame.functionName === "onAcked"],
  ["Delivery.enqueue", (n) => n.callFrame.functionName === "enqueue" && n.callFrame.url.includes("delivery.ts")],
  ["Delivery.ack", (n) => n.callFrame.functionName === "ack" && n.callFrame.url.includes("delivery.ts")],
  ["server data() handler", (n) => n.callFrame.functionName === "data" && n.callFrame.url.includes("server.ts")],
  // Logins (login-storm, reconnect-storm): where one login's server CPU goes.
  ["login: socket open (Conn per accepted socket)", (n) => n.callFrame.functionName === "open" && n.callFrame.url.includes("server.ts")],
  ["login: Sessions.hello (nonce, server hello)", (n) => n.callFrame.functionName === "hello" && n.callFrame.url.includes("session.ts")],
  ["login: Sessions.auth (all of it)", (n) => n.callFrame.functionName === "auth" && n.callFrame.url.includes("session.ts")],
  ["login:   Ed25519 verify (node:crypto)", (n) => n.callFrame.functionName === "verify"],
  ["login:   device key lookup (Directory.key: SQLite row + KeyObject import)", (n) => n.callFrame.functionName === "key" && n.callFrame.url.includes("directory.ts")],
  ["login:   KeyObject import (createPublicKey)", (n) => n.callFrame.functionName === "ed25519PublicKey" || n.callFrame.functionName === "createPublicKey"],
  ["login:   proof transcript", (n) => n.callFrame.functionName === "proofTranscript"],
  ["login:   Sessions.ready (registry, ready, session hooks, queue start)", (n) => n.callFrame.functionName === "ready" && n.callFrame.url.includes("session.ts")],
  ["login:     Delivery.start (queued items read at login)", (n) => n.callFrame.functionName === "start" && n.callFrame.url.includes("delivery.ts")],
  ["login: connection close (onClosed)", (n) => n.callFrame.functionName === "onClosed"],
];
const inclusive = new Map<string, number>();
for (const id of prof.samples) {
  const n = byId.get(id)!;
  if (IGNORE.has(n.callFrame.functionName)) {
    special.set(n.callFrame.functionName, (special.get(n.callFrame.functionName) ?? 0) + 1);
    continue;
  }
  total++;
  self.set(label(n), (self.get(label(n)) ?? 0) + 1);
  const hit = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const c = byId.get(cur)!;
    for (const [name, match] of BUCKETS) if (!hit.has(name) && match(c)) hit.add(name);
  }
  for (const h of hit) inclusive.set(h, (inclusive.get(h) ?? 0) + 1);
}
const pct = (x: number) => `${((100 * x) / total).toFixed(1)}%`.padStart(6);
const all = total + [...special.values()].reduce((a, b) => a + b, 0);
const busy = total + (special.get("(garbage collector)") ?? 0) + (special.get("(program)") ?? 0);
console.log(`${total} samples (idle, GC and program samples excluded)`);
console.log(
  `of all ${all} samples: idle ${(special.get("(idle)") ?? 0)}; of the ${busy} busy ones: JS ${((100 * total) / busy).toFixed(1)}%, ` +
    `garbage collector ${((100 * (special.get("(garbage collector)") ?? 0)) / busy).toFixed(1)}%, (program: native, unattributed) ${((100 * (special.get("(program)") ?? 0)) / busy).toFixed(1)}%\n`,
);
console.log("self samples, top functions:");
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(v)}  ${String(v).padStart(6)}  ${k}`);
console.log("\ninclusive, hot-path building blocks:");
for (const [name] of BUCKETS) {
  const v = inclusive.get(name) ?? 0;
  console.log(`  ${pct(v)}  ${String(v).padStart(6)}  ${name}`);
}
