/**
 * The web client's marks (web/app/model.ts) from receipts in any order: a
 * receipt may overtake the send's own resolution, and a read receipt says more
 * than a delivery. Every order of the events of two messages is tried.
 */
import { expect, test } from "bun:test";
import { Chats } from "../../web/app/model.ts";

type Ev = { k: "sent"; i: number } | { k: "dlv"; i: number } | { k: "read"; i: number };

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

test("1:1 marks are the same whatever the order of sent, delivered and read (all 720 orders of two messages)", () => {
  const evs: Ev[] = [{ k: "sent", i: 0 }, { k: "sent", i: 1 }, { k: "dlv", i: 0 }, { k: "dlv", i: 1 }, { k: "read", i: 0 }, { k: "read", i: 1 }];
  const seqs = [7, 8];
  for (const order of permutations(evs)) {
    const cs = new Chats("alice");
    const c = cs.chat("bob");
    const ms = [0, 1].map((i) => cs.add("bob", { id: `m${i}`, from: "alice", mine: true, text: `t${i}`, ts: i, seq: null }));
    const marks: string[][] = [];
    for (const e of order) {
      if (e.k === "sent") ms[e.i]!.seq = seqs[e.i]!;
      else cs.receipt("bob", e.k, "bob", seqs[e.i]!);
      marks.push(ms.map((m) => cs.mark(c, m)));
    }
    // At the end both are read: the highest read receipt covers both seqs.
    expect(ms.map((m) => cs.mark(c, m))).toEqual(["read", "read"]);
    // Never "read" before the message has its seq, and never back from read.
    for (let i = 0; i < 2; i++) {
      const seen = marks.map((row) => row[i]);
      const first = seen.indexOf("read");
      expect(seen.slice(first).every((m) => m === "read")).toBe(true);
    }
  }
});

test("a read of only the first leaves the second delivered; receipts from our own other devices change nothing", () => {
  const cs = new Chats("alice");
  const c = cs.chat("bob");
  const a = cs.add("bob", { id: "a", from: "alice", mine: true, text: "a", ts: 1, seq: 3 });
  const b = cs.add("bob", { id: "b", from: "alice", mine: true, text: "b", ts: 2, seq: 4 });
  const p = cs.add("bob", { id: "p", from: "alice", mine: true, text: "p", ts: 3, seq: null });
  cs.receipt("bob", "dlv", "bob", 3);
  cs.receipt("bob", "dlv", "bob", 4);
  cs.receipt("bob", "read", "bob", 3);
  cs.receipt("bob", "read", "alice", 4); // alice's other device read bob's messages: not a mark on ours
  expect([cs.mark(c, a), cs.mark(c, b), cs.mark(c, p)]).toEqual(["read", "delivered", "pending"]);
});

test("group marks follow group.state: delivered when every member has it, read when every member read it", () => {
  const cs = new Chats("alice");
  const g = cs.chat("#g1", "team");
  const m = cs.add("#g1", { id: "x", from: "alice", mine: true, text: "x", ts: 1, seq: 2 });
  expect(cs.mark(g, m)).toBe("sent");
  g.tally[2] = { n: 2, delivered: 1, read: 0 };
  expect(cs.mark(g, m)).toBe("sent");
  g.tally[2] = { n: 2, delivered: 2, read: 1 };
  expect(cs.mark(g, m)).toBe("delivered");
  g.tally[2] = { n: 2, delivered: 2, read: 2 };
  expect(cs.mark(g, m)).toBe("read");
});

test("theirs: the seq to mark read, once; a redelivered copy is not added twice; history round-trips through JSON", () => {
  const cs = new Chats("alice");
  const c = cs.chat("bob");
  cs.add("bob", { id: "1", from: "bob", mine: false, text: "hi", ts: 1, seq: 5 });
  cs.add("bob", { id: "1", from: "bob", mine: false, text: "hi", ts: 1, seq: 5 });
  cs.add("bob", { id: "2", from: "bob", mine: false, text: "there", ts: 2, seq: 6 });
  expect(c.messages.length).toBe(2);
  expect(c.unread).toBe(2);
  expect(cs.toMarkRead(c)).toBe(6);
  c.markedRead = 6;
  expect(cs.toMarkRead(c)).toBe(0);
  const back = Chats.from(JSON.parse(JSON.stringify(cs)));
  expect(back.chat("bob").messages.map((m) => m.text)).toEqual(["hi", "there"]);
  expect(back.list().map((x) => x.id)).toEqual(["bob"]);
});

test("a receipt for a chat the page does not show (a sender key's 1:1 hand-out) makes no chat", () => {
  const cs = new Chats("alice");
  cs.receipt("bob", "dlv", "bob", 1);
  expect(cs.list()).toEqual([]);
});
