/** Real node processes (node-main.ts) for the cluster tests, with tagged request/response over stdin/stdout. */
import type { Subprocess } from "bun";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { LineProcess, CLEAN_ENV } from "../helpers/line-process.ts";
import { BUN, ROOT } from "../helpers/harness.ts";

const NODE_MAIN = join(import.meta.dir, "node-main.ts");
let tags = 0;

export interface Status {
  id: string;
  up: boolean;
  held: [number, number][];
  owners: Record<string, number>;
  routed: number;
  nodes: string[];
}

export interface WriteResult {
  s: number;
  e: number;
  local?: boolean;
  fence?: string;
  seq?: number;
}

export class Node {
  readonly p: LineProcess;

  constructor(readonly id: string, redisUrl: string, fencePath: string, ttlMs: number, track: Set<Subprocess>) {
    this.p = new LineProcess([BUN, NODE_MAIN, "--redis", redisUrl, "--id", id, "--fence", fencePath, "--ttl", String(ttlMs), "--addr", `127.0.0.1:${id}`], {
      cwd: ROOT,
      env: CLEAN_ENV,
      track,
    });
  }

  private async ask(cmd: object, event: string): Promise<any> {
    const tag = `t${++tags}`;
    const from = this.p.lines.length;
    this.p.write(JSON.stringify({ ...cmd, tag }) + "\n");
    const line = await this.p.line((l) => l.startsWith("{") && l.includes(`"tag":"${tag}"`), from);
    const o = JSON.parse(line);
    if (o.event !== event) throw new Error(`expected ${event}, got ${line}`);
    return o;
  }

  status(): Promise<Status> {
    return this.ask({ cmd: "status" }, "status");
  }

  async held(): Promise<Map<number, number>> {
    return new Map((await this.status()).held);
  }

  async write(pairs: [number, number][]): Promise<WriteResult[]> {
    return (await this.ask({ cmd: "write", pairs }, "write")).results;
  }

  async forceWrite(pairs: [number, number][]): Promise<WriteResult[]> {
    return (await this.ask({ cmd: "force-write", pairs }, "force-write")).results;
  }

  /** Every lease event line the node has printed so far. */
  events(type: string): any[] {
    return this.p.events(type);
  }

  kill9(): Promise<number> {
    return this.p.signal("SIGKILL");
  }

  signal(sig: "SIGSTOP" | "SIGCONT"): void {
    this.p.proc.kill(sig);
  }

  kill(): void {
    this.p.kill();
  }
}

/** Held maps of several nodes, checked disjoint: a shard in two held sets at once is two owners. */
export async function snapshot(nodes: Node[]): Promise<Map<string, Map<number, number>>> {
  const out = new Map<string, Map<number, number>>();
  const owner = new Map<number, string>();
  for (const n of nodes) {
    const h = await n.held();
    for (const s of h.keys()) {
      const other = owner.get(s);
      if (other) throw new Error(`shard ${s} held by both ${other} and ${n.id}`);
      owner.set(s, n.id);
    }
    out.set(n.id, h);
  }
  return out;
}

/** Sequence numbers as issued into the shared shard data: per shard in seq order, with the epoch that wrote each. */
export function issuedSeqs(fencePath: string): Map<number, { seq: number; epoch: number; node: string }[]> {
  const db = new Database(fencePath, { readonly: true });
  try {
    const rows = db.query<{ shard: number; seq: number; epoch: number; node: string }, []>("SELECT shard, seq, epoch, node FROM seqs ORDER BY shard, seq").all();
    const out = new Map<number, { seq: number; epoch: number; node: string }[]>();
    for (const r of rows) {
      if (!out.has(r.shard)) out.set(r.shard, []);
      out.get(r.shard)!.push(r);
    }
    return out;
  } finally {
    db.close();
  }
}
