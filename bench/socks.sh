# shellcheck shell=bash
# Sourced by bench/run.sh: the socks section. The same HTTPS download
# (curl, benchtool's HTTPS server of zeros) direct, through unicorn's HTTP
# CONNECT and through its SOCKS5 CONNECT, one unicorn serving both, in
# interleaved rounds: Gbit/s, and unicorn's CPU-s per GB for each path.
# Then raw TCP from one Go client (proxy's BenchmarkSOCKSRaw: the same
# pump straight, through CONNECT and through SOCKS5), interleaved rounds.

read -r S_TLS S_HTTP S_SOCKS < <(ports 3)
start socks-tlsserver "$BT" tlsserver -addr "127.0.0.1:$S_TLS"
SX_TLS=$START_PID
start socks-unicorn "$UNICORN" serve --dns "" --control "" --proxy "127.0.0.1:$S_HTTP" --socks "127.0.0.1:$S_SOCKS" \
	--upstream "$FAKE" --log-level warn
SX_UNI=$START_PID
for p in "$S_TLS" "$S_HTTP" "$S_SOCKS"; do
	"$BT" waitport -addr "127.0.0.1:$p" -timeout 10s || die "nothing listening on 127.0.0.1:$p (logs in $WORK)"
done

# socks_get PATH downloads once by PATH (direct, connect or socks) and sets
# S_RATE (Gbit/s) and S_CPU (unicorn's CPU-s/GB, "-" for direct).
socks_get() {
	local px=() c0 c1 out size secs code
	case $1 in
	connect) px=(-x "http://127.0.0.1:$S_HTTP") ;;
	socks) px=(-x "socks5h://127.0.0.1:$S_SOCKS") ;;
	esac
	alive "$SX_UNI" socks-unicorn
	c0=$(cpu_ticks "$SX_UNI")
	out=$(curl -sS -k --http1.1 --max-time 300 "${px[@]}" -o /dev/null -w '%{size_download} %{time_total} %{http_code}' \
		"https://127.0.0.1:$S_TLS/?bytes=$BENCH_HTTPS_BYTES") || die "curl $1 failed: $out"
	c1=$(cpu_ticks "$SX_UNI")
	read -r size secs code <<<"$out"
	if [ "$code" != 200 ] || [ "$size" != "$BENCH_HTTPS_BYTES" ]; then
		die "curl $1: HTTP $code, $size of $BENCH_HTTPS_BYTES bytes"
	fi
	S_RATE=$(calc "$size * 8 / $secs / 1e9") S_CPU=-
	[ "$1" = direct ] || S_CPU=$(calc "($c1 - $c0) / $CLK_TCK / ($size / 1e9)")
}

gib=$(calc "$BENCH_HTTPS_BYTES / 1073741824")
log "socks: ${gib} GiB HTTPS download direct, through HTTP CONNECT and through SOCKS5 CONNECT"
declare -A S_RATES=() S_CPUS=()
for r in $(seq "$BENCH_PROXY_ROUNDS"); do
	for path in direct connect socks; do
		socks_get "$path"
		log "socks round $r $path: $S_RATE Gbit/s, unicorn CPU $S_CPU s/GB"
		S_RATES[$path]+=" $S_RATE" S_CPUS[$path]+=" $S_CPU"
	done
done
# shellcheck disable=SC2086 # the lists split into arguments
{
	s_rate=$(median ${S_RATES[socks]}) c_rate=$(median ${S_RATES[connect]}) d_rate=$(median ${S_RATES[direct]})
	s_cpu=$(median ${S_CPUS[socks]}) c_cpu=$(median ${S_CPUS[connect]})
}
row "socks HTTPS ${gib}GiB SOCKS5 CONNECT Gbit/s" "$s_rate" "$d_rate" ">=0.9x direct" 'r >= 0.9'
# curl's own SOCKS path is slower than its CONNECT path with the same relay
# (unicorn's CPU per GB is the same): the raw rows below compare the relays.
row "socks HTTPS SOCKS5 vs HTTP CONNECT Gbit/s" "$s_rate" "$c_rate" "info (curl as client)" ''
row "socks HTTPS CPU-s/GB (SOCKS5 vs HTTP CONNECT)" "$s_cpu" "$c_cpu" "<=1.1x" 'r <= 1.1'

stop "$SX_UNI"
stop "$SX_TLS"

log "socks: raw TCP from one Go client, direct vs CONNECT vs SOCKS5 (BenchmarkSOCKSRaw)"
"$GO" test -c -o "$WORK/proxy.test" ./proxy/ >"$WORK/socks-gotest.log" 2>&1 || die "go test -c ./proxy failed (log: $WORK/socks-gotest.log)"
declare -A S_RAW=()
for r in $(seq "$BENCH_PROXY_ROUNDS"); do
	for path in direct connect socks; do
		mbs=$("$WORK/proxy.test" -test.run=NONE -test.bench="BenchmarkSOCKSRaw/$path\$" -test.benchtime="$BENCH_GOTIME" 2>&1 |
			awk '$1 ~ /^BenchmarkSOCKSRaw/ {for (i = 3; i <= NF; i++) if ($i == "MB/s") print $(i-1)}')
		[ -n "$mbs" ] || die "BenchmarkSOCKSRaw/$path printed no MB/s"
		log "socks raw round $r $path: $mbs MB/s"
		S_RAW[$path]+=" $mbs"
	done
done
# shellcheck disable=SC2086 # the lists split into arguments
{
	s_raw=$(median ${S_RAW[socks]}) c_raw=$(median ${S_RAW[connect]}) d_raw=$(median ${S_RAW[direct]})
}
row "socks raw TCP SOCKS5 MB/s (vs direct)" "$s_raw" "$d_raw" ">=0.6x direct" 'r >= 0.6'
row "socks raw TCP SOCKS5 vs HTTP CONNECT MB/s" "$s_raw" "$c_raw" ">=0.95x" 'r >= 0.95'
