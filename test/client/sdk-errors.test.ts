/**
 * The SDK's own failure codes (ClientCode): a separate set from the wire's
 * codes, carried by the errors the SDK makes on its side of a connection.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ClientCode, CloseReason, ErrorCode } from "../../src/protocol/errors.ts";
import { ClientError, SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile } from "../../src/client/keys.ts";
import { startServer, type TestServer } from "../helpers/harness.ts";

async function rejection(p: Promise<unknown>): Promise<ClientError> {
  const e = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(ClientError);
  return e as ClientError;
}

describe("ClientCode", () => {
  test("is disjoint from the wire's ErrorCode and CloseReason, and its values are unique", () => {
    const wire = new Set<string>([...Object.values(ErrorCode), ...Object.values(CloseReason)]);
    const client = Object.values(ClientCode);
    for (const c of client) expect(wire.has(c)).toBe(false);
    expect(new Set(client).size).toBe(client.length);
  });

  test("a request with no session is refused as not_connected, with the fix in the message", async () => {
    const c = new SwitchboardClient({ host: "127.0.0.1", port: 1, key: keyToFile(generateDeviceKey(), "nobody", 1), reconnect: false });
    const e = await rejection(c.request("devices", { u: "x" }));
    expect(e.code).toBe(ClientCode.NOT_CONNECTED);
    expect(e.message).toMatch(/await connect\(\) first/);
  });
});

describe("ClientCode with a server", () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startServer();
  });
  afterAll(() => srv?.cleanup());

  test("a request pending when the connection drops fails as connection_closed; the client comes back", async () => {
    const c = await srv.client(await srv.newDevice("codes"));
    let readies = 0;
    c.on("ready", () => readies++);
    const pending = c.request("devices", { u: "codes" }); // queued; the drop comes before any answer can
    c.dropConnection();
    const e = await rejection(pending);
    expect(e.code).toBe(ClientCode.CONNECTION_CLOSED);
    expect(e.message).toBe("connection closed");
    await new Promise<void>((res) => c.on("ready", () => res()));
    expect(readies).toBe(1);
    const r = await c.request<{ devices: { d: number }[] }>("devices", { u: "codes" });
    expect(r.devices.map((d) => d.d)).toEqual([c.device]);
    await c.close();
  });

  test("a server that never says hello: the connection fails with a timeout error, reported as connect_error", async () => {
    const mute = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: () => {} } });
    try {
      const c = new SwitchboardClient({ host: "127.0.0.1", port: mute.port, key: keyToFile(generateDeviceKey(), "nobody", 1), reconnect: false, helloTimeoutMs: 200 });
      const closes: { reason: string }[] = [];
      c.on("close", (x) => closes.push(x));
      await expect(c.connect()).rejects.toThrow(/no hello/);
      expect(closes).toMatchObject([{ reason: ClientCode.CONNECT_ERROR, willReconnect: false }]);
    } finally {
      mute.stop(true);
    }
  });
});
