/**
 * The file-based attachment transfers SecureClient uses in Bun and Node (streaming, from and to paths:
 * media.ts, media-download.ts). A browser bundle gets media-files-browser.ts instead (package.json
 * "#media-files"), which refuses paths: node:crypto and node:fs stay out of pages.
 */
export { uploadAttachment } from "./media.ts";
export { downloadAttachment } from "./media-download.ts";
