/**
 * An account's groups across nodes. A group lives on the node it was created on (forward.ts `o`), so one
 * account's groups are spread over every node, each node's groups module knowing only its own. Two things need
 * all of them: `group.list`, and the per-account cap (`groups.max_per_account`) checked by `group.create` and
 * `group.add` on the group's node. Both ask every peer (item `l`: accounts; the peer runs its own `group.list`
 * for each, as that account) and take the answers (`L`) that come within LIST_WAIT_MS:
 * - `group.list` merges them with this node's answer; one without every peer's part says `incomplete: true`
 *   (a node that is down keeps its groups: they are not gone, only not listed now);
 * - the cap adds the peers' counts to the module's own (`PeerView.groupsElsewhere`); a peer that does not answer
 *   in time is counted by its last answer here (0 if none). Concurrent joins on two nodes can each pass before
 *   seeing the other: the cap across nodes may be passed by the joins in flight at once, one per node.
 * Cost: one item per peer per `group.list`, `group.create` and `group.add`; nothing per message.
 */
import type { Conn } from "../../transport/connection.ts";
import type { Hooks } from "../hooks.ts";
import type { IqReply } from "../module.ts";

/** How long `group.list` and a cap check wait for the peers' answers. */
export const LIST_WAIT_MS = 2_000;
/** Peer counts remembered for a peer that does not answer next time: accounts (oldest dropped beyond this). */
const COUNTS_MAX = 10_000;

export interface GroupRow {
  g: string;
  name: string;
  n: number;
}
export type ListItem = { k: "l"; i: string; a: string[] } | { k: "L"; i: string; g: Record<string, GroupRow[]> };

export class GroupLists {
  private waiting = new Map<string, (g: Record<string, GroupRow[]>) => void>();
  /** Groups of an account on each peer, as last answered: account -> node -> count. */
  private counts = new Map<string, Map<string, number>>();
  private n = 0;

  constructor(
    private readonly boot: string,
    private readonly peers: () => string[],
    private readonly send: (node: string, item: ListItem) => void,
    private readonly hooks: () => Hooks,
    /** A connection acting as `account` for the groups module here (its `group.list` reads only the account). */
    private readonly as: (from: string, account: string) => Conn,
  ) {}

  /** Every peer's groups of each account, from those that answered within LIST_WAIT_MS; `missing`: those that did not. */
  async ask(accounts: string[]): Promise<{ rows: Map<string, Record<string, GroupRow[]>>; missing: string[] }> {
    const peers = this.peers();
    const rows = new Map<string, Record<string, GroupRow[]>>();
    await Promise.all(peers.map((node) => new Promise<void>((resolve) => {
      const i = `${this.boot}:${++this.n}`;
      const t = setTimeout(() => this.waiting.delete(i) && resolve(), LIST_WAIT_MS);
      this.waiting.set(i, (g) => {
        clearTimeout(t);
        rows.set(node, g);
        resolve();
      });
      this.send(node, { k: "l", i, a: accounts });
    })));
    for (const [node, g] of rows) for (const a of accounts) this.remember(a, node, g[a]?.length ?? 0);
    return { rows, missing: peers.filter((p) => !rows.has(p)) };
  }

  /** `group.list` of `conn`'s account: this node's answer (`local`) merged with every peer's. */
  async list(conn: Conn, local: Promise<IqReply>): Promise<IqReply> {
    const [mine, theirs] = await Promise.all([local, this.ask([conn.account])]);
    if (!mine.ok) return mine;
    const seen = new Set<string>();
    const groups: GroupRow[] = [];
    for (const part of [(mine.r as { groups: GroupRow[] }).groups, ...[...theirs.rows.values()].map((g) => g[conn.account] ?? [])]) {
      for (const row of part) if (!seen.has(row.g)) seen.add(row.g), groups.push(row);
    }
    return { ok: true, r: theirs.missing.length ? { groups, incomplete: true } : { groups } };
  }

  /** Groups of `account` on the other nodes, as they last answered (`ask`, which `group.create`/`add` wait for). */
  elsewhere(account: string): number {
    let n = 0;
    for (const c of this.counts.get(account)?.values() ?? []) n += c;
    return n;
  }

  /** An item of kind `l` or `L` from peer `from`. */
  async received(from: string, it: ListItem): Promise<void> {
    if (it.k === "L") {
      const f = this.waiting.get(it.i);
      this.waiting.delete(it.i);
      return f?.(it.g);
    }
    const g: Record<string, GroupRow[]> = {};
    for (const a of it.a) {
      const r = await this.hooks().dispatchIq("group.list", this.as(from, a), {});
      g[a] = r.ok ? (r.r as { groups: GroupRow[] }).groups : []; // no groups module here: none
    }
    this.send(from, { k: "L", i: it.i, g });
  }

  private remember(account: string, node: string, n: number): void {
    let m = this.counts.get(account);
    if (m === undefined) {
      if (this.counts.size >= COUNTS_MAX) this.counts.delete(this.counts.keys().next().value!);
      this.counts.set(account, (m = new Map()));
    }
    m.set(node, n);
  }
}
