/**
 * A real S3-compatible server for tests: s3rver (npm devDependency, run by
 * Node), on a free port, with one bucket, its files in a temporary folder
 * (what "S3" holds, for the tests that look at it).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const BIN = resolve(import.meta.dir, "../../node_modules/s3rver/bin/s3rver.js");

export interface S3rver {
  endpoint: string;
  port: number;
  bucket: string;
  /** Where s3rver keeps the bucket's objects. */
  dir: string;
  /** Stops it and removes its folder. */
  stop(): Promise<void>;
  /** Stops it and keeps its folder (start again with {port, dir}). */
  kill(): Promise<void>;
}

/** `port`, `dir`: to start it again where an earlier one was (a restart of "S3"). */
export async function startS3rver(bucket = "blobs", opts: { port?: number; dir?: string } = {}): Promise<S3rver> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "sb-s3rver-"));
  let proc: ChildProcess;
  try {
    proc = spawn("node", [BIN, "-d", dir, "-a", "127.0.0.1", "-p", String(opts.port ?? 0), "--configure-bucket", bucket], { stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new Error(`cannot start s3rver (needs the Debian package nodejs and npm install): ${(e as Error).message}`);
  }
  const port = await new Promise<number>((ok, fail) => {
    let out = "";
    proc.on("error", (e) => fail(new Error(`cannot start s3rver (needs the Debian package nodejs): ${e.message}`)));
    proc.on("exit", (code) => fail(new Error(`s3rver exited (${code}) before listening: ${out}`)));
    proc.stdout!.on("data", (d) => {
      out += String(d);
      const m = /listening on [^:\s]+:(\d+)/.exec(out);
      if (m) ok(Number(m[1]));
    });
    proc.stderr!.on("data", (d) => (out += String(d)));
  });
  const kill = async (remove: boolean) => {
    if (proc.exitCode === null) {
      const gone = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await gone;
    }
    if (remove) rmSync(dir, { recursive: true, force: true });
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    bucket,
    dir,
    stop: () => kill(true),
    kill: () => kill(false),
  };
}

/** s3rver's fixed credentials. */
export const S3RVER_KEYS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
