/**
 * The web client's marks (web/app/model.ts) from receipts in any order: a
 * receipt may overtake the send's own resolution, and a read receipt says more
 * than a delivery. Every order of the events of two messages is tried.
 * Then people.ts: what a chat's header says of the peer (presence, typing,
 * a block) and the device list's rows.
 */
import { expect, test } from "bun:test";
import { Chats } from "../../web/app/model.ts";
import { People, whenText } from "../../web/app/people.ts";

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

// ---- people.ts ------------------------------------------------------------------------------------------

// Local times (the browser's zone): the texts are in it, so the test builds its instants in it too.
const at = (y: number, mo: number, d: number, h: number, mi: number) => new Date(y, mo - 1, d, h, mi).getTime();

test("last seen: today, yesterday by the calendar (not 24 hours), a date this year, a date of another year", () => {
  const now = at(2026, 12, 3, 0, 10);
  expect(whenText(at(2026, 12, 3, 0, 5), now)).toBe("today at 00:05");
  expect(whenText(at(2026, 12, 2, 23, 50), now)).toBe("yesterday at 23:50"); // 20 minutes ago, but yesterday
  expect(whenText(at(2026, 12, 2, 0, 11), at(2026, 12, 3, 23, 59))).toBe("yesterday at 00:11"); // 48 hours ago, less a minute
  expect(whenText(at(2026, 12, 1, 9, 3), now)).toBe("1 Dec at 09:03");
  expect(whenText(at(2026, 1, 1, 0, 0), now)).toBe("1 Jan at 00:00");
  expect(whenText(at(2025, 12, 31, 23, 59), now)).toBe("31 Dec 2025");
  expect(whenText(at(2026, 12, 3, 0, 11), now)).toBe("today at 00:11"); // a minute ahead of this clock
});

test("the peer's presence: each view replaces the last; an ended or empty view shows nothing; typing shows until paused", () => {
  const p = new People("ann");
  const now = at(2026, 12, 3, 14, 30);
  expect(p.presenceText("bob", now)).toBe("");
  p.presence({ account: "bob", online: true });
  expect(p.presenceText("bob", now)).toBe("online");
  p.presence({ account: "bob", online: false, lastSeen: at(2026, 12, 3, 14, 5) });
  expect(p.presenceText("bob", now)).toBe("last seen today at 14:05");
  p.presence({ account: "bob", lastSeen: at(2026, 12, 3, 14, 6) }); // online now hidden from us: the view has no online field
  expect(p.presenceText("bob", now)).toBe("last seen today at 14:06");
  p.presence({ account: "bob", online: true, lastSeen: at(2026, 12, 3, 14, 6) });
  expect(p.presenceText("bob", now)).toBe("online"); // online says more than the last seen
  p.presence({ account: "bob", ended: "privacy" });
  expect(p.presenceText("bob", now)).toBe("");
  p.presence({ account: "bob", online: true });
  p.presence({ account: "bob" }); // a watch refused (presence.sub's `no`)
  expect(p.presenceText("bob", now)).toBe("");
  p.typed("bob", "typing");
  p.typed("carol", "typing");
  expect([p.isTyping("bob"), p.isTyping("carol")]).toEqual([true, true]);
  p.typed("bob", "paused");
  expect([p.isTyping("bob"), p.isTyping("carol")]).toEqual([false, true]);
});

test("a block hides the peer's presence and typing and stops the watch; the unblock shows nothing until a new view comes", () => {
  const p = new People("ann");
  const now = at(2026, 12, 3, 14, 30);
  p.presence({ account: "bob", online: true });
  p.typed("bob", "typing");
  expect(p.watchTarget("bob")).toBe("bob");
  p.block("bob");
  expect([p.presenceText("bob", now), p.isTyping("bob"), p.watchTarget("bob")]).toEqual(["", false, null]);
  p.presence({ account: "bob", online: true }); // a frame sent before the server ended the watch
  expect(p.presenceText("bob", now)).toBe("");
  p.typed("bob", "typing");
  expect(p.isTyping("bob")).toBe(false);
  p.unblock("bob");
  expect(p.watchTarget("bob")).toBe("bob");
  p.presence({ account: "bob", lastSeen: at(2026, 12, 3, 9, 0) });
  expect(p.presenceText("bob", now)).toBe("last seen today at 09:00");
  // No watch for a group, for ourselves, or with no chat open.
  expect([p.watchTarget("#g1"), p.watchTarget("ann"), p.watchTarget(null)]).toEqual([null, null, null]);
});

test("the device list: ascending ids, this device marked and not the others, a device without a name shown by its id alone", () => {
  const p = new People("ann");
  const now = at(2026, 12, 3, 14, 30);
  p.devices = [
    { d: 3, name: "phone", created: at(2026, 12, 3, 8, 0), kv: 2 },
    { d: 1, created: at(2026, 11, 20, 10, 15), kv: 0 },
    { d: 2, name: "web", created: at(2026, 12, 2, 22, 0), kv: 1 },
  ];
  expect(p.deviceRows(2, now)).toEqual([
    { d: 1, mine: false, e2e: false, label: "device 1 · linked 20 Nov at 10:15" },
    { d: 2, mine: true, e2e: true, label: "web · device 2 · linked yesterday at 22:00 · this browser" },
    { d: 3, mine: false, e2e: true, label: "phone · device 3 · linked today at 08:00" },
  ]);
});
