/**
 * `switchboard trace [ACCOUNT] CID`: asks the running server (GET /trace on
 * its HTTP port, loopback only) for the delivery trace of a message and
 * prints its life: accepted, durable, each copy pushed / acked / expired,
 * read. Metadata only; the server never had the payload in the
 * clear and the trace never holds it.
 */
import { loadConfig } from "../core/config.ts";
import type { TraceEntry } from "../core/trace.ts";

/** http://host:port of the server's HTTP endpoint from the configuration the command was given. */
export function httpBase(flags: Record<string, string>, what: string): string {
  const cfg = loadConfig({ flags });
  const { port } = cfg.http;
  if (port === -1) throw new Error(`the server's HTTP port is off (http.port = -1), and ${what} goes through it`);
  if (port === 0) throw new Error(`http.port is 0 (the server picked a free port when it started)\n  pass --http-port N with the "http" port of the server's "listening" line`);
  const host = cfg.http.host === "0.0.0.0" || cfg.http.host === "" ? "127.0.0.1" : cfg.http.host === "::" ? "::1" : cfg.http.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

function clock(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** "+12 ms", "+3.4 s", "+2.0 min" after `t0`. */
function after(t0: number, t: number): string {
  const d = t - t0;
  if (d < 1000) return `+${d} ms`;
  if (d < 120_000) return `+${(d / 1000).toFixed(1)} s`;
  return `+${(d / 60_000).toFixed(1)} min`;
}

/** The trace in lines for a person. */
export function formatTrace(e: TraceEntry): string[] {
  const t0 = e.accepted;
  const lines = [`message ${JSON.stringify(e.id)} from ${e.from} device ${e.fd} to ${e.to}, seq ${e.seq}`, `  accepted  ${clock(t0)}`];
  lines.push(e.durable === null ? "  durable   not yet (no `sent`)" : `  durable   ${after(t0, e.durable)}  (sent)`);
  for (const c of e.copies) {
    const steps: string[] = [];
    if (c.pushed !== null) steps.push(`pushed ${after(t0, c.pushed)}${c.pushes > 1 ? ` (${c.pushes} times)` : ""}`);
    else steps.push("not pushed (device offline or behind)");
    if (c.acked !== null) steps.push(`acked ${after(t0, c.acked)}`);
    else if (c.expired !== null) steps.push(`EXPIRED ${after(t0, c.expired)}`);
    else steps.push("not acked");
    lines.push(`  ${`${c.account}/${c.device}`.padEnd(20)} ${c.kind.padEnd(7)} q ${c.q}: ${steps.join(", ")}`);
  }
  if (e.copies.length === 0) lines.push("  no copies traced");
  lines.push(e.read === null ? "  read      not yet" : `  read      ${after(t0, e.read.ts)} by ${e.read.account}/${e.read.device}`);
  return lines;
}

export async function traceCommand(flags: Record<string, string>, args: string[], json: boolean): Promise<number> {
  const [from, id] = args.length === 2 ? [args[0], args[1]!] : [undefined, args[0]!];
  const base = httpBase(flags, "trace");
  const q = new URLSearchParams({ id });
  if (from !== undefined) q.set("from", from);
  const url = `${base}/trace?${q}`;
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`cannot reach the server at ${base}: ${(e as Error).message}\n  is it running? Pass the --config, or --http-port, it runs with`);
  }
  if (res.status === 403) throw new Error(`the server refused: ${(await res.text()).trim()}\n  run switchboard trace on the server's machine`);
  if (res.status !== 200 && res.status !== 404) throw new Error(`the server answered ${res.status} at ${url}: ${(await res.text()).trim()}`);
  const body = (await res.json()) as { messages: TraceEntry[]; tracing: { size: number; sample: number; held: number } };
  if (json) {
    console.log(JSON.stringify(body));
    return body.messages.length ? 0 : 1;
  }
  if (body.messages.length === 0) {
    const t = body.tracing;
    const why = t.size === 0
      ? "tracing is off on this server (trace.size = 0)"
      : `the server keeps the last ${t.size} messages${t.sample > 1 ? `, one in ${t.sample}` : ""}, in memory (a restart starts afresh)`;
    console.error(`no trace of message ${JSON.stringify(id)}${from !== undefined ? ` from ${from}` : ""}\n  ${why}`);
    return 1;
  }
  console.log(body.messages.map((e) => formatTrace(e).join("\n")).join("\n\n"));
  return 0;
}
