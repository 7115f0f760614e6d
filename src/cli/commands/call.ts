/**
 * `switchboard call`: try a call from two terminals. `--to NAME` rings every
 * device of NAME; `--answer` waits for a call and takes it. Both sides get
 * TURN credentials from the server (iq calls.turn), allocate on the relay,
 * and the caller sends --count UDP packets through it that the callee echoes
 * back: the media path of a real call, without audio.
 *
 * The payloads carry each side's relayed address (this tool's stand-in for an
 * SDP), end-to-end encrypted with the device's sessions (FILE.e2e, as for
 * messages; secureCalls), or in clear with --plain. It logs in as a
 * non-receiving session: call signals reach it, queued messages stay queued
 * for the device's next listen or chat.
 */
import { callControl } from "../../client/calls.ts";
import { statePathFor, type SecureClient } from "../../client/secure.ts";
import { secureCalls } from "../../client/secure-calls.ts";
import { TurnClient } from "../../client/turn.ts";
import type { CallSignal } from "../../client/types.ts";
import type { Address } from "../../protocol/stun.ts";
import { CONNECTION, defineCommand } from "../command.ts";
import { openClient } from "../connect.ts";
import { published, secureClient } from "../e2e.ts";
import { out } from "../util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

export default defineCommand({
  name: "call",
  section: "messages",
  synopsis: "call --key FILE (--to NAME | --answer) [--count N] [--plain]",
  summary: "ring NAME (or answer the next call) and exchange a UDP echo through the TURN relay",
  usage: "switchboard call --key FILE --to NAME [--count N]\n       switchboard call --key FILE --answer",
  flags: [...CONNECTION, "--key", "--to", "--answer", "--count", "--plain"],
  notes: "Prints JSON lines: waiting (--answer), ringing, answered, echo {sent, received, rtt_ms}, hangup. The server needs calls.secret and\ncalls.turn_urls (a `switchboard relay` or a coturn with use-auth-secret).",
  async run({ flags: f, usage }) {
    const answering = f["--answer"] === "true";
    if (answering === (f["--to"] !== undefined)) throw new Error(`call: give --to NAME or --answer\n${usage}`);
    const count = Number(f["--count"] ?? 20);
    const signals: CallSignal[] = [];
    let wake: (() => void) | null = null;
    const next = async (pred: (s: CallSignal) => boolean): Promise<CallSignal> => {
      for (;;) {
        const i = signals.findIndex(pred);
        if (i >= 0) return signals.splice(i, 1)[0]!;
        await new Promise<void>((r) => (wake = r));
      }
    };
    let secure: SecureClient | null = null;
    const { client } = await openClient(f, usage, {
      reconnect: false, // a non-receiving session: nothing queued for the device is taken (or decrypted) here
      autoAck: false,
      setup: async (c) => {
        c.on("call", (s) => {
          signals.push(s);
          wake?.();
        });
        if (f["--plain"] !== "true") secure = await secureClient(c, statePathFor(f["--key"]!), ["message"]);
      },
    });
    if (secure) await published(secure); // a caller can seal for this device only once its keys are on the server
    const sealer = secure ? secureCalls(secure) : null;
    const seal = async (account: string, device: number, b: Uint8Array) => (sealer ? sealer.seal(account, device, b) : b);
    const open = async (s: CallSignal): Promise<Uint8Array> => {
      if (!sealer) return s.payload ?? new Uint8Array(0);
      const r = await sealer.open(s);
      if (!r.ok) throw new Error(`call: the ${s.kind} from ${s.from} does not decrypt (${r.reason}); try --plain on both sides to test the relay alone`);
      return r.plaintext;
    };
    const calls = callControl(client);
    const turn = await calls.turn();
    const url = turn.urls.find((u) => u.startsWith("turn:"));
    if (!url) throw new Error("call: the server hands out no turn: URL (calls.turn_urls)");
    const [host, port] = url.slice(5).split("?")[0]!.split(":");
    const alloc = await TurnClient.allocate({ host: host!, port: Number(port ?? 3478), username: turn.username, password: turn.password });
    if (!alloc.ok) throw new Error(`call: the relay refused the allocation: ${alloc.code} ${alloc.reason}`);
    const relay = alloc.client;
    const me = enc.encode(JSON.stringify(relay.relayed));
    try {
      if (answering) {
        out({ event: "waiting", sealed: sealer !== null });
        const offer = await next((s) => s.kind === "offer");
        out({ event: "ringing", from: offer.from, id: offer.id });
        const peer = JSON.parse(dec.decode(await open(offer))) as Address;
        await relay.channelBind(peer);
        let echoed = 0;
        relay.onData = (d, from) => {
          relay.send(from, d);
          echoed++;
        };
        calls.answer(offer, await seal(offer.from, offer.fromDevice!, me));
        out({ event: "answered", id: offer.id });
        await next((s) => s.id === offer.id && (s.kind === "hangup" || s.kind === "stop"));
        out({ event: "hangup", id: offer.id, echoed });
        return 0;
      }
      const to = f["--to"]!;
      await sealer?.prepare(to);
      const id = await calls.call(to, (d) => seal(to, d, me));
      out({ event: "ringing", to, id });
      const reply = await next((s) => s.id === id && s.kind !== "ice");
      if (reply.kind !== "answer") {
        out({ event: reply.kind, id, why: reply.why });
        return 1;
      }
      out({ event: "answered", id, by: reply.fromDevice });
      const peer = JSON.parse(dec.decode(await open(reply))) as Address;
      await relay.channelBind(peer);
      const rtts: number[] = [];
      const sentAt = new Map<number, number>();
      let done: () => void = () => {};
      const all = new Promise<void>((r) => (done = r));
      relay.onData = (d) => {
        const n = Number(dec.decode(d).split(" ")[1]);
        const t = sentAt.get(n);
        if (t === undefined) return;
        sentAt.delete(n);
        rtts.push(performance.now() - t);
        if (rtts.length === count) done();
      };
      for (let i = 0; i < count; i++) {
        sentAt.set(i, performance.now());
        relay.send(peer, enc.encode(`echo ${i}`));
        await Bun.sleep(20); // 50 packets a second, as a voice call
      }
      await Promise.race([all, Bun.sleep(2000)]);
      rtts.sort((a, b) => a - b);
      out({ event: "echo", sent: count, received: rtts.length, rtt_ms: rtts.length ? Math.round(rtts[Math.floor(rtts.length / 2)]! * 100) / 100 : null });
      calls.hangup(to, id, reply.fromDevice);
      out({ event: "hangup", id });
      return rtts.length === count ? 0 : 1;
    } finally {
      await relay.close();
      await client.close();
    }
  },
});
