/**
 * Files as `send --file`, `listen` and `chat` handle them: where received
 * attachments are saved (a folder, never outside it, never over another
 * file), the progress bar, sizes for people, and a file's MIME type from its
 * extension.
 */
import { existsSync, mkdirSync } from "node:fs";
import { extname, join, resolve } from "node:path";
import type { Attachment, Progress } from "../client/media.ts";
import { safeFileName } from "../client/media-download.ts";

/** Where listen and chat save what arrives when --save-dir is not given: a folder in the current directory. */
export const DEFAULT_SAVE_DIR = "switchboard-files";

/** 1.4 MB, 512 B: decimal units, one decimal. */
export function humanSize(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** `[##########----------]  50% 5.0 MB/10.0 MB`: twenty cells. */
export function progressBar(p: Pick<Progress, "done" | "total">): string {
  const f = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
  const cells = Math.round(f * 20);
  return `[${"#".repeat(cells)}${"-".repeat(20 - cells)}] ${String(Math.floor(f * 100)).padStart(3)}% ${humanSize(p.done)}/${humanSize(p.total)}`;
}

/** Calls `draw` at most once per percent of progress, and always for the end: a bar that does not flood. */
export function throttled(draw: (p: Progress) => void): (p: Progress) => void {
  let last = "";
  return (p) => {
    const key = `${p.phase}:${p.total > 0 ? Math.floor((p.done / p.total) * 100) : 100}`;
    if (key === last) return;
    last = key;
    draw(p);
  };
}

const TYPES: Record<string, string> = {
  ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".heic": "image/heic",
  ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
  ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".ogg": "audio/ogg", ".opus": "audio/ogg", ".wav": "audio/wav",
  ".pdf": "application/pdf", ".zip": "application/zip", ".txt": "text/plain", ".md": "text/markdown", ".json": "application/json",
};

/** The MIME type of a file by its extension (application/octet-stream when unknown); it travels encrypted only. */
export function typeOf(path: string): string {
  return TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
}

/**
 * Chooses where each received attachment goes in `dir`: its sender's name made safe (safeFileName), and
 * `name (1).ext`, `name (2).ext` ... when that is taken on disk or by a download still running.
 */
export class SaveDir {
  readonly dir: string;
  private taken = new Set<string>();

  constructor(dir: string) {
    this.dir = resolve(dir);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** A free path for `att`; `release` it when the download ended (saved or failed). */
  claim(att: Attachment): string {
    const name = safeFileName(att);
    const ext = extname(name);
    const stem = ext && ext !== name ? name.slice(0, -ext.length) : name;
    for (let i = 0; ; i++) {
      const p = join(this.dir, i === 0 ? name : `${stem} (${i})${ext === name ? "" : ext}`);
      if (this.taken.has(p) || existsSync(p) || existsSync(`${p}.part`)) continue;
      this.taken.add(p);
      return p;
    }
  }

  release(path: string): void {
    this.taken.delete(path);
  }
}
