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
                          [--nodes N [--redis URL] [--node-prefix NAME] [--listen HOST] [--advertise HOST]]

  --root DIR      install into DIR instead of / (also DESTDIR=DIR); only files
                  are written there: no user, no sysctl, no systemctl
  --prefix DIR    where the binary and the monitor go (default /usr/local):
                  PREFIX/bin/switchboard, PREFIX/lib/switchboard/mon.ts
  --binary FILE   the compiled server (default: dist/switchboard of this
                  checkout, made by `npm run build`)
  --dry-run       print what would be done, change nothing
  --enable        on the running system, also enable and start
                  switchboard.service and switchboard-mon.timer (with --nodes:
                  switchboard@0 ... switchboard@N-1 and the timer)
  --nodes N       a cluster node per core on this host (docs/CLUSTER.md): the
                  template unit switchboard@.service and, for i in 0..N-1,
                  /etc/switchboard/node-i.toml (kept if present): data in
                  /var/lib/switchboard/node-i, node id NAME-i, pinned to core i,
                  ports tcp 5222+10i, tls 5223+10i, http 5280+10i, link 5281+10i
  --redis URL     the cluster's Redis (default redis://127.0.0.1:6379)
  --node-prefix NAME  node ids NAME-0 ... (default: this host's short name);
                  unique per host. For nodes on several hosts, list every id
                  in each node file's cluster.nodes
  --listen HOST   the address the nodes' tcp, http and link ports bind
                  (default 127.0.0.1; 0.0.0.0 for nodes on several hosts)
  --advertise HOST  the address peers and redirected clients use to reach
                  these nodes (default: the --listen address, or 127.0.0.1)

Files (under the root):
  PREFIX/bin/switchboard                       the server and CLI
  PREFIX/lib/switchboard/mon.ts                the monitor (tools/mon.ts)
  /etc/systemd/system/switchboard.service      the server's unit
  /etc/systemd/system/switchboard-mon.service  the monitor, once
  /etc/systemd/system/switchboard-mon.timer    the monitor, every minute
  /etc/sysctl.d/99-switchboard.conf            kernel settings
  /etc/sysusers.d/switchboard.conf             the switchboard system user
  /etc/switchboard/switchboard.toml            the configuration (kept if present)
  with --nodes N:
  /etc/systemd/system/switchboard@.service     the template unit of a node
  /etc/switchboard/node-I.toml                 each node's configuration (kept if present)
EOF
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
repo=$(dirname -- "$here")

root=${DESTDIR:-/}
prefix=/usr/local
binary=$repo/dist/switchboard
dry_run=0
enable=0
nodes=0
redis=redis://127.0.0.1:6379
node_prefix=
listen=127.0.0.1
advertise=

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
	--nodes) [ $# -ge 2 ] || die "--nodes needs a number"; nodes=$2; shift 2 ;;
	--nodes=*) nodes=${1#*=}; shift ;;
	--redis) [ $# -ge 2 ] || die "--redis needs a URL"; redis=$2; shift 2 ;;
	--redis=*) redis=${1#*=}; shift ;;
	--node-prefix) [ $# -ge 2 ] || die "--node-prefix needs a name"; node_prefix=$2; shift 2 ;;
	--node-prefix=*) node_prefix=${1#*=}; shift ;;
	--listen) [ $# -ge 2 ] || die "--listen needs an address"; listen=$2; shift 2 ;;
	--listen=*) listen=${1#*=}; shift ;;
	--advertise) [ $# -ge 2 ] || die "--advertise needs an address"; advertise=$2; shift 2 ;;
	--advertise=*) advertise=${1#*=}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; printf '\ninstall.sh: unknown argument %s\n' "$1" >&2; exit 2 ;;
	esac
done

case $prefix in
/*) ;;
*) die "--prefix must be an absolute path (it is the path on the installed system), got $prefix" ;;
esac
case $nodes in
'' | *[!0-9]*) die "--nodes takes a number of nodes (one per core), got $nodes" ;;
esac
[ "$nodes" -le 1024 ] || die "--nodes $nodes: at most 1024 (one per core)"
case $node_prefix in
*[!A-Za-z0-9_.-]*) die "--node-prefix may hold letters, digits and - _ . only (a node id), got $node_prefix" ;;
esac
[ -n "$node_prefix" ] || node_prefix=$(hostname -s 2>/dev/null | tr -c 'A-Za-z0-9_.\n-' '-')
[ -n "$node_prefix" ] || node_prefix=node
[ -n "$advertise" ] || advertise=$listen
case $advertise in 0.0.0.0 | "::") advertise=127.0.0.1 ;; esac
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
# Cluster nodes, one per core (--nodes N): the template unit and a settings file per node, written whole (TOML
# cannot extend switchboard.toml's tables) and kept if present, like the main one.
configs=
if [ "$nodes" -gt 0 ]; then
	install_unit "$here/switchboard@.service" switchboard@.service
	ids=
	i=0
	while [ "$i" -lt "$nodes" ]; do
		ids=${ids:+$ids,}$node_prefix-$i
		i=$((i + 1))
	done
	i=0
	while [ "$i" -lt "$nodes" ]; do
		node_config=$dest/etc/switchboard/node-$i.toml
		if [ -e "$node_config" ]; then
			printf '= kept %s (already present)\n' "$node_config"
		else
			printf '+ node %s-%s settings > %s\n' "$node_prefix" "$i" "$node_config"
			if [ "$dry_run" = 0 ]; then
				mkdir -p "$dest/etc/switchboard"
				# Ports 10 apart per node, each kind on its own last digit (tcp 2, tls 3, http 0, link 1): no two collide.
				cat >"$node_config" <<NODE
# /etc/switchboard/node-$i.toml: settings of switchboard@$i.service, cluster node $node_prefix-$i
# (docs/CLUSTER.md), written by systemd/install.sh --nodes $nodes. Every node of the cluster must
# list the same cluster.nodes; for nodes on several hosts, add the other hosts' ids there.
data_dir = "/var/lib/switchboard/node-$i"

[tcp]
host = "$listen"
port = $((5222 + 10 * i))

[tls]
host = "0.0.0.0"
port = $((5223 + 10 * i))
# cert = "/etc/switchboard/fullchain.pem"
# key = "/etc/switchboard/privkey.pem"

[http]
host = "127.0.0.1"
port = $((5280 + 10 * i))

[shutdown]
timeout = 15

[log]
level = "info"

[cluster]
redis = "$redis"
node_id = "$node_prefix-$i"
nodes = "$ids"
advertise = "$advertise:$((5222 + 10 * i))"
link_port = $((5281 + 10 * i))
NODE
			fi
		fi
		configs="$configs $node_config"
		i=$((i + 1))
	done
fi
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
effective=
for c in "$config" $configs; do
	[ "$dry_run" = 1 ] && [ ! -e "$c" ] && continue
	effective="$effective
$(env -i "$binary" config --check --config "$c" --tls-cert "" --tls-key "")" ||
		die "cannot read the ports of $c with $binary (see above)"
done
ports=$(printf '%s\n' "$effective" |
	awk '/^\[/ { t = $0 } /^(port|link_port) = / && (t == "[tcp]" || t == "[tls]" || t == "[http]" || t == "[cluster]") && $3 > 0 { print $3 }' |
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
		if [ "$nodes" -gt 0 ]; then
			i=0
			units=
			while [ "$i" -lt "$nodes" ]; do
				units="$units switchboard@$i.service"
				i=$((i + 1))
			done
			# shellcheck disable=SC2086 # one word per unit
			run systemctl enable --now $units switchboard-mon.timer
		else
			run systemctl enable --now switchboard.service switchboard-mon.timer
		fi
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
