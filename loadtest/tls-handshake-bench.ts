/**
 * What a TLS handshake costs Bun's server, full and resumed, against a bare TCP connect (issue 20 target 6: a TLS
 * reconnect ≤ 1.5× a TCP one). A server process (pinned to CPU 0 when taskset exists) accepts, and writes one byte
 * once the handshake is done; this process opens N connections, 20 at a time, each closed on that byte, offering
 * the last TLS session when resuming. Server CPU from its own process.cpuUsage() around the N connections (after
 * 200 of warm-up), per connection. No Switchboard code runs: this is the platform's floor.
 *
 *   bun loadtest/tls-handshake-bench.ts [N=2000] [rounds=1]
 *
 * Variants: tcp; TLS 1.3 with Bun's default groups (the X25519MLKEM768 hybrid first: Bun's client offers it, so
 * it is negotiated); TLS 1.3 with the server on X25519 (tls.groups); TLS 1.2 (tls.max_version), each full and
 * resumed. The rounds run the variants interleaved.
 */
import type { Socket } from "bun";
import { generateDevCert } from "../src/transport/devcert.ts";

const SSL_OP_NO_TLSV1_3 = 0x20000000;
type Variant = { name: string; tls: null | { secureOptions?: number; ecdhCurve?: string } };
const VARIANTS: Variant[] = [
  { name: "tcp", tls: null },
  { name: "tls1.3 default groups", tls: {} },
  { name: "tls1.3 X25519", tls: { ecdhCurve: "X25519" } },
  { name: "tls1.2", tls: { secureOptions: SSL_OP_NO_TLSV1_3 } },
];

if (process.argv[2] === "--serve") {
  // The server role: argv[3] is the variant's TLS options as JSON ("null": TCP), the certificate on stdin's first line.
  const opts = JSON.parse(process.argv[3]!) as Variant["tls"];
  const lines = console[Symbol.asyncIterator]();
  const cert = opts === null ? null : (JSON.parse((await lines.next()).value as string) as { key: string; cert: string });
  let resumed = 0, full = 0;
  const l = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    ...(opts === null ? {} : { tls: { key: cert!.key, cert: cert!.cert, ...opts } }),
    socket: {
      open(s: Socket<undefined>) {
        if (opts === null) s.write("k");
      },
      handshake(s: Socket<undefined>, ok: boolean) {
        if (!ok) return;
        if (s.isSessionReused()) resumed++;
        else full++;
        s.write("k");
      },
      data() {},
      close() {},
    },
  } as unknown as Parameters<typeof Bun.listen<undefined>>[0]) as unknown as { port: number };
  console.log(JSON.stringify({ port: l.port }));
  for (;;) {
    const r = await lines.next();
    if (r.done) process.exit(0);
    const u = process.cpuUsage();
    console.log(JSON.stringify({ user: u.user, sys: u.system, resumed, full }));
  }
}

const N = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 1);
const dev = generateDevCert();
const taskset = Bun.which("taskset");

async function measure(v: Variant, resume: boolean): Promise<string> {
  const cmd = [process.execPath, import.meta.path, "--serve", JSON.stringify(v.tls)];
  const srv = Bun.spawn(taskset ? [taskset, "-c", "0", ...cmd] : cmd, { stdin: "pipe", stdout: "pipe" });
  const reader = srv.stdout.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const line = async (): Promise<Record<string, number>> => {
    for (;;) {
      const i = buf.indexOf("\n");
      if (i >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        return JSON.parse(l);
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("the server process ended");
      buf += dec.decode(value);
    }
  };
  const ask = (s: string) => {
    srv.stdin.write(s + "\n");
    srv.stdin.flush();
  };
  if (v.tls !== null) ask(JSON.stringify(dev));
  const { port } = await line();
  let session: unknown = null;
  const one = () =>
    new Promise<void>((done, fail) => {
      Bun.connect({
        hostname: "127.0.0.1",
        port: port!,
        ...(v.tls === null ? {} : { tls: { ca: dev.cert, serverName: "localhost" } }),
        socket: {
          open(s) {
            if (resume && session !== null) (s as unknown as { setSession(x: unknown): void }).setSession(session);
          },
          handshake(s) {
            // TLS 1.2: the session to offer is the one of the handshake (the one read at `data` alone never
            // resumed: 0 of 2 000); TLS 1.3: its ticket comes after the handshake, taken at `data` below.
            if (v.tls !== null && session === null) session = (s as unknown as { getSession(): unknown }).getSession();
          },
          data(s) {
            // After the server's byte, a TLS 1.3 ticket has been read as well: this session resumes.
            if (v.tls !== null) session = (s as unknown as { getSession(): unknown }).getSession() ?? session;
            s.end();
          },
          close: () => done(),
          connectError: (_s, e) => fail(e),
          error() {},
        },
      }).catch(fail);
    });
  for (let i = 0; i < 200; i++) await one();
  ask("cpu");
  const a = await line();
  let left = N;
  await Promise.all(Array.from({ length: 20 }, async () => {
    while (left-- > 0) await one();
  }));
  await Bun.sleep(200);
  ask("cpu");
  const b = await line();
  srv.kill();
  const per = (k: string) => ((b[k]! - a[k]!) / N).toFixed(1);
  const total = ((b.user! - a.user! + b.sys! - a.sys!) / N).toFixed(1);
  const hs = v.tls === null ? "" : `; handshakes resumed ${b.resumed! - a.resumed!}, full ${b.full! - a.full!}`;
  return `${`${v.name}, ${v.tls === null ? "connect" : resume ? "resumed" : "full"}`.padEnd(32)} ${total.padStart(6)} µs server CPU per connection (user ${per("user")}, sys ${per("sys")})${hs}`;
}

console.log(`tls-handshake-bench: ${N} connections per variant, ${rounds} round(s), Bun ${Bun.version}${taskset ? ", server on CPU 0" : ""}`);
for (let r = 0; r < rounds; r++) {
  for (const v of VARIANTS) {
    console.log(await measure(v, false));
    if (v.tls !== null) console.log(await measure(v, true));
  }
}
