/**
 * The PeerOutbox contract (src/store/outbox.ts): rows per peer kept in put order until removed, across a
 * reopen and a kill -9 of the writing process; a key put twice is kept once, as first put; remove of unknown
 * keys is harmless. Every backend runs it through its factory.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { SqlitePeerOutbox, type PeerOutbox } from "../../src/store/outbox.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";
import { BUN, ROOT } from "../helpers/harness.ts";

const backends: { name: string; open: (dir: string) => PeerOutbox; writer: (dir: string) => string[] }[] = [
  {
    name: "sqlite",
    open: (dir) => new SqlitePeerOutbox(join(dir, "outbox.db")),
    // A process that puts rows, says so, and waits to be killed.
    writer: (dir) => [BUN, "-e", `import { SqlitePeerOutbox } from "${join(ROOT, "src/store/outbox.ts")}";
      const o = new SqlitePeerOutbox(${JSON.stringify(join(dir, "outbox.db"))});
      for (let i = 0; i < 50; i++) o.put("n2", [{ key: "k" + i, body: new Uint8Array([i]) }]);
      console.log("put"); setInterval(() => {}, 1000);`],
  },
];

const bytes = (...b: number[]) => new Uint8Array(b);

for (const b of backends) {
  describe(`PeerOutbox contract: ${b.name}`, () => {
    const fresh = tempDirs("sb-outbox-");

    test("rows per peer in put order until removed, across a reopen", () => {
      const dir = fresh();
      let o = b.open(dir);
      o.put("n2", [{ key: "a", body: bytes(1) }, { key: "b", body: bytes(2) }]);
      o.put("n3", [{ key: "a", body: bytes(9) }]);
      o.put("n2", [{ key: "c", body: bytes(3) }]);
      expect(o.list("n2")).toEqual([{ key: "a", body: bytes(1) }, { key: "b", body: bytes(2) }, { key: "c", body: bytes(3) }]);
      expect(o.peers()).toEqual(["n2", "n3"]);
      expect(o.count()).toBe(4);
      o.remove("n2", ["b", "zz"]);
      o.close();
      o = b.open(dir);
      expect(o.list("n2").map((r) => r.key)).toEqual(["a", "c"]);
      expect(o.list("n3")).toEqual([{ key: "a", body: bytes(9) }]);
      o.remove("n3", ["a"]);
      expect(o.peers()).toEqual(["n2"]);
      expect(o.count("n3")).toBe(0);
      o.close();
    });

    test("a key put twice is kept once, as first put; empty puts and removes do nothing; get by keys, in their order", () => {
      const o = b.open(fresh());
      o.put("n2", [{ key: "a", body: bytes(1) }]);
      o.put("n2", [{ key: "a", body: bytes(7) }, { key: "b", body: bytes(2) }]);
      o.put("n2", []);
      o.remove("n2", []);
      expect(o.list("n2")).toEqual([{ key: "a", body: bytes(1) }, { key: "b", body: bytes(2) }]);
      expect(o.list("nobody")).toEqual([]);
      expect(o.get("n2", ["b", "zz", "a"])).toEqual([{ key: "b", body: bytes(2) }, { key: "a", body: bytes(1) }]);
      expect(o.get("n3", ["a"])).toEqual([]);
      o.close();
    });

    test("put with removes: the acked keys go and the new rows stay, in one call; removes alone do too", () => {
      const dir = fresh();
      let o = b.open(dir);
      o.put("n2", [{ key: "a", body: bytes(1) }, { key: "b", body: bytes(2) }]);
      o.put("n3", [{ key: "a", body: bytes(9) }]);
      o.put("n2", [{ key: "c", body: bytes(3) }], ["a", "zz"]);
      expect(o.list("n2")).toEqual([{ key: "b", body: bytes(2) }, { key: "c", body: bytes(3) }]);
      expect(o.list("n3")).toEqual([{ key: "a", body: bytes(9) }]); // another peer's key of the same name stays
      o.put("n2", [], ["b"]);
      o.close();
      o = b.open(dir);
      expect(o.list("n2").map((r) => r.key)).toEqual(["c"]);
      o.close();
    });

    test("what put returned for survives kill -9 of the writing process", async () => {
      const dir = fresh();
      const p = Bun.spawn(b.writer(dir), { cwd: ROOT, stdout: "pipe", stderr: "inherit" });
      const reader = p.stdout.getReader();
      let out = "";
      while (!out.includes("put")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the writer exited before it put its rows: ${out}`);
        out += new TextDecoder().decode(value);
      }
      p.kill("SIGKILL");
      await p.exited;
      const o = b.open(dir);
      expect(o.list("n2").map((r) => r.key)).toEqual(Array.from({ length: 50 }, (_, i) => `k${i}`));
      o.close();
    });
  });
}
