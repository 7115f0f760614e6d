/**
 * The end-to-end proof (test/wire/e2e-proof.test.ts) extended to attachments:
 * a file whose content, name and type carry known markers goes 1:1 and to a
 * group through a running server, its TCP connections and its HTTP port each
 * behind a capturing proxy, once with media.store = disk and once with s3 (a
 * real s3rver). None of the markers is in any byte that crossed either proxy,
 * in any file under the data directory, nor in s3rver's files; every recipient
 * decrypts the original.
 *
 * A control makes the test able to fail: a blob uploaded without encryption
 * (a raw tus PATCH) must be found in the HTTP capture and in the store.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { capturingProxy, filesUnder } from "../helpers/capture.ts";
import { startS3rver, S3RVER_KEYS, type S3rver } from "../helpers/s3rver.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import type { KeyFile } from "../../src/client/keys.ts";
import { SecureClient, type SecureAttachment } from "../../src/client/secure.ts";

setDefaultTimeout(120_000); // a bound on waiting, not a timing assertion

const work = mkdtempSync(join(tmpdir(), "sb-proof-media-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

for (const store of ["disk", "s3"] as const) {
  describe(`attachments, media.store = ${store}`, () => {
    let srv: TestServer | null = null;
    let s3: S3rver | null = null;
    afterAll(async () => {
      srv?.cleanup();
      await s3?.stop();
    });

    test("no marker of an attachment's content, name or type on the wire (TCP, HTTP), on disk or in S3; recipients decrypt the original", async () => {
      let httpUpstream = 0;
      const http = await capturingProxy(() => httpUpstream);
      let tcpUpstream = 0;
      const tcp = await capturingProxy(() => tcpUpstream);
      const args = ["--media-disk-high-water", "100", "--media-public-url", `http://127.0.0.1:${http.port}`];
      if (store === "s3") {
        s3 = await startS3rver();
        args.push("--media-store", "s3", "--media-s3-endpoint", s3.endpoint, "--media-s3-bucket", s3.bucket, "--media-s3-region", "us-east-1",
          "--media-s3-access-key-id", S3RVER_KEYS.accessKeyId, "--media-s3-secret-access-key", S3RVER_KEYS.secretAccessKey);
      }
      srv = await startServer({ args });
      httpUpstream = srv.http;
      tcpUpstream = srv.tcp;
      const devs: { c: SwitchboardClient; s: SecureClient; got: SecureAttachment[] }[] = [];
      const secure = async (kf: KeyFile) => {
        const c = new SwitchboardClient({ host: "127.0.0.1", port: tcp.port, key: kf });
        const d = { c, s: await SecureClient.open(c, { statePath: join(work, `${store}-${kf.account}.e2e`), otkTarget: 10 }), got: [] as SecureAttachment[] };
        d.s.on("attachment", (a) => d.got.push(a));
        await c.connect();
        await d.s.whenPublished();
        devs.push(d);
        return d;
      };
      const a = await secure(await srv.newDevice("alice"));
      const b = await secure(await srv.newDevice("bob"));
      const c = await secure(await srv.newDevice("carol"));

      const marker = (what: string) => `attachment-proof/${what}/${randomBytes(12).toString("hex")}`;
      const m = { content: marker("content"), name: marker("name"), type: marker("type") };
      // The content marker many times over, so that any plaintext block of the file would show it.
      const plain = Buffer.concat([randomBytes(1000), ...Array.from({ length: 2000 }, () => Buffer.from(m.content + "\n"))]);
      const path = join(work, `${store}.txt`);
      writeFileSync(path, plain);
      await a.s.sendFile("bob", path, { name: m.name, type: m.type });
      const { g } = await a.c.createGroup("proof", ["bob", "carol"]);
      await a.s.sendFile(g, path, { name: m.name, type: m.type });
      await waitFor(() => b.got.length === 2 && c.got.length === 1, "the attachments at bob and carol");
      for (const [i, x] of [[0, b.got[0]!], [1, b.got[1]!], [2, c.got[0]!]] as const) {
        expect(x.attachment).toMatchObject({ name: m.name, type: m.type, size: plain.length });
        const dest = join(work, `${store}-out-${i}`);
        await (i === 2 ? c : b).s.download(x.attachment, dest);
        expect(readFileSync(dest).equals(plain)).toBe(true);
      }

      // The control: a blob uploaded as it is, unencrypted, must be found.
      const control = marker("control-unencrypted");
      const slot = await a.c.request<{ id: string; url: string; tok: string }>("media.upload", { size: control.length });
      const put = await fetch(slot.url, { method: "PATCH", headers: { "Tus-Resumable": "1.0.0", Authorization: `Bearer ${slot.tok}`, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0" }, body: control });
      expect(put.status).toBe(204);

      const where = (text: string): string[] => {
        const needle = Buffer.from(text);
        const found: string[] = [];
        tcp.streams.map((x) => Buffer.concat(x.chunks)).forEach((x, i) => x.includes(needle) && found.push(`tcp stream ${i}`));
        http.streams.map((x) => Buffer.concat(x.chunks)).forEach((x, i) => x.includes(needle) && found.push(`http stream ${i}`));
        for (const f of filesUnder(srv!.dataDir)) if (f.bytes.includes(needle)) found.push(f.path);
        if (s3) for (const f of filesUnder(s3.dir)) if (f.bytes.includes(needle)) found.push(f.path);
        return found;
      };
      const check = () => {
        for (const [what, text] of Object.entries(m)) expect({ what, found: where(text) }).toEqual({ what, found: [] });
        const ctl = where(control);
        expect(ctl.some((w) => w.startsWith("http stream"))).toBe(true);
        expect(ctl.some((w) => (store === "s3" ? w.startsWith(s3!.dir) : w.includes("/media/blobs/")))).toBe(true);
      };
      check();
      // The capture holds the traffic: uploads and downloads of blobs went through the HTTP proxy.
      const httpText = http.streams.map((x) => Buffer.concat(x.chunks).toString("latin1")).join("");
      expect(httpText).toContain("PATCH /media/");
      expect(httpText).toContain("GET /media/");
      expect(httpText).toContain("HTTP/1.1 200");
      for (const d of devs) await d.c.close();
      await srv.stop(); // the WAL checkpointed into media.db: scan once more at rest
      check();
      http.server.close();
      tcp.server.close();
    });
  });
}
