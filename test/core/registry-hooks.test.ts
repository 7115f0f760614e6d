import { describe, expect, test } from "bun:test";
import { MAX_SENDERS_PER_DEVICE, Registry } from "../../src/core/registry.ts";
import { Hooks } from "../../src/core/hooks.ts";
import type { Module } from "../../src/core/module.ts";

describe("Registry", () => {
  test("add, replace, remove only the registered session", () => {
    const r = new Registry(8);
    const a1 = { account: "alice", device: 1 };
    const a1b = { account: "alice", device: 1 };
    const a2 = { account: "alice", device: 2 };
    expect(r.add(a1)).toBeUndefined();
    expect(r.add(a2)).toBeUndefined();
    expect(r.size).toBe(2);
    expect(r.add(a1b)).toBe(a1); // the replaced session is returned for closing
    expect(r.size).toBe(2);
    expect(r.remove(a1)).toBe(false); // the old one must not remove its successor
    expect(r.get("alice", 1)).toBe(a1b);
    expect(r.devices("alice").map((x) => x.device).sort()).toEqual([1, 2]);
    expect(r.online("alice")).toBe(2);
    expect(r.remove(a1b)).toBe(true);
    expect(r.devices("alice")).toEqual([a2]); // back to the single-session form
    expect(r.get("alice", 2)).toBe(a2);
    expect(r.get("alice", 1)).toBeUndefined();
    expect(r.remove(a2)).toBe(true);
    expect(r.size).toBe(0);
    expect(r.devices("alice")).toEqual([]);
    expect(r.online("alice")).toBe(0);
  });

  test("spreads accounts over shards and finds them all", () => {
    const r = new Registry(16);
    for (let i = 0; i < 1000; i++) r.add({ account: `u${i}`, device: 1 + (i % 3) });
    expect(r.size).toBe(1000);
    for (let i = 0; i < 1000; i++) expect(r.get(`u${i}`, 1 + (i % 3))?.account).toBe(`u${i}`);
  });

  test("non-receiving sessions: never returned by get, never replace or are replaced by the receiving one; the oldest goes past the cap", () => {
    const r = new Registry(8);
    const recv = { account: "alice", device: 1 };
    const tx = Array.from({ length: MAX_SENDERS_PER_DEVICE + 1 }, () => ({ account: "alice", device: 1, rx: false }));
    expect(r.add(recv)).toBeUndefined();
    for (let i = 0; i < MAX_SENDERS_PER_DEVICE; i++) expect(r.add(tx[i]!)).toBeUndefined();
    expect(r.get("alice", 1)).toBe(recv);
    expect(r.size).toBe(1);
    expect(r.senderCount).toBe(MAX_SENDERS_PER_DEVICE);
    expect(r.add(tx[MAX_SENDERS_PER_DEVICE]!)).toBe(tx[0]); // one past the cap: the oldest is handed back for closing
    expect(r.remove(tx[0]!)).toBe(false);
    const recv2 = { account: "alice", device: 1 };
    expect(r.add(recv2)).toBe(recv); // a new receiving session replaces only the receiving one
    expect(r.sessionsOf("alice", 1)).toEqual([recv2, ...tx.slice(1)]);
    expect(r.online("alice")).toBe(1);
    for (const t of tx.slice(1)) expect(r.remove(t)).toBe(true);
    expect(r.senderCount).toBe(0);
    expect(r.sessionsOf("alice", 1)).toEqual([recv2]);
  });

  test("misuse: a shard count that is not a power of two throws with the fix", () => {
    expect(() => new Registry(10)).toThrow(/power of two/);
  });
});

describe("Hooks", () => {
  const mod = (name: string): Module => ({ name, version: "1", start: () => [] });

  test("hooks run by priority, a true return stops the chain, a crash is logged and the chain goes on", () => {
    const h = new Hooks();
    const seen: string[] = [];
    h.add(mod("low"), [{ hook: "device:added", priority: 1, handle: () => void seen.push("low") }]);
    h.add(mod("crash"), [{ hook: "device:added", priority: 5, handle: () => { throw new Error("boom"); } }]);
    h.add(mod("high"), [{ hook: "device:added", priority: 10, handle: () => void seen.push("high") }]);
    h.run("device:added", "a", 1);
    expect(seen).toEqual(["high", "low"]);
    h.add(mod("stopper"), [{ hook: "device:added", priority: 7, handle: () => true }]);
    seen.length = 0;
    h.run("device:added", "a", 1);
    expect(seen).toEqual(["high"]);
  });

  test("removing a module removes everything it registered", async () => {
    const h = new Hooks();
    h.add(mod("m"), [
      { stanza: "read", handle: () => {} },
      { iq: "x", handle: () => ({ ok: true as const }) },
      { hook: "session:ready", handle: () => {} },
    ]);
    expect(h.dispatchStanza("read")).toBe(true);
    expect(await h.dispatchIq("x")).toEqual({ ok: true });
    h.remove("m");
    expect(h.dispatchStanza("read")).toBe(false);
    expect(await h.dispatchIq("x")).toMatchObject({ ok: false, e: "unknown_op" });
    expect(h.modules()).toEqual([]);
  });

  test("a crashing iq handler answers internal, not a dead request", async () => {
    const h = new Hooks();
    h.add(mod("m"), [{ iq: "x", handle: () => { throw new Error("boom"); } }]);
    expect(await h.dispatchIq("x")).toMatchObject({ ok: false, e: "internal" });
  });

  test("misuse: two modules claiming one stanza kind throws and names the owner", () => {
    const h = new Hooks();
    h.add(mod("a"), [{ stanza: "msg", handle: () => {} }]);
    expect(() => h.add(mod("b"), [{ stanza: "msg", handle: () => {} }])).toThrow(/already handled by a/);
    expect(h.modules()).toEqual(["a"]);
  });
});
