#!/usr/bin/env bash
# cohort-netns.sh: a Cohort cluster across hosts on one Linux box, each host a network
# namespace with its own address on a private bridge, to try failures before buying
# machines. See README.md next to this script. Needs root, iproute2 and iptables.
#
#   cohort-netns.sh up                  3 coordinators, 2 parameter servers, 2 workers, a client host
#   cohort-netns.sh status              the Raft peers and the nodes, as the client sees them
#   cohort-netns.sh cli ARGS...         run `cohort ARGS...` on the client host (mutual TLS set up)
#   cohort-netns.sh partition H... [-- H...]  cut hosts H off from the others (or from the second set)
#   cohort-netns.sh oneway H... -- H... drop what the first hosts send to the second
#   cohort-netns.sh loss H PERCENT      drop PERCENT% of host H's packets, both ways
#   cohort-netns.sh heal                remove every partition and loss
#   cohort-netns.sh kill|pause|resume|start H   SIGKILL, SIGSTOP, SIGCONT, (re)start host H's process
#   cohort-netns.sh down [--purge]      stop everything, remove the namespaces (--purge: and the data)
#
# Environment: COHORT (the binary; default `cohort` on PATH, else ./bin/cohort),
# COHORT_NETNS_DIR (state, logs and data; default /tmp/cohort-netns),
# COHORT_NETNS_NET (the first three octets of the /24 used on the bridge only; default
# 10.78.0: a private range; no address outside it is ever configured or contacted).
set -euo pipefail

STATE=${COHORT_NETNS_DIR:-/tmp/cohort-netns}
NET=${COHORT_NETNS_NET:-10.78.0}
BRIDGE=cohortdemo0
NSPREFIX=cohortdemo-
CHAIN=COHORT-DEMO
HOSTS=(c1 c2 c3 ps1 ps2 w1 w2 client)
RAFT=7072 GRPC=7070 HTTP=7071 PSDATA=7080

die() { echo "cohort-netns: $*" >&2; exit 1; }

cohort_bin() {
	local b=${COHORT:-}
	if [[ -z $b ]]; then b=$(command -v cohort || true); fi
	if [[ -z $b && -x ./bin/cohort ]]; then b=$(realpath ./bin/cohort); fi
	[[ -n $b && -x $b ]] || die "no cohort binary: set COHORT=/path/to/cohort (make build writes bin/cohort)"
	echo "$b"
}

need() {
	[[ $(id -u) == 0 ]] || die "needs root (network namespaces, veth pairs, iptables)"
	for t in ip iptables; do command -v "$t" >/dev/null || die "needs $t (make deps installs iptables)"; done
	[[ $NET =~ ^(10\.[0-9]+\.[0-9]+|192\.168\.[0-9]+|172\.(1[6-9]|2[0-9]|3[01])\.[0-9]+)$ ]] ||
		die "COHORT_NETNS_NET=$NET: want the first three octets of a private (RFC 1918) /24"
}

index_of() {
	local i
	for i in "${!HOSTS[@]}"; do [[ ${HOSTS[$i]} == "$1" ]] && { echo $((i + 1)); return; }; done
	die "unknown host $1 (hosts: ${HOSTS[*]})"
}
addr() { echo "$NET.$(index_of "$1")"; }
ns() { index_of "$1" >/dev/null; echo "$NSPREFIX$1"; }
in_ns() { local h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }
coordinators() { echo "$(addr c1):$GRPC,$(addr c2):$GRPC,$(addr c3):$GRPC"; }

# the command line of host $1's process
cmdline() {
	local h=$1 a
	a=$(addr "$h")
	case $h in
	c1 | c2 | c3)
		local join=()
		[[ $h == c1 ]] && join=(--bootstrap) || join=(--join "$(addr c1):$GRPC")
		echo coordinator --node-id "$h" --data-dir "$STATE/$h" --storage-dir "$STATE/storage" \
			--raft-addr "$a:$RAFT" --grpc-addr "$a:$GRPC" --http-addr "$a:$HTTP" --https "${join[@]}"
		;;
	ps1 | ps2)
		echo paramserver --node-id "$h" --join "$(coordinators)" --storage-dir "$STATE/storage" \
			--tls-dir "$STATE/$h-tls" --http-addr "$a:$HTTP" --https --data-addr "$a:$PSDATA"
		;;
	w1 | w2)
		echo worker --node-id "$h" --join "$(coordinators)" --storage-dir "$STATE/storage" \
			--tls-dir "$STATE/$h-tls" --http-addr "$a:$HTTP" --https --data-root "$STATE/data"
		;;
	*) die "host $h runs no cohort process" ;;
	esac
}

start() {
	local h=$1 bin n args
	bin=$(cohort_bin) n=$(ns "$h") args=$(cmdline "$h")
	# A plain command (not a function) whose ip netns exec and nohup exec the binary, so
	# $! is the cohort process itself.
	# shellcheck disable=SC2086 # args' words are the arguments
	ip netns exec "$n" nohup "$bin" $args >>"$STATE/$h.log" 2>&1 </dev/null &
	echo $! >"$STATE/$h.pid"
	echo "started $h ($(addr "$h")), pid $(cat "$STATE/$h.pid"), log $STATE/$h.log"
}

signal() {
	local sig=$1 h=$2
	[[ -f $STATE/$h.pid ]] || die "host $h has no process"
	kill "-$sig" "$(cat "$STATE/$h.pid")" 2>/dev/null || echo "host $h: process $(cat "$STATE/$h.pid") is not running"
}

wait_for() {
	local what=$1 tries=$2; shift 2
	for ((i = 0; i < tries; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 1
	done
	die "timed out waiting for $what (logs in $STATE)"
}

cli() {
	local bin
	bin=$(cohort_bin)
	in_ns client env COHORT_TLS_DIR="$STATE/operator-tls" COHORT_CONFIG=/dev/null "$bin" --address "$(coordinators)" "$@"
}

issue() { # role name host out
	"$(cohort_bin)" tls issue --ca-dir "$STATE/operator-tls" --role "$1" --name "$2" --host "$(addr "$3")" --out "$4" >/dev/null
}

up() {
	need
	ip link show "$BRIDGE" >/dev/null 2>&1 && die "already up (cohort-netns.sh down first)"
	cohort_bin >/dev/null
	mkdir -p "$STATE/storage" "$STATE/data"
	ip link add "$BRIDGE" type bridge
	ip link set "$BRIDGE" up
	for h in "${HOSTS[@]}"; do
		local i n v
		i=$(index_of "$h") n=$(ns "$h") v=cdv$i
		ip netns add "$n"
		ip link add "$v" type veth peer name eth0 netns "$n"
		ip link set "$v" master "$BRIDGE" up
		ip -n "$n" addr add "$NET.$i/24" dev eth0
		ip -n "$n" link set eth0 up
		ip -n "$n" link set lo up
		in_ns "$h" iptables -N "$CHAIN"
		in_ns "$h" iptables -A INPUT -j "$CHAIN"
		in_ns "$h" iptables -A OUTPUT -j "$CHAIN"
		echo "host $h = $NET.$i (namespace $n)"
	done
	# The first voter creates the cluster CA and an admin certificate; the operator keeps
	# a copy and issues every other process its certificate from it.
	start c1
	wait_for "the cluster CA" 60 test -f "$STATE/c1/tls/admin.key"
	mkdir -p "$STATE/operator-tls"
	cp "$STATE/c1/tls/"{ca.crt,ca.key,admin.crt,admin.key} "$STATE/operator-tls/"
	for h in c2 c3; do
		issue coordinator "$h" "$h" "$STATE/$h/tls"
		start "$h"
	done
	wait_for "3 voters with a leader" 120 voters3
	for h in ps1 ps2 w1 w2; do
		issue agent "$h" "$h" "$STATE/$h-tls"
		start "$h"
	done
	wait_for "4 ready nodes" 120 nodes4
	echo
	echo "up. Try: $0 cli job submit FILE --wait;  $0 partition c1;  $0 heal;  $0 status"
	echo "Job data must lie under $STATE/data (the workers' --data-root)."
}

voters3() { [[ $(cli operator raft list-peers -o json | grep -o '"leader": *true' | wc -l) == 1 ]] &&
	[[ $(cli operator raft list-peers -o json | grep -o '"voter": *true' | wc -l) == 3 ]]; }
nodes4() { [[ $(cli node list -o json | grep -io 'ready' | wc -l) -ge 4 ]]; }

status() {
	need
	echo "== raft peers"; cli operator raft list-peers || true
	echo "== nodes"; cli node list || true
	echo "== faults"
	for h in "${HOSTS[@]}"; do
		local rules
		rules=$(in_ns "$h" iptables -S "$CHAIN" 2>/dev/null | grep -c -- '-A' || true)
		[[ $rules == 0 ]] || echo "$h: $rules rule(s)"
	done
}

# split "A B -- C D" into the globals SIDE_A and SIDE_B (default: every other host)
sides() {
	SIDE_A=() SIDE_B=()
	local into=a
	for x in "$@"; do
		if [[ $x == -- ]]; then into=b; continue; fi
		index_of "$x" >/dev/null
		if [[ $into == a ]]; then SIDE_A+=("$x"); else SIDE_B+=("$x"); fi
	done
	[[ ${#SIDE_A[@]} -gt 0 ]] || die "name at least one host"
	if [[ ${#SIDE_B[@]} == 0 ]]; then
		for h in "${HOSTS[@]}"; do [[ " ${SIDE_A[*]} " == *" $h "* ]] || SIDE_B+=("$h"); done
	fi
}

drop() { # from to: drop what host $1 sends to host $2 (on both ends)
	in_ns "$1" iptables -A "$CHAIN" -d "$(addr "$2")" -j DROP
	in_ns "$2" iptables -A "$CHAIN" -s "$(addr "$1")" -j DROP
}

partition() {
	need
	sides "$@"
	for a in "${SIDE_A[@]}"; do for b in "${SIDE_B[@]}"; do drop "$a" "$b"; drop "$b" "$a"; done; done
	echo "partitioned [${SIDE_A[*]}] | [${SIDE_B[*]}]"
}

oneway() {
	need
	sides "$@"
	for a in "${SIDE_A[@]}"; do for b in "${SIDE_B[@]}"; do drop "$a" "$b"; done; done
	echo "dropping [${SIDE_A[*]}] -> [${SIDE_B[*]}]"
}

loss() {
	need
	local h=$1 pct=$2
	[[ $pct =~ ^[0-9]+$ && $pct -le 100 ]] || die "loss: PERCENT must be 0-100"
	local p
	p=$(awk "BEGIN{printf \"%.2f\", $pct/100}")
	in_ns "$h" iptables -A "$CHAIN" -m statistic --mode random --probability "$p" -j DROP
	echo "host $h drops $pct% of its packets, each way"
}

heal() {
	need
	for h in "${HOSTS[@]}"; do in_ns "$h" iptables -F "$CHAIN" 2>/dev/null || true; done
	echo "healed"
}

down() {
	need
	for h in "${HOSTS[@]}"; do
		if [[ -f $STATE/$h.pid ]]; then
			kill -CONT "$(cat "$STATE/$h.pid")" 2>/dev/null || true
			kill -TERM "$(cat "$STATE/$h.pid")" 2>/dev/null || true
		fi
	done
	sleep 2
	for h in "${HOSTS[@]}"; do
		if [[ -f $STATE/$h.pid ]]; then
			kill -KILL "$(cat "$STATE/$h.pid")" 2>/dev/null || true
			rm -f "$STATE/$h.pid"
		fi
		# Anything else still running in the namespace would keep it (and its veth) alive.
		if [[ -e /run/netns/$NSPREFIX$h ]]; then
			for p in $(ip netns pids "$NSPREFIX$h" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
		fi
		ip netns del "$NSPREFIX$h" 2>/dev/null || true
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	if [[ ${1:-} == --purge ]]; then rm -rf "$STATE"; fi
	echo "down"
}

case ${1:-} in
up) up ;;
status) status ;;
cli) shift; need; cli "$@" ;;
partition) shift; partition "$@" ;;
oneway) shift; oneway "$@" ;;
loss) shift; [[ $# == 2 ]] || die "usage: loss HOST PERCENT"; loss "$@" ;;
heal) heal ;;
kill) need; signal KILL "${2:?host}" ;;
pause) need; signal STOP "${2:?host}" ;;
resume) need; signal CONT "${2:?host}" ;;
start) need; start "${2:?host}" ;;
down) shift; down "$@" ;;
*) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
