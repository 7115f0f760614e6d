/**
 * A hung peer node (SIGSTOPped: its heartbeat and leases still alive for the long TTL, its node link's TCP
 * connection open, nothing read or answered) does not make its peers wait or hold without end (issue 12, docs/CLUSTER.md
 * "Node links"). 3 real `switchboard serve` processes and a private redis-server, cluster.iq_timeout 2000 and
 * cluster.link_held_items 20 for the test. Proves, over real sockets:
 * - a `group.*` iq forwarded to the hung group's node is answered by the device's own node with
 *   `retry_after {lost: true}` once cluster.iq_timeout passed (counted with why="timeout"); after SIGCONT the
 *   late answer, with the old id, still comes, and the SDK, whose request got the same timeout first, settles
 *   with the answer of its retry (the late one ignored);
 * - an iq that waits here for the hung node's answer (the devices of an account homed there) is answered
 *   `retry_after` (without `lost`: nothing was done) once cluster.iq_timeout passed;
 * - 1:1 sends whose copies go to the hung node are held up to the bound (gauge switchboard_cluster_link_held_items),
 *   the rest refused with retry_after naming the bound (nothing accepted); after SIGCONT every accepted one ends
 *   `sent` and is delivered once, in order, and none of the refused ones was delivered.
 * - a `gmsg` forwarded to the hung group's node is answered `err retry_after {lost}` once cluster.iq_timeout passed
 *   (counted with why="gmsg_timeout"); the SDK sends it again with the same id, and after SIGCONT every member gets
 *   it once (the group's node dedups the resends by the sender's message id), before a message sent after it;
 * - a `read` marker waiting here for the hung node's answer (its peer's entry) is answered `err retry_after` without
 *   id naming the marker (`x.u`, `x.seq`) once cluster.iq_timeout passed; the SDK sends the marker again, so the
 *   peer gets its `rcpt read` after SIGCONT;
 * - `cluster status` shows what n1's link holds for the hung node (items, bytes) beside its lag.
 * Checked by mutation: without the deadline (ops.ts sweep, Dispatch.afterPrefetch) the iq is never answered; without the gate (node.ts
 * linkFull) nothing is refused and the held count passes the bound. No timing assertions: answers are waited for.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, allHeld, homeOf, threeNodes } from "./three-nodes.ts";
import { ServerError } from "../../src/client/types.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { waitFor, type TestServer } from "../helpers/harness.ts";
import { barrier, dec, enc, rawLogin } from "../wire/util.ts";
import { BUN, MAIN, ROOT } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";

const TTL = 20_000; // a stop of a few seconds keeps the stopped node "up": only the new limits can answer
const IQ_TIMEOUT = 2_000;
const HELD = 20;
const { nodes, device, connect } = threeNodes(TTL, ["--cluster-iq-timeout", String(IQ_TIMEOUT), "--cluster-link-held-items", String(HELD)]);
const node = (id: string) => nodes.get(id)!;
const lost = (n: TestServer, why: string) => n.metric("switchboard_cluster_iqs_lost_total", `{why="${why}"}`);
const held = (from: string, to: string) => node(from).metric("switchboard_cluster_link_held_items", `{peer="${to}"}`);

type Answer = { t: string; id?: string | number; ok?: boolean; e?: string; m?: string; x?: { retry_ms?: number; lost?: boolean }; r?: unknown };

/** A device enrolled on its home, sent again after `try_again`: a node just let go after a stop refuses while it lags (admission). */
async function enrolled(account: string): Promise<KeyFile> {
  for (;;) {
    try {
      return await device(account);
    } catch (e) {
      if (!(e instanceof ServerError && e.code === "try_again")) throw e;
      await Bun.sleep((e.detail as { retry_ms?: number } | undefined)?.retry_ms ?? 500);
    }
  }
}

/** Stops `n` for the body, and lets it go again whatever happens. */
async function stopped<T>(n: TestServer, body: () => Promise<T>): Promise<T> {
  n.proc.kill("SIGSTOP");
  try {
    return await body();
  } finally {
    n.proc.kill("SIGCONT");
  }
}

/** `switchboard cluster status` against node `n`'s HTTP port: its output. */
async function statusCli(n: TestServer): Promise<string> {
  const p = Bun.spawn([BUN, MAIN, "cluster", "status", "--http-port", String(n.http)], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return out + err;
}

describe("a hung peer node, 3 server processes and redis-server", () => {
  test("an iq forwarded to a hung group's node is answered retry_after {lost} after cluster.iq_timeout; the late answer is harmless", async () => {
    const [n1, n2] = [node("n1"), node("n2")];
    const owner = await connect(await device(accountOn("n2", "ho_")), "n2");
    const kadmin = await device(accountOn("n1", "ha_"));
    const { g } = await owner.createGroup("hung", [kadmin.account]);
    expect(homeOf(g)).toBe("n2");
    const raw = await rawLogin(n1, kadmin);
    raw.send({ t: "iq", id: 7001, op: "group.info", a: { g } });
    expect(((await raw.expect((s) => s.t === "res" && s.id === 7001, 30_000)) as Answer).ok).toBe(true); // the way works
    const admin = await connect(await device(kadmin.account), "n1"); // a second device: one login per device
    const before = await lost(n1, "timeout");
    const dropped = await lost(n1, "link_dropped");

    let sdk: Promise<unknown> | undefined;
    const first = await stopped(n2, async () => {
      raw.send({ t: "iq", id: 7002, op: "group.info", a: { g } });
      const a = (await raw.expect((s) => s.t === "res" && s.id === 7002, 30_000)) as Answer;
      // The SDK's request meets the same deadline; it sends it again by itself (Session.request), in vain while n2 is stopped.
      sdk = admin.groupInfo(g);
      await waitFor(async () => (await lost(n1, "timeout")) >= before + 2, "n1 to answer the SDK's request lost too", 30_000);
      return a;
    });
    expect(first).toMatchObject({ t: "res", id: 7002, ok: false, e: "retry_after", x: { lost: true } });
    expect(typeof first.x?.retry_ms).toBe("number");
    expect(first.m).toContain("did not answer within");
    expect(await lost(n1, "link_dropped")).toBe(dropped); // the link stayed up: only the deadline answered

    // n2 runs what it was sent while stopped: the late answer to 7002 comes with its old id, after the lost one.
    const late = (await raw.expect((s) => s.t === "res" && s.id === 7002, 30_000)) as Answer;
    expect(late.ok).toBe(true);
    // The SDK's promise settles once: with its retry's answer (the late answers of its lost attempts had no
    // request waiting), or, if every retry met the deadline too, with the retry_after {lost} of the last one.
    const r = await sdk!.then((info) => ({ info }), (e: unknown) => ({ e }));
    if ("info" in r) expect((r.info as { members: { u: string }[] }).members.map((m) => m.u).sort()).toEqual([kadmin.account, owner.account].sort());
    else expect(r.e instanceof ServerError && r.e.code === "retry_after" && (r.e.detail as { lost?: boolean }).lost).toBe(true);
    // And the next request gets its own answer, not a late one of an earlier id.
    expect((await admin.groupInfo(g)).members.length).toBe(2);
    raw.end();
  }, 120_000);

  test("an iq waiting on a hung node's answer here (devices {u} of an account homed there, not known here): retry_after after cluster.iq_timeout", async () => {
    const [n1, n3] = [node("n1"), node("n3")];
    const u = accountOn("n3", "hd_");
    await enrolled(u); // enrolled on n3 after n1 started: n1 has never had its devices
    const c = await rawLogin(n1, await enrolled(accountOn("n1", "hq_")));
    const a = await stopped(n3, async () => {
      c.send({ t: "iq", id: 9001, op: "devices", a: { u } });
      return (await c.expect((x) => x.t === "res" && x.id === 9001, 30_000)) as Answer;
    });
    expect(a).toMatchObject({ ok: false, e: "retry_after" });
    expect(typeof a.x?.retry_ms).toBe("number");
    expect(a.x?.lost).toBeUndefined(); // the module never ran: nothing was done
    expect(a.m).toContain("did not answer within");
    // n3 is back: the same question is answered from there.
    c.send({ t: "iq", id: 9002, op: "devices", a: { u } });
    expect(((await c.expect((x) => x.t === "res" && x.id === 9002, 30_000)) as Answer).ok).toBe(true);
    c.end();
  }, 120_000);

  test("1:1 sends towards a hung node: held up to cluster.link_held_items, the rest refused retry_after; after SIGCONT the accepted ones once, in order", async () => {
    const [n1, n3] = [node("n1"), node("n3")];
    const s = accountOn("n1", "a_hs"), r = accountOn("n3", "b_hr");
    expect(s < r).toBe(true); // the conversation is numbered on s's home: no number request to n3 in the way
    const [ks, kr] = [await enrolled(s), await enrolled(r)];
    const got: string[] = [];
    await connect(kr, "n3", (c) => c.on("message", (m) => void got.push(dec(m.payload))));
    const cs = await rawLogin(n1, ks);
    const answer = (id: string, ms = 30_000) => cs.expect((x) => (x.t === "sent" || x.t === "err") && (x as Answer).id === id, ms) as Promise<Answer>;
    const send = (id: string) => cs.send({ t: "msg", id, to: r, p: [[kr.device, enc(id)]] });
    // The way works first (and n1 has r's device list): retried while n1 asks n3 for it.
    for (;;) {
      send("w0");
      const a = await answer("w0");
      if (a.t === "sent") break;
      expect(a.e).toBe("retry_after");
      await Bun.sleep(a.x?.retry_ms ?? 50);
    }
    await waitFor(() => got.includes("w0"), "w0 delivered");
    await waitFor(async () => (await held("n1", "n3")) === 0, "n1's link to n3 idle");
    const refusedBefore = await n1.metric("switchboard_cluster_link_full_refusals_total");

    const accepted: string[] = [], refused: Answer[] = [];
    let most = 0;
    await stopped(n3, async () => {
      for (let k = 0; k < 3 * HELD; k++) {
        const id = `h${k}`;
        send(id);
        await barrier(cs); // a refusal comes before the pong; an accepted send has no answer while n3 is stopped
        const a = cs.received.find((x) => x.t === "err" && (x as Answer).id === id) as Answer | undefined;
        if (a === undefined) accepted.push(id);
        else refused.push(await answer(id)); // taken from the inbox: a later answer of this id is the next one
        most = Math.max(most, await held("n1", "n3"));
      }
      expect(cs.received.some((x) => x.t === "sent" && String((x as Answer).id).startsWith("h"))).toBe(false);
      // `cluster status` on n1: the link to n3 holds the bound (items, then their bytes), beside its lag, the last column.
      const st = await statusCli(n1);
      expect(st).toMatch(/link held\s+link lag$/m);
      expect(st).toMatch(new RegExp(`^n3\\s+up\\s.*ms ago\\s+${HELD} \\(\\d+\\.\\d KiB\\)\\s+\\d+$`, "m"));
      expect(st).toMatch(/^n1\s+up\s.*ms ago\s+-\s+-$/m);
    });
    // Exactly the bound accepted (each send's copies one item; nothing else went to n3), the rest refused.
    expect(accepted).toEqual(Array.from({ length: HELD }, (_, k) => `h${k}`));
    expect(most).toBe(HELD);
    expect(refused.length).toBe(2 * HELD);
    for (const a of refused) {
      expect(a.e).toBe("retry_after");
      expect(typeof a.x?.retry_ms).toBe("number");
      expect(a.m).toContain("cluster.link_held_items");
    }
    expect(await n1.metric("switchboard_cluster_link_full_refusals_total")).toBe(refusedBefore + 2 * HELD);

    // n3 is back: every accepted send ends sent, delivered once and in order; nothing refused was delivered.
    for (const id of accepted) expect((await answer(id)).t).toBe("sent");
    await waitFor(() => got.length >= 1 + HELD, "the accepted messages delivered", 30_000);
    await waitFor(async () => (await held("n1", "n3")) === 0, "n1's link to n3 acknowledged", 30_000);
    await barrier(cs);
    expect(got).toEqual(["w0", ...accepted]);
    // A refused send was not accepted: sent again now (same id), it is accepted and delivered once.
    const again = String(refused[0]!.id);
    await Bun.sleep(refused[0]!.x!.retry_ms!);
    send(again);
    expect((await answer(again)).t).toBe("sent");
    await waitFor(() => got.length === 2 + HELD, "the resent message delivered", 30_000);
    expect(got).toEqual(["w0", ...accepted, again]);
    cs.end();
  }, 120_000);
  test("a gmsg forwarded to a hung group's node: err retry_after {lost} after cluster.iq_timeout; the SDK's resends delivered once to every member", async () => {
    const [n1, n2] = [node("n1"), node("n2")];
    const [ko, ks, km] = [await enrolled(accountOn("n2", "go_")), await enrolled(accountOn("n1", "gs_")), await enrolled(accountOn("n3", "gm_"))];
    const got: Record<string, string[]> = { o: [], m: [] };
    const errors: string[] = [];
    const owner = await connect(ko, "n2", (c) => c.on("message", (m) => void got.o!.push(dec(m.payload))));
    await connect(km, "n3", (c) => c.on("message", (m) => void got.m!.push(dec(m.payload))));
    const sender = await connect(ks, "n1", (c) => c.on("error", (e) => void errors.push(String(e))));
    const { g } = await owner.createGroup("hung gmsg", [ks.account, km.account]);
    expect(homeOf(g)).toBe("n2");
    await sender.sendGroup(g, "before"); // the way works
    await waitFor(() => got.o!.includes("before") && got.m!.includes("before"), "the first group message delivered", 30_000);
    const before = await lost(n1, "gmsg_timeout");

    let sent: Promise<unknown> | undefined;
    await stopped(n2, async () => {
      sent = sender.sendGroup(g, "while hung");
      // Answered lost at the deadline, sent again by the SDK (same id) and answered lost again: resends are in n1's link.
      await waitFor(async () => (await lost(n1, "gmsg_timeout")) >= before + 2, "n1 to answer the gmsg and its resend lost", 30_000);
    });
    const r = (await sent) as { id: string; seq: number };
    expect(typeof r.seq).toBe("number");
    await sender.sendGroup(g, "after"); // behind every resend in the group's order: a doubled one would come before it
    await waitFor(() => got.o!.includes("after") && got.m!.includes("after"), "the message sent after it delivered", 30_000);
    expect(got.o).toEqual(["before", "while hung", "after"]);
    expect(got.m).toEqual(["before", "while hung", "after"]);
    expect(errors).toEqual([]); // the SDK handled the retry_after itself
  }, 120_000);

  test("a read marker waiting on a hung node's answer: err retry_after naming the marker after cluster.iq_timeout; the SDK sends it again", async () => {
    const [n1, n3] = [node("n1"), node("n3")];
    const s = accountOn("n1", "rs_"), r = accountOn("n3", "rr_");
    const [ks, kr] = [await enrolled(s), await enrolled(r)];
    const receipts: { kind: string; account: string; seq: number }[] = [];
    const R = await connect(kr, "n3", (c) => c.on("receipt", (x) => void receipts.push({ kind: x.kind, account: x.account, seq: x.seq })));
    const m = await R.send(s, "read me");
    // n1 learned r's entry when the message came; restarted, it has to ask n3 again before s's marker.
    await n1.kill9(); // not stop(): a SIGTERM drains its shards to the other nodes
    await n1.restart();
    await allHeld(nodes);
    const raw = await rawLogin(n1, await enrolled(s)); // a second device of s
    const errors: string[] = [];
    const S = await connect(ks, "n1", (c) => c.on("error", (e) => void errors.push(String(e))));
    const timedOut = () => n1.metric("switchboard_cluster_waits_timed_out_total", `{what="read"}`);
    const e = await stopped(n3, async () => {
      raw.send({ t: "read", u: r, seq: m.seq });
      const a = (await raw.expect((x) => x.t === "err", 30_000)) as Answer & { x?: { u?: string; seq?: number } };
      S.markRead(r, m.seq);
      await waitFor(async () => (await timedOut()) >= 2, "n1 to answer the SDK's marker retry_after too", 30_000);
      return a;
    });
    expect(e).toMatchObject({ t: "err", e: "retry_after", x: { u: r, seq: m.seq } });
    expect(e.id).toBeUndefined();
    expect(typeof e.x?.retry_ms).toBe("number");
    expect(e.m).toContain("did not answer within");
    // n3 is back: the SDK's marker, sent again, is taken and r gets its read receipt.
    await waitFor(() => receipts.some((x) => x.kind === "read" && x.account === s && x.seq === m.seq), "r's read receipt", 30_000);
    expect(errors).toEqual([]);
    raw.end();
  }, 120_000);
});
