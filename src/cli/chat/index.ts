/**
 * An interactive conversation with an account or a group: typed lines are
 * sent (end-to-end encrypted unless --plain), incoming lines shown with
 * ticks, everything shown is marked read; lines starting with `/` are the
 * chat's own commands (slash.ts). On a terminal it keeps a prompt under the
 * incoming lines; with --lines, or when stdin or stdout is not a terminal, it
 * prints plain lines (one message per input line). `/file PATH` sends a file;
 * received files are saved in --save-dir; a transfer's progress bar is the
 * prompt line's prefix on a terminal (one line, updated in place).
 */
import { createInterface } from "node:readline";
import { ServerError, type Sent, type SwitchboardClient } from "../../client/client.ts";
import { statePathFor, type SecureClient } from "../../client/secure.ts";
import { isGroupId } from "../../protocol/stanzas.ts";
import { explain, openClient } from "../connect.ts";
import { codeChanged, deviceEventLine, devicesChangedLine, safetyOf, safetyRows, safetyTitle, secureClient, undecryptableLine, withoutKeys } from "../e2e.ts";
import { checkRecipient, sendText } from "../sending.ts";
import { groupArg, interrupted, need } from "../util.ts";
import { DEFAULT_SAVE_DIR, humanSize, progressBar, SaveDir, throttled, typeOf } from "../files.ts";
import { MediaError, type Progress, type SecureAttachment } from "../../client/secure.ts";
import { GroupTicks, groupEventLine } from "./lines.ts";
import { CHAT_HELP, parseLine } from "./slash.ts";
import { PeerStatus } from "./status.ts";
import { Ticks } from "./ticks.ts";

/** Where the chat's lines go: held until the greeting is out, above the prompt on a terminal. */
class Screen {
  rl: ReturnType<typeof createInterface> | null = null;
  quitting = false;
  private before: string[] | null = [];

  constructor(private readonly tty: boolean) {}

  show = (line: string): void => {
    if (this.quitting) return;
    if (this.before) this.before.push(line);
    else if (this.tty && this.rl) {
      process.stdout.write(`\r\x1b[K${line}\n`);
      this.rl.prompt(true);
    } else process.stdout.write(line + "\n");
  };

  /** Prints the greeting, then what arrived before it. */
  open(greeting: string[]): void {
    for (const l of greeting) process.stdout.write(l + "\n");
    const queued = this.before!;
    this.before = null;
    for (const line of queued) this.show(line);
  }
}

export async function runChat(f: Record<string, string>, usage: string): Promise<number> {
  const to = need(f, "--to", "who to chat with: an account, or a group id", usage);
  const group = isGroupId(to);
  if (group) groupArg(to, usage);
  const plain = f["--plain"] === "true";
  const tty = f["--lines"] !== "true" && process.stdin.isTTY === true && process.stdout.isTTY === true;
  const screen = new Screen(tty);
  const show = screen.show;
  const dec = new TextDecoder();
  let ended: { reason: string; message?: string } | null = null;
  const ticks = new Ticks(show);
  let groupTicks: GroupTicks | null = null;
  let typingShown = false;
  const announced = new Set<string>(); // `linked:3`, `revoked:3`: own-account device changes the server told of
  let secure: SecureClient | null = null;
  let status: PeerStatus | null = null; // the peer's online / last seen / typing (1:1 chats), once the prompt exists
  let peerText = ""; // the peer's status in the prompt
  let greeted = false;
  let saveDir: SaveDir | null = null;
  /** Transfers under way, by number: their progress bars, shown before the prompt. */
  const transfers = new Map<number, string>();
  let transferN = 0;
  const renderPrompt = (redraw = true) => {
    const rl = screen.rl;
    if (!rl) return;
    const base = peerText ? `${client.account} [${to}: ${peerText}] > ` : `${client.account} > `;
    const bars = [...transfers.values()].join("  ");
    rl.setPrompt(bars ? `${bars}  ${base}` : base);
    if (redraw && tty && greeted) rl.prompt(true);
  };
  /** A transfer's progress: in the prompt line on a terminal; with --lines only its start and end are shown (by the caller). */
  const track = (label: string): { progress: (p: Progress) => void; done: () => void } => {
    const n = transferN++;
    return {
      progress: throttled((p) => {
        if (!tty) return;
        transfers.set(n, `${label} ${progressBar(p)}`);
        renderPrompt();
      }),
      done: () => {
        if (transfers.delete(n)) renderPrompt(false);
      },
    };
  };
  const downloads = new Set<Promise<void>>();
  const receive = (c: SwitchboardClient, m: SecureAttachment) => {
    const a = m.attachment;
    const who = m.sync ? `you (device ${m.fromDevice})` : m.from;
    const what = `📎 ${a.name ?? "file"} (${humanSize(a.size)}, ${a.type})`;
    show(m.conversation === to ? `${who}: ${what}` : `[${m.conversation}] ${who}: ${what}`);
    if (m.conversation === to && !m.sync) setImmediate(() => c.markRead(to, m.seq));
    saveDir ??= new SaveDir(f["--save-dir"] ?? DEFAULT_SAVE_DIR);
    const dir = saveDir;
    const dest = dir.claim(a);
    const t = track(`↓ ${a.name ?? "file"}`);
    const p = secure!
      .download(a, dest, { onProgress: t.progress })
      .then(
        (r) => show(`  ✓ saved ${r.path}`),
        (e: Error) => show(`  ✗ ${a.name ?? "file"} not saved: ${e.message}`),
      )
      .finally(() => {
        t.done();
        dir.release(dest);
        downloads.delete(p);
      });
    downloads.add(p);
  };
  const { client } = await openClient(f, usage, {
    reconnect: true,
    autoAck: true,
    setup: async (c) => {
      groupTicks = new GroupTicks(c.account, show);
      const incoming = (m: { conversation: string; from: string; fromDevice: number; sync: boolean; seq: number; text: string }) => {
        const who = m.sync ? `you (device ${m.fromDevice})` : m.from;
        if (m.conversation !== to) return show(`[${m.conversation}] ${who}: ${m.text}`);
        if (!m.sync) typingShown = false;
        show(`${who}: ${m.text}`);
        // After the acknowledgement (queued by the SDK once this handler returns): delivered, then read.
        if (!m.sync) setImmediate(() => c.markRead(to, m.seq));
      };
      if (plain) c.on("message", (m) => incoming({ ...m, text: dec.decode(m.payload) }));
      else {
        const s = (secure = await secureClient(c, statePathFor(f["--key"]!)));
        s.on("message", incoming);
        s.on("attachment", (m) => receive(c, m));
        const how = (peer: string) => (peer ? `type /safety${peer === to ? "" : ` ${peer}`} and compare the number with ${peer}` : "type /safety MEMBER and compare the numbers");
        const peerOf = (account: string) => (account === c.account ? (group ? "" : to) : account);
        s.on("identityChanged", (e) => show(`  ! ${codeChanged(e, c.account, how(peerOf(e.account)))}`));
        s.on("devicesChanged", (e) => {
          // Our own new device was announced by the server already (below): the same news once is enough.
          if (e.account === c.account && e.added.every((d) => announced.has(`linked:${d}`)) && e.removed.every((d) => announced.has(`revoked:${d}`))) return;
          show(`  ! ${devicesChangedLine(e, c.account, how(peerOf(e.account)))}`);
        });
        s.on("undecryptable", (u) => show(undecryptableLine(u)));
        s.on("error", (e) => show(`  ! ${e.message}`));
      }
      c.on("device", (ev) => {
        announced.add(`${ev.op}:${ev.device}`);
        show(`  ! ${deviceEventLine(ev, f["--key"]!)}`);
      });
      c.on("group", (ev) => {
        if (ev.group === to) show(groupEventLine(ev, c.account));
      });
      c.on("receipt", (r) => {
        if (r.with !== to) return;
        if (group) return groupTicks!.receipt(r);
        if (r.account !== to) return;
        if (r.kind === "read") ticks.read(r.seq);
        else if (r.kind === "dlv") ticks.delivery(r.seq);
        else if (r.kind === "exp") show(`  ✗ #${r.seq} expired before ${to}'s device ${r.device} received it`);
      });
      c.on("presence", (v) => {
        if (v.account === to) status?.setView(v);
      });
      c.on("typing", (t) => {
        if (!group && t.account === to) status?.setTyping(t.state === "typing");
        if (group || t.account !== to || t.state !== "typing" || typingShown) return;
        typingShown = true;
        show(`  ${to} is typing…`);
      });
      c.on("close", (x) => {
        if (screen.quitting) return;
        if (x.willReconnect) return show(`  (connection lost: ${x.reason}; reconnecting)`);
        if (c.opts.reconnect) {
          ended = x;
          screen.rl?.close();
        }
      });
      c.on("ready", () => {
        if (c.opts.reconnect) show("  (reconnected)");
      });
    },
  });
  const s = secure as SecureClient | null;
  const title = group ? await groupTitle(client, to).catch(async (e) => {
    await client.close();
    throw e;
  }) : to;
  const rl = (screen.rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty, prompt: `${client.account} > ` }));
  let greetingStatus = "";
  if (!group) {
    // The header: the peer's state as its privacy (and ours) allows; we are using this device while chatting.
    status = new PeerStatus(to, (text, line) => {
      peerText = text;
      renderPrompt(false);
      if (line && greeted) show(line); // the greeting says the first one
      else if (tty && greeted) rl.prompt(true);
    });
    await client.setPresence("active").catch(() => {}); // a server without presence answers unknown_op: no header then
    const [v] = await client.watch([to]).catch(() => []);
    if (v) status.setView(v);
    greetingStatus = status.text;
  }
  const stop = interrupted();
  void stop.done.then(() => rl.close());
  rl.on("SIGINT", () => rl.close()); // ctrl-c on a terminal: leave like ctrl-d
  if (tty && !group) {
    // Tell the peer we are typing, at most every few seconds while keys are pressed; not for the chat's own commands.
    let last = 0;
    process.stdin.on("keypress", (_s: string, key: { name?: string } | undefined) => {
      if (key?.name === "return" || Date.now() - last < 3000 || rl.line.startsWith("/")) return;
      last = Date.now();
      client.typing(to);
    });
  }
  const who = `${title}${greetingStatus ? ` (${greetingStatus})` : ""} as ${client.account} (device ${client.device})`;
  screen.open([
    tty ? `chatting with ${who}; type a line and press enter to send, ctrl-d to quit` : `chatting with ${who}; one message per input line`,
    plain
      ? "  not encrypted (--plain): the server, and whoever runs it, can read these messages"
      : `  end-to-end encrypted; /safety${group ? " MEMBER" : ""} prints the safety number to compare with ${group ? "a member" : to}; /help lists the commands`,
  ]);
  greeted = true;
  if (tty) rl.prompt();
  const warned = new Set<number>();
  const safety = (arg: string) => {
    const peer = arg || (group ? "" : to);
    if (!s) return show("  /safety needs end-to-end encryption: chat without --plain");
    if (!peer || isGroupId(peer)) return show("  in a group, name the member: /safety ACCOUNT");
    void safetyOf(s, peer).then(
      (n) => {
        show(`  ${safetyTitle(client.account, peer)}:`);
        for (const row of safetyRows(n)) show(`    ${row}`);
        show(peer === client.account ? "  each of your devices shows the same digits unless someone sits between them" : `  ${peer} sees the same digits unless someone sits between you`);
      },
      (e: Error) => show(`  ✗ no safety number: ${explain(e, client.opts).message}`),
    );
  };
  const warnKeyless = async () => {
    for (const d of await withoutKeys(client, to)) {
      if (warned.has(d)) continue;
      warned.add(d);
      show(`  ! ${to}'s device ${d} has no end-to-end keys: it gets a notice instead of your messages`);
    }
  };
  const block = (op: "block" | "unblock", arg: string) => {
    const who = arg || (group ? "" : to);
    if (!who || isGroupId(who)) return show(`  in a group, name the account: /${op} ACCOUNT`);
    void (op === "block" ? client.block(who) : client.unblock(who)).then(
      () => show(op === "block" ? `  blocked ${who}: no messages, typing or presence between you; /unblock to undo` : `  unblocked ${who}`),
      (e: Error) => show(`  ✗ not ${op}ed: ${explain(e, client.opts).message}`),
    );
  };
  const pending = new Set<Promise<Sent | void>>();
  const send = (text: string) => {
    ticks.sending();
    const p: Promise<Sent | void> = checkRecipient(client, to)
      .then(() => sendText(client, s, to, text))
      .then(
        (sent) => {
          if (!group) ticks.sent(sent.seq);
          else show(`  ✓ sent #${sent.seq}`);
          if (s && !group) return warnKeyless();
        },
        (e: Error) => {
          if (!group) ticks.failed();
          show(`  ✗ not sent: ${explain(e, client.opts).message}`);
        },
      )
      .catch((e: Error) => show(`  ! ${explain(e, client.opts).message}`));
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };
  const sendFile = (path: string) => {
    if (!s) return show("  /file needs end-to-end encryption: chat without --plain");
    if (!path) return show("  /file PATH: name the file to send");
    const name = path.split(/[\\/]/).pop() || path;
    const t = track(`↑ ${name}`);
    if (!tty) show(`  ↑ sending ${name}`);
    ticks.sending();
    const p: Promise<void> = checkRecipient(client, to)
      .then(() => s.sendFile(to, path, { type: typeOf(path), onProgress: t.progress }))
      .then(
        ({ sent, attachment }) => {
          t.done();
          show(`  📎 ${name} (${humanSize(attachment.size)}) uploaded`);
          if (!group) ticks.sent(sent.seq);
          else show(`  ✓ sent #${sent.seq}`);
        },
        (e: Error) => {
          t.done();
          if (!group) ticks.failed();
          show(`  ✗ ${name} not sent: ${e instanceof MediaError ? e.message : explain(e, client.opts).message}`);
        },
      );
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };
  for await (const line of rl) {
    const l = parseLine(line);
    if (l.kind === "message") send(l.text);
    else if (l.kind === "unknown") show(`  unknown command /${l.name}: not sent; /help lists the commands (//text sends a line starting with /)`);
    else if (l.kind === "command" && l.name === "help") for (const h of CHAT_HELP) show(h);
    else if (l.kind === "command" && l.name === "safety") safety(l.arg);
    else if (l.kind === "command" && l.name === "file") sendFile(l.arg);
    else if (l.kind === "command" && (l.name === "block" || l.name === "unblock")) block(l.name, l.arg);
    else if (l.kind === "command" && l.name === "quit") break;
    if (tty) rl.prompt();
  }
  if ((pending.size || downloads.size) && !ended) {
    const all = Promise.allSettled([...pending, ...downloads]);
    const slow = setTimeout(() => show(`  (waiting for ${pending.size} message${pending.size === 1 ? "" : "s"} to be sent${downloads.size ? ` and ${downloads.size} download${downloads.size === 1 ? "" : "s"}` : ""}; ctrl-c to quit anyway)`), 500);
    await Promise.race([all, stop.done]);
    clearTimeout(slow);
  }
  stop.cancel();
  screen.quitting = true;
  rl.close();
  if (tty) process.stdout.write("\n"); // leave the shell prompt on a line of its own
  await s?.close();
  await client.close();
  if (ended) {
    const e = ended as { reason: string; message?: string };
    throw explain(new ServerError(e.reason, e.message ?? "the connection closed"), client.opts);
  }
  return 0;
}

/** `"team" (#k3x9)`: the group's name as its members know it, with its id; the id alone if it cannot be read. */
async function groupTitle(c: SwitchboardClient, g: string): Promise<string> {
  try {
    return `"${(await c.groupInfo(g)).name}" (${g})`;
  } catch (e) {
    throw explain(e, c.opts);
  }
}
