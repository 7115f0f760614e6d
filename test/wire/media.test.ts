/**
 * Attachments end to end, through the SDK (src/client/media.ts) against a real
 * server process over real sockets: a 6 MB file 1:1 and to a group, every
 * recipient's plaintext equal to the original; a blob changed on the server's
 * disk refused by the SDK (bad_digest, nothing saved); kill -9 of the server in
 * the middle of an upload, and the upload resumes from the offset the new
 * process reports on HEAD (not from zero); the CLI's `send --file` to
 * `listen --save-dir`.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV, LineProcess } from "../helpers/line-process.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import { MediaError, SecureClient, type SecureAttachment } from "../../src/client/secure.ts";
import { blobSize, uploadAttachment, type Progress } from "../../src/client/media.ts";
import { downloadAttachment } from "../../src/client/media-download.ts";

setDefaultTimeout(120_000); // a bound on waiting, not a timing assertion

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "sb-media-"));
});
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Dev {
  c: SwitchboardClient;
  s: SecureClient;
  got: SecureAttachment[];
}

async function secure(srv: TestServer, kf: KeyFile): Promise<Dev> {
  const c = await srv.client(kf);
  const d: Dev = { c, s: await SecureClient.open(c, { statePath: join(work, `${kf.account}-${kf.device}-${randomBytes(4).toString("hex")}.e2e`), otkTarget: 10 }), got: [] };
  d.s.on("attachment", (a) => d.got.push(a));
  await d.s.whenPublished();
  return d;
}

/** The `media.upload` arguments `c` sends, seen on their way to the real server (the requests still go). */
function uploadArgs(c: SwitchboardClient): Record<string, unknown>[] {
  const seen: Record<string, unknown>[] = [];
  const request = c.request.bind(c);
  c.request = ((op: string, a?: Record<string, unknown>) => {
    if (op === "media.upload") seen.push({ ...a });
    return request(op, a);
  }) as typeof c.request;
  return seen;
}

describe("SDK roundtrips (one server)", () => {
  let srv: TestServer;
  let alice: Dev, bob: Dev, carol: Dev;
  beforeAll(async () => {
    srv = await startServer({ args: ["--media-disk-high-water", "100"] });
    alice = await secure(srv, await srv.newDevice("alice"));
    bob = await secure(srv, await srv.newDevice("bob"));
    carol = await secure(srv, await srv.newDevice("carol"));
  });
  afterAll(async () => {
    for (const d of [alice, bob, carol]) await d?.c.close();
    srv?.cleanup();
  });

  test("a 6 MB file 1:1 and to a group: every recipient decrypts exactly the original", async () => {
    const plain = randomBytes(6_000_000);
    const path = join(work, "video.mp4");
    writeFileSync(path, plain);
    const ups: Progress[] = [];
    const { attachment } = await alice.s.sendFile("bob", path, { type: "video/mp4", onProgress: (p) => ups.push(p) });
    expect(attachment).toMatchObject({ size: 6_000_000, type: "video/mp4", name: "video.mp4" });
    expect(ups.at(-1)).toMatchObject({ phase: "upload" });
    expect(ups.at(-1)!.done).toBe(ups.at(-1)!.total);
    await waitFor(() => bob.got.length === 1, "bob's attachment");
    const mine = join(work, "bob-video.mp4");
    await bob.s.download(bob.got[0]!.attachment, mine);
    expect(sha(readFileSync(mine))).toBe(sha(plain));

    const { g } = await alice.c.createGroup("films", ["bob", "carol"]);
    await alice.s.sendFile(g, path, { type: "video/mp4" });
    await waitFor(() => bob.got.length === 2 && carol.got.length === 1, "the group's attachment at bob and carol");
    for (const [who, a] of [["bob", bob.got[1]!], ["carol", carol.got[0]!]] as const) {
      expect(a.group).toBe(true);
      const dest = join(work, `${who}-group.mp4`);
      await (who === "bob" ? bob : carol).s.download(a.attachment, dest);
      expect(sha(readFileSync(dest))).toBe(sha(plain));
    }
    expect(await srv.metric("switchboard_media_uploads_total")).toBe(2);
    expect(await srv.metric("switchboard_media_downloads_total")).toBe(3);
  });

  test("a blob changed on the server's disk is refused by the SDK (bad_digest) and nothing is saved", async () => {
    const path = join(work, "note.txt");
    writeFileSync(path, randomBytes(50_000));
    const { attachment } = await alice.s.sendFile("bob", path);
    const file = join(srv.dataDir, "media", "blobs", attachment.id.slice(0, 2), attachment.id);
    const blob = readFileSync(file);
    blob[1000] = blob[1000]! ^ 0x01;
    writeFileSync(file, blob);
    const dest = join(work, "tampered.txt");
    const e = await bob.s.download(attachment, dest).then(() => null, (e: unknown) => e);
    expect(e).toBeInstanceOf(MediaError);
    expect((e as MediaError).code).toBe("bad_digest");
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(`${dest}.part`)).toBe(false);
    expect(existsSync(`${dest}.tmp`)).toBe(false);
  });

  test("media.delete_after_download off: the hello says nothing of it and sendFile declares no recipient count", async () => {
    const seen = uploadArgs(alice.c);
    expect(alice.c.hello?.dd).toBeUndefined();
    const path = join(work, "plain.txt");
    writeFileSync(path, randomBytes(1000));
    await alice.s.sendFile("bob", path);
    const { g } = await alice.c.createGroup("notes", ["bob", "carol"]);
    await alice.s.sendFile(g, path);
    expect(seen).toHaveLength(2);
    for (const a of seen) expect(a).toEqual({ size: blobSize(1000) });
  });
});

describe("media.delete_after_download: sendFile declares the devices the message goes to", () => {
  test("1:1 to two devices of bob: both download through the SDK, then 410 and the bytes leave at the next sweep; a group counts its member devices", async () => {
    const srv = await startServer({ args: ["--media-delete-after-download", "true", "--media-sweep-every", "1", "--media-disk-high-water", "100"] });
    const devs: Dev[] = [];
    try {
      const alice = await secure(srv, await srv.newDevice("alice"));
      const bob1 = await secure(srv, await srv.newDevice("bob"));
      const bob2 = await secure(srv, await srv.newDevice("bob"));
      const carol = await secure(srv, await srv.newDevice("carol"));
      devs.push(alice, bob1, bob2, carol);
      expect(alice.c.hello?.dd).toBe(true);
      const seen = uploadArgs(alice.c);
      const plain = randomBytes(40_000);
      const path = join(work, "dad.bin");
      writeFileSync(path, plain);
      const { attachment } = await alice.s.sendFile("bob", path);
      // Bob's two devices; alice has no other device to get the copy.
      expect(seen[0]).toEqual({ size: blobSize(40_000), n: 2 });
      await waitFor(() => bob1.got.length === 1 && bob2.got.length === 1, "the attachment at both of bob's devices");
      const file = join(srv.dataDir, "media", "blobs", attachment.id.slice(0, 2), attachment.id);
      for (const [i, d] of [bob1, bob2].entries()) {
        const dest = join(work, `dad-bob${i + 1}.bin`);
        await d.s.download(d.got[0]!.attachment, dest);
        expect(sha(readFileSync(dest))).toBe(sha(plain));
        if (i === 0) expect((await fetch(attachment.url, { headers: { Range: "bytes=0-9" } })).status).toBe(206); // one of two: kept
      }
      const late = await fetch(attachment.url);
      expect(late.status).toBe(410);
      expect(await late.json()).toMatchObject({ error: "gone", why: "downloaded" });
      const e = await bob1.s.download(bob1.got[0]!.attachment, join(work, "dad-again.bin")).then(() => null, (e: unknown) => e);
      expect((e as MediaError).code).toBe("gone");
      await waitFor(async () => (await srv.metric("switchboard_media_swept_total", '{why="downloaded"}')) === 1, "the sweep to delete it");
      expect(existsSync(file)).toBe(false);

      // A group: bob's two devices and carol's one; alice's own other device, once she has one, is counted too.
      const { g } = await alice.c.createGroup("dad", ["bob", "carol"]);
      await alice.s.sendFile(g, path);
      expect(seen[1]).toEqual({ size: blobSize(40_000), n: 3 });
      const alice2 = await secure(srv, await srv.newDevice("alice"));
      devs.push(alice2);
      // Alice's client learns of her new device and its keys from the server's events (evt dev, then the keys).
      await waitFor(async () => (await alice.c.devices("alice")).includes(alice2.c.device) && alice.c.keyVersion("alice", alice2.c.device) !== 0, "alice2 in alice's device list, with keys");
      await alice.s.sendFile("bob", path);
      expect(seen[2]).toEqual({ size: blobSize(40_000), n: 3 });
    } finally {
      for (const d of devs) await d.c.close();
      srv.cleanup();
    }
  });
});

describe("kill -9 in the middle of an upload", () => {
  test("the upload resumes from the offset the restarted server reports, not from zero, and the blob is whole", async () => {
    const srv = await startServer({ args: ["--media-disk-high-water", "100"] });
    try {
      const kf = await srv.newDevice("alice");
      const c = await srv.client(kf, { reconnect: false });
      const plain = randomBytes(24 << 20);
      const path = join(work, "big.bin");
      writeFileSync(path, plain);
      const httpPort = srv.http;
      let killed: Promise<void> | null = null;
      let sentBeforeKill = 0;
      const after: number[] = []; // upload progress reported after the kill
      const upload = uploadAttachment((op, a) => c.request(op, a), path, {
        chunkBytes: 1 << 20,
        onProgress: (p) => {
          if (p.phase !== "upload") return;
          if (killed !== null) after.push(p.done);
          else if (p.done >= 8 << 20) {
            // Here, between two PATCHes (this runs after a 204, before the next one starts): the next fails.
            sentBeforeKill = p.done;
            srv.proc.kill("SIGKILL");
            killed = srv.proc.exited.then(() => srv.restart(["--media-disk-high-water", "100", "--http-port", String(httpPort)]));
          }
        },
      });
      const att = await upload;
      await killed;
      expect(srv.http).toBe(httpPort);
      // The first report after the kill is where the new process said the upload was (HEAD's Upload-Offset).
      const from = after[0]!;
      expect(from).toBeGreaterThan(0);
      expect(from).toBeLessThanOrEqual(sentBeforeKill);
      // The new process received exactly the rest: nothing was sent again from the start.
      expect(await srv.metric("switchboard_media_upload_bytes_total")).toBe(blobSize(plain.length) - from);
      const dest = join(work, "big.out");
      await downloadAttachment(att, dest);
      expect(sha(readFileSync(dest))).toBe(sha(plain));
      c.close();
    } finally {
      srv.cleanup();
    }
  });
});

describe("CLI", () => {
  test("send --file to listen --save-dir: the file is saved under its name and listen prints its path", async () => {
    const srv = await startServer({ args: ["--media-disk-high-water", "100"] });
    const running = new Set<import("bun").Subprocess>();
    const cwd = mkdtempSync(join(work, "cli-"));
    try {
      const sb = async (args: string[]) => {
        const p = Bun.spawn([process.execPath, join(ROOT, "src/cli/main.ts"), ...args], { cwd, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
        const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
        if (code !== 0) throw new Error(`switchboard ${args.join(" ")}: exit ${code}\n${out}\n${err}`);
        return out;
      };
      for (const a of ["alice", "bob"]) await sb(["device", "enroll", "--user", a, "--code", srv.addUser(a), "--key", `${a}.key`, "--port", String(srv.tcp)]);
      const listen = new LineProcess([process.execPath, join(ROOT, "src/cli/main.ts"), "listen", "--key", "bob.key", "--port", String(srv.tcp), "--save-dir", "inbox"], { cwd, env: CLEAN_ENV, track: running });
      await listen.event("ready");
      const plain = randomBytes(300_000);
      writeFileSync(join(cwd, "report.pdf"), plain);
      const lines = (await sb(["send", "--key", "alice.key", "--port", String(srv.tcp), "--to", "bob", "--file", "report.pdf"])).trim().split("\n").map((l) => JSON.parse(l));
      expect(lines.some((l) => l.event === "sent")).toBe(true);
      const got = await listen.event("file");
      expect(got).toMatchObject({ from: "alice", name: "report.pdf", size: 300_000 });
      expect(got.path).toBe(join(cwd, "inbox", "report.pdf"));
      expect(sha(readFileSync(got.path))).toBe(sha(plain));
      expect(readdirSync(join(cwd, "inbox"))).toEqual(["report.pdf"]);
      expect(await listen.signal("SIGTERM")).toBe(0);
    } finally {
      for (const p of running) p.kill("SIGKILL");
      srv.cleanup();
    }
  });
});
