# shellcheck shell=bash
# Helpers shared by bench/run.sh and the sections it sources (dns.sh,
# proxy.sh, gobench.sh). Everything here talks to loopback only.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
# fail reports an error that spoils some rows but not the rest of the run;
# run.sh exits non-zero at the end.
BENCH_FAILURES=()
fail() { printf '[bench] ERROR: %s\n' "$*" >&2; BENCH_FAILURES+=("$*"); }

# need_tools CMD:PACKAGE... installs the Debian packages of missing commands
# (apt-get, once) and fails loudly when a command is still missing.
need_tools() {
	local missing=() pkgs=() spec cmd pkg
	for spec in "$@"; do
		cmd=${spec%%:*} pkg=${spec#*:}
		command -v "$cmd" >/dev/null 2>&1 || { missing+=("$cmd"); pkgs+=("$pkg"); }
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "missing ${missing[*]}: installing Debian packages ${pkgs[*]}"
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		die "missing tools ${missing[*]} and cannot install them (need root and apt-get): apt-get install ${pkgs[*]}"
	fi
	if [ -z "${BENCH_APT_UPDATED:-}" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
		BENCH_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 ||
		die "apt-get install ${pkgs[*]} failed"
	for cmd in "${missing[@]}"; do
		command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after apt-get install"
	done
}

# Processes started by the bench, stopped by PID on exit.
BENCH_PIDS=()

# start NAME CMD... runs CMD in the background with its output in
# $WORK/NAME.log and sets START_PID. Use "start_quiet" to drop the output.
start() {
	local name=$1; shift
	"$@" >"$WORK/$name.log" 2>&1 &
	START_PID=$!
	BENCH_PIDS+=("$START_PID")
}
start_quiet() {
	shift
	"$@" >/dev/null 2>&1 &
	START_PID=$!
	BENCH_PIDS+=("$START_PID")
}

# stop PID ends one process the bench started: TERM, up to 5 s, then KILL.
stop() {
	local pid=$1
	[ -n "$pid" ] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null || true
	local keep=() p
	for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
	BENCH_PIDS=("${keep[@]}")
}

stop_all() {
	local p
	for p in "${BENCH_PIDS[@]}"; do stop "$p"; done
}

# alive PID NAME fails loudly when a server died, showing its log.
alive() {
	kill -0 "$1" 2>/dev/null && return 0
	[ -f "$WORK/$2.log" ] && tail -20 "$WORK/$2.log" >&2
	die "$2 (pid $1) is not running"
}

# cpu_ticks PID prints utime+stime of the process (all threads), in ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# shellcheck disable=SC2034 # used by the sections
CLK_TCK=$(getconf CLK_TCK)

# status_kb PID FIELD prints VmRSS / VmHWM in KiB.
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# median prints the median of its numeric arguments (lower middle for even counts).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }

# calc EXPR evaluates an awk expression.
calc() { awk "BEGIN {printf \"%.4g\", $1}" 2>/dev/null || echo n/a; }

# row NAME UNICORN BASELINE TARGET COND appends one result line; COND is an
# awk condition on u (unicorn), b (baseline) and r (u/b), or "" for info.
row() {
	local name=$1 u=$2 b=$3 target=$4 cond=${5:-}
	awk -v n="$name" -v u="$u" -v b="$b" -v t="$target" -v c="$cond" '
	function num(x) { return x ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ }
	BEGIN {
		r = "-"
		if (num(u) && num(b) && b + 0 != 0) r = sprintf("%.2f", u / b)
		printf "%s\t%s\t%s\t%s\t%s\t%s\n", n, u, b, r, t, c
	}' >>"$RESULTS_RAW"
}

# render_table turns the raw rows into the table with an ok/MISS column.
render_table() {
	{
		printf '%-50s %12s %12s %7s  %-22s %s\n' "name" "unicorn" "baseline" "ratio" "target" "verdict"
		printf '%-50s %12s %12s %7s  %-22s %s\n' "----" "-------" "--------" "-----" "------" "-------"
		while IFS=$'\t' read -r n u b r t c; do
			local v=""
			if [ -n "$c" ]; then
				v=$(awk -v u="$u" -v b="$b" -v r="$r" "BEGIN {
					if (u !~ /^-?[0-9.]/) { print \"n/a\"; exit }
					print (($c) ? \"ok\" : \"MISS\") }")
			fi
			printf '%-50s %12s %12s %7s  %-22s %s\n' "$n" "$u" "$b" "$r" "$t" "$v"
		done <"$RESULTS_RAW"
	}
}
