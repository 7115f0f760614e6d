/**
 * ops/grafana/switchboard.json and ops/prometheus/alerts.yml name only what a
 * real server exports: a server is started, one message goes through it (so
 * the counters and summaries have samples), its /metrics is scraped, and
 * every metric and label named in every PromQL expression of both files must
 * be among what it served. A renamed metric fails here, not in production.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { pushCalls } from "../../src/client/push.ts";
import { startGateway, webhookArgs, type Gateway } from "../push/gateway.ts";

setDefaultTimeout(60_000); // a bound on waiting for the server, not a timing assertion

/** Names Prometheus itself makes (not the server): `up` of the scrape job. */
const PROMETHEUS_OWN = new Set(["up"]);
const KEYWORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"]);

interface Named {
  metrics: string[];
  labels: { metric: string | null; label: string }[];
}

/** The metric names and label-matcher names of a PromQL expression (enough PromQL for these files; a parse it cannot make fails the test). */
export function namesIn(expr: string): Named {
  const labels: Named["labels"] = [];
  let s = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  // Selectors' label matchers: NAME{a="", b=~""}.
  s = s.replace(/([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}/g, (_m, metric: string | undefined, body: string) => {
    for (const part of body.split(",").map((p) => p.trim()).filter(Boolean)) {
      const m = /^([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*""$/.exec(part);
      if (!m) throw new Error(`cannot read matcher ${JSON.stringify(part)} in ${expr}`);
      labels.push({ metric: metric ?? null, label: m[1]! });
    }
    return ` ${metric ?? ""} `;
  });
  s = s.replace(/\[[^\]]*\]/g, " "); // range and subquery durations
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, _kw, list: string) => {
    for (const l of list.split(",").map((x) => x.trim()).filter(Boolean)) labels.push({ metric: null, label: l });
    return " ";
  });
  s = s.replace(/\b[A-Za-z_]\w*\s*\(/g, "("); // function names
  const metrics = [...s.matchAll(/(?<![\w.])[A-Za-z_:][\w:]*/g)].map((m) => m[0]).filter((w) => !KEYWORDS.has(w.toLowerCase()) && !/^\d/.test(w) && !/^\d+(\.\d+)?e\d+$/i.test(w));
  return { metrics, labels };
}

let srv: TestServer;
let gw: Gateway;
/** metric name -> label names seen on it. */
const exported = new Map<string, Set<string>>();

beforeAll(async () => {
  // Push on (a webhook gateway): the push series exist once a push has been counted.
  gw = await startGateway();
  srv = await startServer({ args: ["--canary-interval", "1", ...webhookArgs(gw.fake.url + "/hook")] });
  const off = await srv.client(await srv.newDevice("dash-off"));
  await pushCalls(off).register({ p: "webhook", token: "dash-off" });
  await off.close();
  const [a, b] = [await srv.newDevice("dash-a"), await srv.newDevice("dash-b")];
  const ca = await srv.client(a);
  const cb = await srv.client(b);
  let got = 0;
  cb.on("message", () => got++);
  await ca.send("dash-b", new TextEncoder().encode("hello"));
  await waitFor(() => got === 1, "the message delivered");
  await ca.send("dash-off", new TextEncoder().encode("wake"));
  await waitFor(() => gw.bodies.length === 1, "a push delivered");
  await waitFor(async () => (await srv.http_get("/readyz")).status === 200, "/readyz 200 (a canary round made)");
  ca.close();
  cb.close();
  const { text } = await srv.http_get("/metrics");
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][\w:]*)(\{([^}]*)\})? /.exec(line);
    if (!m) continue;
    const set = exported.get(m[1]!) ?? new Set<string>();
    for (const kv of (m[3] ?? "").split(",").filter(Boolean)) set.add(kv.split("=")[0]!);
    exported.set(m[1]!, set);
  }
});
afterAll(async () => {
  srv.cleanup();
  await gw?.close();
});

function check(where: string, expr: string): void {
  const { metrics, labels } = namesIn(expr);
  const own = metrics.filter((m) => !PROMETHEUS_OWN.has(m));
  expect({ where, expr, unknown: own.filter((m) => !exported.has(m)) }).toEqual({ where, expr, unknown: [] });
  expect({ where, expr, names: metrics.length > 0 }).toEqual({ where, expr, names: true });
  const allLabels = new Set(["instance", "job", ...own.flatMap((m) => [...exported.get(m)!])]);
  for (const { metric, label } of labels) {
    const known = metric && exported.has(metric) ? new Set(["instance", "job", ...exported.get(metric)!]) : allLabels;
    if (metric && PROMETHEUS_OWN.has(metric)) continue;
    expect({ where, expr, label, known: known.has(label) }).toEqual({ where, expr, label, known: true });
  }
}

test("the reader of expressions finds metrics, labels and nothing else", () => {
  expect(namesIn('sum by (reason) (rate(switchboard_closes_total{reason="x",instance=~"$i"}[5m])) / on (instance) (up > 0) > 1e6')).toEqual({
    metrics: ["switchboard_closes_total", "up"],
    labels: [{ metric: "switchboard_closes_total", label: "reason" }, { metric: "switchboard_closes_total", label: "instance" }, { metric: null, label: "reason" }, { metric: null, label: "instance" }],
  });
});

test("every alerting rule names metrics and labels the server exports", () => {
  const doc = Bun.YAML.parse(readFileSync(join(ROOT, "ops/prometheus/alerts.yml"), "utf8")) as { groups: { name: string; rules: { alert: string; expr: string; labels?: { severity?: string } }[] }[] };
  const rules = doc.groups.flatMap((g) => g.rules);
  expect(rules.length).toBeGreaterThan(5);
  for (const r of rules) {
    expect(["critical", "warning", "info"]).toContain(r.labels?.severity ?? "none");
    check(`alert ${r.alert}`, r.expr);
  }
});

test("every Grafana panel query names metrics and labels the server exports", () => {
  const dash = JSON.parse(readFileSync(join(ROOT, "ops/grafana/switchboard.json"), "utf8")) as { panels: { title: string; targets: { expr: string }[] }[]; templating: { list: { query: string }[] } };
  const exprs = dash.panels.flatMap((p) => p.targets.map((t) => [`panel ${p.title}`, t.expr] as const));
  expect(exprs.length).toBeGreaterThan(10);
  for (const [where, expr] of exprs) check(where, expr);
  for (const v of dash.templating.list) {
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(v.query);
    if (m) check(`variable ${m[2]}`, m[1]!);
  }
});
