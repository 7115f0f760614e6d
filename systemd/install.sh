#!/bin/sh
# Installs Switchboard as a systemd service: the compiled binary, the units,
# the sysctl settings, the system user and a default configuration.
#
#   npm run build && sudo systemd/install.sh [--enable]
#   systemd/install.sh --root /tmp/image --dry-run
#
# Run `systemd/install.sh --help` for the options. On the running system (root
# /) it also creates the user, applies the sysctl file and reloads systemd; into
# another root (--root DIR or DESTDIR=DIR, for an image or a package) it only
# writes files: the sysusers.d file creates the user when that system boots.
set -eu

usage() {
	cat <<'EOF'
usage: systemd/install.sh [--root DIR] [--prefix DIR] [--binary FILE] [--dry-run] [--enable]

  --root DIR      install into DIR instead of / (also DESTDIR=DIR); only files
                  are written there: no user, no sysctl, no systemctl
  --prefix DIR    where the binary and the monitor go (default /usr/local):
                  PREFIX/bin/switchboard, PREFIX/lib/switchboard/mon.ts
  --binary FILE   the compiled server (default: dist/switchboard of this
                  checkout, made by `npm run build`)
  --dry-run       print what would be done, change nothing
  --enable        on the running system, also enable and start
                  switchboard.service and switchboard-mon.timer

Files (under the root):
  PREFIX/bin/switchboard                       the server and CLI
  PREFIX/lib/switchboard/mon.ts                the monitor (tools/mon.ts)
  /etc/systemd/system/switchboard.service      the server's unit
  /etc/systemd/system/switchboard-mon.service  the monitor, once
  /etc/systemd/system/switchboard-mon.timer    the monitor, every minute
  /etc/sysctl.d/99-switchboard.conf            kernel settings
  /etc/sysusers.d/switchboard.conf             the switchboard system user
  /etc/switchboard/switchboard.toml            the configuration (kept if present)
EOF
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
repo=$(dirname -- "$here")

root=${DESTDIR:-/}
prefix=/usr/local
binary=$repo/dist/switchboard
dry_run=0
enable=0

die() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
	--root=*) root=${1#*=}; shift ;;
	--prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
	--prefix=*) prefix=${1#*=}; shift ;;
	--binary) [ $# -ge 2 ] || die "--binary needs a file"; binary=$2; shift 2 ;;
	--binary=*) binary=${1#*=}; shift ;;
	--dry-run) dry_run=1; shift ;;
	--enable) enable=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; printf '\ninstall.sh: unknown argument %s\n' "$1" >&2; exit 2 ;;
	esac
done

case $prefix in
/*) ;;
*) die "--prefix must be an absolute path (it is the path on the installed system), got $prefix" ;;
esac
[ -n "$root" ] || root=/
# "/" or "/tmp/image" (no trailing slash), so "$dest/etc" is never "//etc".
dest=${root%/}
live=0
[ -z "$dest" ] && live=1

if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
	die "no executable at $binary: run \`npm run build\` first, or pass --binary FILE"
fi
if [ "$live" = 1 ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
	die "installing into / needs root (sudo); use --root DIR to install elsewhere, or --dry-run"
fi
if [ "$enable" = 1 ] && [ "$live" = 0 ]; then
	die "--enable works only on the running system (no --root)"
fi

# Prints a command, then runs it unless --dry-run.
run() {
	printf '+ %s\n' "$*"
	[ "$dry_run" = 1 ] || "$@"
}

# install_file MODE SRC DEST: copies SRC to DEST (creating directories).
install_file() {
	run install -D -m "$1" "$2" "$dest$3"
}

# install_unit SRC NAME: a unit file, with the paths of the default prefix
# replaced when --prefix differs.
install_unit() {
	if [ "$prefix" = /usr/local ]; then
		install_file 0644 "$1" "/etc/systemd/system/$2"
		return
	fi
	printf '+ sed s#/usr/local/#%s/# %s > %s\n' "$prefix" "$1" "$dest/etc/systemd/system/$2"
	[ "$dry_run" = 1 ] && return
	tmp=$(mktemp)
	sed -e "s#/usr/local/bin/switchboard#$prefix/bin/switchboard#g" -e "s#/usr/local/lib/switchboard/#$prefix/lib/switchboard/#g" "$1" >"$tmp"
	install -D -m 0644 "$tmp" "$dest/etc/systemd/system/$2"
	rm -f "$tmp"
}

install_file 0755 "$binary" "$prefix/bin/switchboard"
install_file 0644 "$repo/tools/mon.ts" "$prefix/lib/switchboard/mon.ts"
install_unit "$here/switchboard.service" switchboard.service
install_unit "$here/switchboard-mon.service" switchboard-mon.service
install_unit "$here/switchboard-mon.timer" switchboard-mon.timer
install_file 0644 "$here/switchboard.sysusers" /etc/sysusers.d/switchboard.conf
# The configuration is the operator's once installed: never overwritten.
config=$dest/etc/switchboard/switchboard.toml
if [ -e "$config" ]; then
	printf '= kept %s (already present)\n' "$config"
else
	install_file 0644 "$here/switchboard.toml" /etc/switchboard/switchboard.toml
	[ "$dry_run" = 1 ] && config=$here/switchboard.toml
fi

# The ports the configured server listens on (tcp, tls, http; 0 and -1 left
# out), as ip_local_reserved_ports wants them: "5222-5223,5280". Read by the
# binary itself (`config --check`), as the service will read them, without the
# installing shell's SWITCHBOARD_* variables; the certificate paths are blanked
# because their files may not exist yet in an image being built.
effective=$(env -i "$binary" config --check --config "$config" --tls-cert "" --tls-key "") ||
	die "cannot read the ports of $config with $binary (see above)"
ports=$(printf '%s\n' "$effective" |
	awk '/^\[/ { t = $0 } /^port = / && (t == "[tcp]" || t == "[tls]" || t == "[http]") && $3 > 0 { print $3 }' |
	sort -n -u |
	awk 'NR == 1 { lo = hi = $1; next }
		$1 == hi + 1 { hi = $1; next }
		{ out = out sep (lo == hi ? lo : lo "-" hi); sep = ","; lo = hi = $1 }
		END { if (NR) print out sep (lo == hi ? lo : lo "-" hi) }')
# The sysctl file with its reserved ports from the configuration: changing the
# ports and running install.sh again keeps them out of the ephemeral range.
printf '+ 99-switchboard.conf with ip_local_reserved_ports = %s (the ports of %s) > %s\n' "${ports:-(none)}" "$config" "$dest/etc/sysctl.d/99-switchboard.conf"
if [ "$dry_run" = 0 ]; then
	tmp=$(mktemp)
	if [ -n "$ports" ]; then
		sed "s/^net\.ipv4\.ip_local_reserved_ports = .*/net.ipv4.ip_local_reserved_ports = $ports/" "$here/99-switchboard.conf" >"$tmp"
	else
		sed "/^net\.ipv4\.ip_local_reserved_ports = /d" "$here/99-switchboard.conf" >"$tmp"
	fi
	install -D -m 0644 "$tmp" "$dest/etc/sysctl.d/99-switchboard.conf"
	rm -f "$tmp"
fi

if [ "$live" = 0 ]; then
	printf '= into %s: files only; the user switchboard is created when that system boots (systemd-sysusers), the sysctl file is applied at boot\n' "$root"
	exit 0
fi

if command -v systemd-sysusers >/dev/null 2>&1; then
	run systemd-sysusers /etc/sysusers.d/switchboard.conf
elif ! id switchboard >/dev/null 2>&1; then
	run useradd --system --user-group --home-dir /var/lib/switchboard --no-create-home --shell /usr/sbin/nologin switchboard
fi
# A kernel that refuses a setting (an old one, a container) is not a reason to stop.
run sysctl -p /etc/sysctl.d/99-switchboard.conf || printf 'install.sh: some sysctl settings were not applied (see above)\n' >&2
if [ -d /run/systemd/system ]; then
	run systemctl daemon-reload
	if [ "$enable" = 1 ]; then
		run systemctl enable --now switchboard.service switchboard-mon.timer
	fi
else
	printf '= systemd is not running here: enable the units where it runs\n'
fi
cat <<EOF

Next:
  edit /etc/switchboard/switchboard.toml (TLS certificate: tls.cert, tls.key)
  systemctl enable --now switchboard.service switchboard-mon.timer
  sudo -u switchboard $prefix/bin/switchboard user add NAME --config /etc/switchboard/switchboard.toml
  journalctl -u switchboard -u switchboard-mon
EOF
