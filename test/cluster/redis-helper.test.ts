/** The private redis-server helper the cluster tests stand on: start, kill -9, restart on the same port, persistence, and a loud failure when the package is missing. */
import { afterAll, describe, expect, test } from "bun:test";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const started: TestRedis[] = [];
afterAll(() => started.forEach((r) => r.cleanup()));

describe("test/helpers/redis", () => {
  test("starts on 127.0.0.1 below 32768, and restart after kill -9 keeps the port but (without persistence) not the data", async () => {
    const r = await startRedis();
    started.push(r);
    expect(r.port).toBeLessThan(32768);
    expect(await r.cli("PING")).toBe("PONG");
    expect(await r.cli("CONFIG", "GET", "bind")).toContain("127.0.0.1");
    await r.cli("SET", "k", "v");
    const port = r.port;
    await r.kill9();
    await expect(r.cli("PING")).rejects.toThrow();
    await r.restart();
    expect(r.port).toBe(port);
    expect(await r.cli("PING")).toBe("PONG");
    expect(await r.cli("EXISTS", "k")).toBe("0");
  });

  test("with persist, an acknowledged write survives kill -9", async () => {
    const r = await startRedis({ persist: true });
    started.push(r);
    await r.cli("SET", "k", "v");
    await r.kill9();
    await r.restart();
    expect(await r.cli("GET", "k")).toBe("v");
  });

  test("a missing binary fails naming the Debian package, never skips", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      await expect(startRedis()).rejects.toThrow(/Debian package "redis-server".*apt-get install -y redis-server/);
    } finally {
      process.env.PATH = path;
    }
  });
});
