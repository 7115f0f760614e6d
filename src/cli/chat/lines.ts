/** What a chat shows for group membership changes and group receipts. */
import type { GroupEvent, Receipt } from "../../client/client.ts";

const list = (xs: string[], me: string) => xs.map((x) => (x === me ? "you" : x)).join(", ");

/** One line for a membership change of the group being chatted in. */
export function groupEventLine(ev: GroupEvent, me: string): string {
  const by = ev.by === me ? "you" : ev.by;
  switch (ev.op) {
    case "create":
      return `  ${by} created the group${ev.name !== undefined ? ` "${ev.name}"` : ""} with ${list(ev.members, me)}`;
    case "add":
      return `  ${by} added ${list(ev.members, me)}`;
    case "remove":
      return `  ${by} removed ${list(ev.members, me)}`;
    case "leave":
      return `  ${list(ev.members, me)} left`;
    case "promote":
      return `  ${by} made ${list(ev.members, me)} ${ev.members.length === 1 ? "an admin" : "admins"}`;
    case "demote":
      return `  ${by} took admin rights from ${list(ev.members, me)}`;
    case "rename":
      return `  ${by} renamed the group to "${ev.name ?? ""}"`;
    default:
      return `  group change: ${ev.op as string} ${list(ev.members, me)}`;
  }
}

/**
 * Group receipts, per member rather than per device (deliveries to every device of every member
 * would drown the conversation): the first delivery of each message to each member, then how far
 * each member read. A member's delivery at or below what it was shown to have read is not shown.
 */
export class GroupTicks {
  private readShown = new Map<string, number>();
  private deliveredTo = new Set<string>();

  constructor(private readonly me: string, private readonly show: (line: string) => void) {}

  receipt(r: Receipt): void {
    if (r.account === this.me) return;
    const read = this.readShown.get(r.account) ?? 0;
    if (r.kind === "read" && r.seq > read) {
      this.readShown.set(r.account, r.seq);
      this.show(`  ✓✓ ${r.account} read up to #${r.seq}`);
    } else if (r.kind === "dlv" && r.seq > read && !this.deliveredTo.has(`${r.seq}\u0000${r.account}`)) {
      if (this.deliveredTo.size > 10_000) this.deliveredTo.clear();
      this.deliveredTo.add(`${r.seq}\u0000${r.account}`);
      this.show(`  ✓✓ #${r.seq} delivered to ${r.account}`);
    } else if (r.kind === "exp") this.show(`  ✗ #${r.seq} expired before ${r.account}'s device ${r.device} received it`);
    else if (r.kind === "full") this.show(`  ✗ #${r.seq} not queued for ${r.account}'s device ${r.device}: its queue is full`);
  }
}
