/**
 * Issue 19 item 7: the chat's ticks never show a later state before an earlier
 * one, whatever order the receipts and the send's resolution arrive in. Every
 * order of the three events of one message is tried.
 */
import { describe, expect, test } from "bun:test";
import { Ticks } from "../../src/cli/chat/ticks.ts";

type Ev = "sent" | "dlv" | "read";
const ORDERS: Ev[][] = [
  ["sent", "dlv", "read"], ["sent", "read", "dlv"], ["dlv", "sent", "read"],
  ["dlv", "read", "sent"], ["read", "sent", "dlv"], ["read", "dlv", "sent"],
];

describe("Ticks", () => {
  for (const order of ORDERS) {
    test(`receipts in the order ${order.join(", ")}: sent, then delivered (unless the read was shown already), then read`, () => {
      const lines: string[] = [];
      const t = new Ticks((l) => lines.push(l));
      t.sending();
      for (const e of order) {
        if (e === "sent") t.sent(7);
        else if (e === "dlv") t.delivery(7);
        else t.read(7);
      }
      // The read shows once both it and the sent are in; a delivery arriving after that is not news (read says more).
      const delivered = order.indexOf("dlv") < Math.max(order.indexOf("read"), order.indexOf("sent"));
      expect(lines).toEqual(["  ✓ sent #7", ...(delivered ? ["  ✓✓ delivered #7"] : []), "  ✓✓ read up to #7"]);
    });
  }

  test("a read held for an unresolved send is shown once every send resolved, even when one failed", () => {
    const lines: string[] = [];
    const t = new Ticks((l) => lines.push(l));
    t.sending();
    t.sending();
    t.read(9);
    t.sent(9);
    expect(lines).toEqual(["  ✓ sent #9"]); // the other send may still get a seq at or below 9
    t.failed();
    expect(lines).toEqual(["  ✓ sent #9", "  ✓✓ read up to #9"]);
    t.read(8); // older than what was shown
    t.delivery(9); // read already
    expect(lines.length).toBe(2);
  });

  test("receipts for seqs this chat did not send (another device's) show only reads", () => {
    const lines: string[] = [];
    const t = new Ticks((l) => lines.push(l));
    t.delivery(3);
    t.read(3);
    expect(lines).toEqual(["  ✓✓ read up to #3"]);
  });
});
