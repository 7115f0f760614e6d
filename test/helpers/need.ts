/**
 * A binary a test needs from a Debian package: missing, the test fails naming the package (never skips), as the
 * Redis, coturn and Chromium helpers do; `.ci/run` installs each of them.
 */
export function need(bin: string, pkg: string): void {
  if (Bun.which(bin) === null) throw new Error(`${bin} is missing: install the Debian package "${pkg}" (apt-get update && apt-get install -y ${pkg}); .ci/run does this`);
}
