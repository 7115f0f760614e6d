/** What a browser bundle gets for "#media-files" (package.json `imports`; elsewhere media-files.ts): no files in a page. */
import type { Attachment, DownloadOptions, Request, UploadOptions } from "./media-format.ts";

export async function uploadAttachment(_request: Request, _source: unknown, _opts?: UploadOptions): Promise<Attachment> {
  throw new TypeError("sendFile: in a browser, send the bytes (a Uint8Array, or a Blob/File from an <input type=file>), not a path or a stream");
}

export async function downloadAttachment(_att: Attachment, _dest: string, _opts?: DownloadOptions): Promise<{ path: string; size: number }> {
  throw new TypeError("download: a browser has no files; use fetchAttachment(attachment), which resolves with the checked plaintext");
}
