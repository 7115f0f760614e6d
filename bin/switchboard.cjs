#!/usr/bin/env node
// npm links this file as the `switchboard` command. Bun comes from the project's
// own dependencies, so a machine with only Node and npm can run it.
const { spawn } = require("node:child_process");
const path = require("node:path");
const root = path.join(__dirname, "..");
let bun;
try {
  bun = path.join(path.dirname(require.resolve("bun/package.json", { paths: [root] })), "bin", "bun.exe");
} catch {
  bun = "bun";
}
const child = spawn(bun, [path.join(root, "src", "cli", "main.ts"), ...process.argv.slice(2)], { stdio: "inherit" });
// Forward the signals an operator or a test sends, so `serve` drains and `reload` reaches the server.
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => child.kill(sig));
child.on("error", (e) => {
  console.error(`switchboard: cannot start bun (${e.message}); run npm install in ${root}`);
  process.exit(1);
});
// Exit as the child did: its code, or 128 + the number of the signal that ended it (as a shell reports it).
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 + (require("node:os").constants.signals[signal] ?? 0) : 1)));
