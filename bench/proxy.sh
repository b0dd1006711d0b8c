# shellcheck shell=bash
# Sourced by bench/run.sh: the proxy section. unicorn (built-in rules:
# nothing on 127.0.0.1 is blocked) and tinyproxy against the direct path,
# to local servers only: an HTTPS server of zeros, a TCP sink and a small
# HTTP server, all from bench/benchtool.

PXDIR=$WORK/proxy
mkdir -p "$PXDIR"
read -r P_HTTP P_TLS P_SINK P_UNI P_TINY P_REF < <(ports 6)

start httpserver "$BT" httpserver -addr "127.0.0.1:$P_HTTP"
PX_HTTP=$START_PID
start tlsserver "$BT" tlsserver -addr "127.0.0.1:$P_TLS"
PX_TLS=$START_PID
start sink "$BT" sink -addr "127.0.0.1:$P_SINK"
PX_SINK=$START_PID
start proxy-unicorn "$UNICORN" serve --control "" --dns "" --proxy "127.0.0.1:$P_UNI" --upstream "$FAKE"
PX_UNI=$START_PID

# The reference: a minimal Go CONNECT relay (two io.Copy, splice).
start gorelay "$BT" connectproxy -addr "127.0.0.1:$P_REF"
PX_REF=$START_PID

cat >"$PXDIR/tinyproxy.conf" <<CONF
User nobody
Group nogroup
Port $P_TINY
Listen 127.0.0.1
Timeout 600
MaxClients 200
Allow 127.0.0.1
LogLevel Error
DisableViaHeader Yes
CONF
# -d: stay in the foreground (logging to its output), so that its PID is ours to stop.
start proxy-tinyproxy tinyproxy -d -c "$PXDIR/tinyproxy.conf"
PX_TINY=$START_PID

for p in "$P_HTTP" "$P_TLS" "$P_SINK" "$P_UNI" "$P_TINY" "$P_REF"; do
	"$BT" waitport -addr "127.0.0.1:$p" -timeout 10s || die "nothing listening on 127.0.0.1:$p (logs in $WORK)"
done

# proxy_pid NAME prints the PID whose CPU is counted for path NAME.
proxy_pid() { case $1 in unicorn) echo "$PX_UNI" ;; tinyproxy) echo "$PX_TINY" ;; gorelay) echo "$PX_REF" ;; *) echo "" ;; esac; }
proxy_port() { case $1 in unicorn) echo "$P_UNI" ;; tinyproxy) echo "$P_TINY" ;; gorelay) echo "$P_REF" ;; *) echo "" ;; esac; }

# to_ms turns wrk's latencies (411.00us, 2.03ms, 1.20s) into milliseconds.
to_ms() {
	awk '{v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v += 0; else if ($1 ~ /m$/) v *= 60000; else if ($1 ~ /s$/) v *= 1000; printf "%.3f\n", v}'
}

# measure NAME KIND sets M_RATE (Gbit/s or req/s) and M_CPU (the proxy's
# CPU-s per GB, or µs per request; "-" for direct) for one run.
measure() {
	local name=$1 kind=$2 pid port c0=0 c1=0 out
	pid=$(proxy_pid "$name") port=$(proxy_port "$name")
	[ -n "$pid" ] && { alive "$pid" "proxy-$name"; c0=$(cpu_ticks "$pid"); }
	case $kind in
	https)
		local px=()
		[ -n "$port" ] && px=(-x "http://127.0.0.1:$port")
		out=$(curl -sS -k --http1.1 --max-time 300 "${px[@]}" -o /dev/null -w '%{size_download} %{time_total} %{http_code}' \
			"https://127.0.0.1:$P_TLS/?bytes=$BENCH_HTTPS_BYTES") || die "curl $name failed: $out"
		read -r size secs code <<<"$out"
		[ "$code" = 200 ] && [ "$size" = "$BENCH_HTTPS_BYTES" ] || die "curl $name: HTTP $code, $size of $BENCH_HTTPS_BYTES bytes"
		M_RATE=$(calc "$size * 8 / $secs / 1e9") M_BYTES=$size ;;
	raw)
		local px=()
		[ -n "$port" ] && px=(-proxy "127.0.0.1:$port")
		out=$("$BT" pump -target "127.0.0.1:$P_SINK" -bytes "$BENCH_RAW_BYTES" -chunk "$BENCH_RAW_CHUNK" "${px[@]}") || die "pump $name failed"
		read -r size secs M_RATE <<<"$out"
		M_BYTES=$size ;;
	http)
		if [ -n "$port" ]; then
			out=$(BENCH_TARGET="127.0.0.1:$P_HTTP" wrk -t2 -c"$BENCH_WRK_CONNS" -d"${BENCH_SECONDS}s" --latency \
				-s "$BENCH_DIR/proxy.lua" "http://127.0.0.1:$port/" 2>&1) || die "wrk $name failed: $out"
		else
			out=$(wrk -t2 -c"$BENCH_WRK_CONNS" -d"${BENCH_SECONDS}s" --latency "http://127.0.0.1:$P_HTTP/" 2>&1) ||
				die "wrk $name failed: $out"
		fi
		echo "$out" >"$WORK/wrk-$name-$(date +%s%N).txt"
		M_RATE=$(echo "$out" | awk '/^Requests\/sec:/ {printf "%.0f", $2}')
		M_REQS=$(echo "$out" | awk '/requests in/ {print $1}')
		M_P50=$(echo "$out" | awk '$1 == "50%" {print $2}' | to_ms)
		M_P99=$(echo "$out" | awk '$1 == "99%" {print $2}' | to_ms)
		if echo "$out" | grep -q 'Non-2xx'; then
			log "WARNING: wrk $name: $(echo "$out" | grep 'Non-2xx' | tr -s ' ')"
		fi
		# tinyproxy closes the client connection after every response (no
		# keep-alive), which wrk counts as read errors; anyone else must not.
		if [ "$name" != tinyproxy ] && echo "$out" | grep -q 'Socket errors'; then
			log "WARNING: wrk $name: $(echo "$out" | grep 'Socket errors' | tr -s ' ')"
		fi ;;
	esac
	M_CPU=-
	if [ -n "$pid" ]; then
		c1=$(cpu_ticks "$pid")
		case $kind in
		http) M_CPU=$(calc "($c1 - $c0) * 1e6 / $CLK_TCK / $M_REQS") ;;
		*) M_CPU=$(calc "($c1 - $c0) / $CLK_TCK / ($M_BYTES / 1e9)") ;;
		esac
	fi
}

# rounds N KIND PATH... runs N interleaved rounds and collects R_RATE[path], R_CPU[path].
rounds() {
	local n=$1 kind=$2 r name; shift 2
	declare -gA R_RATE=() R_CPU=() R_P50=() R_P99=()
	for r in $(seq "$n"); do
		for name in "$@"; do
			measure "$name" "$kind"
			log "proxy $kind round $r $name: $M_RATE $([ "$kind" = http ] && echo "req/s, p50 ${M_P50}ms p99 ${M_P99}ms" || echo Gbit/s), proxy CPU $M_CPU $([ "$kind" = http ] && echo µs/req || echo s/GB)"
			R_RATE[$name]+=" $M_RATE" R_CPU[$name]+=" $M_CPU"
			[ "$kind" = http ] && R_P50[$name]+=" $M_P50" R_P99[$name]+=" $M_P99"
		done
	done
	return 0
}
# shellcheck disable=SC2086 # the list splits into arguments
rmed() { local -n m=$1; median ${m[$2]}; }

gib=$(calc "$BENCH_HTTPS_BYTES / 1073741824")
log "proxy (a): ${gib} GiB HTTPS download through CONNECT"
rounds "$BENCH_PROXY_ROUNDS" https direct unicorn tinyproxy gorelay
row "proxy HTTPS ${gib}GiB CONNECT Gbit/s" "$(rmed R_RATE unicorn)" "$(rmed R_RATE direct)" ">=0.9x direct" 'r >= 0.9'
row "proxy HTTPS tinyproxy Gbit/s (peer)" "$(rmed R_RATE tinyproxy)" "$(rmed R_RATE direct)" "peer, info" ''
row "proxy HTTPS unicorn vs tinyproxy Gbit/s" "$(rmed R_RATE unicorn)" "$(rmed R_RATE tinyproxy)" ">=1.0x" 'r >= 1.0'
row "proxy HTTPS CPU-s/GB (unicorn vs tinyproxy)" "$(rmed R_CPU unicorn)" "$(rmed R_CPU tinyproxy)" "info" ''
row "proxy HTTPS plain Go relay Gbit/s (ref)" "$(rmed R_RATE gorelay)" "$(rmed R_RATE direct)" "reference, info" ''
row "proxy HTTPS unicorn vs plain Go relay" "$(rmed R_RATE unicorn)" "$(rmed R_RATE gorelay)" "info" ''

gib=$(calc "$BENCH_RAW_BYTES / 1073741824")
log "proxy (b): ${gib} GiB raw TCP through CONNECT"
rounds "$BENCH_PROXY_ROUNDS" raw direct unicorn tinyproxy gorelay
row "proxy raw TCP ${gib}GiB CONNECT Gbit/s" "$(rmed R_RATE unicorn)" "$(rmed R_RATE direct)" ">=0.6x direct" 'r >= 0.6'
row "proxy raw TCP CPU-s/GB (unicorn vs tinyproxy)" "$(rmed R_CPU unicorn)" "$(rmed R_CPU tinyproxy)" "<=0.3 s/GB" 'u <= 0.3'
row "proxy raw TCP tinyproxy Gbit/s (peer)" "$(rmed R_RATE tinyproxy)" "$(rmed R_RATE direct)" "peer, info" ''
row "proxy raw TCP plain Go relay Gbit/s (ref)" "$(rmed R_RATE gorelay)" "$(rmed R_RATE direct)" "reference, info" ''
row "proxy raw TCP unicorn vs plain Go relay" "$(rmed R_RATE unicorn)" "$(rmed R_RATE gorelay)" "info" ''
row "proxy raw CPU-s/GB (unicorn vs plain Go relay)" "$(rmed R_CPU unicorn)" "$(rmed R_CPU gorelay)" "info" ''

log "proxy (c): HTTP keep-alive, $BENCH_WRK_CONNS connections, wrk ${BENCH_SECONDS}s"
rounds "$BENCH_ROUNDS" http direct unicorn tinyproxy
row "proxy HTTP keep-alive req/s (c$BENCH_WRK_CONNS)" "$(rmed R_RATE unicorn)" "$(rmed R_RATE direct)" ">=0.4x direct" 'r >= 0.4'
row "proxy HTTP tinyproxy req/s (peer, no keep-alive)" "$(rmed R_RATE tinyproxy)" "$(rmed R_RATE direct)" "peer, info" ''
row "proxy HTTP unicorn vs tinyproxy req/s" "$(rmed R_RATE unicorn)" "$(rmed R_RATE tinyproxy)" ">=1.0x" 'r >= 1.0'
row "proxy HTTP CPU µs/req (unicorn vs tinyproxy)" "$(rmed R_CPU unicorn)" "$(rmed R_CPU tinyproxy)" "info" ''
row "proxy HTTP p50 latency ms (unicorn vs direct)" "$(rmed R_P50 unicorn)" "$(rmed R_P50 direct)" "info" ''
row "proxy HTTP p99 latency ms (unicorn vs direct)" "$(rmed R_P99 unicorn)" "$(rmed R_P99 direct)" "info" ''

for p in "$PX_UNI" "$PX_TINY" "$PX_REF" "$PX_HTTP" "$PX_TLS" "$PX_SINK"; do stop "$p"; done
