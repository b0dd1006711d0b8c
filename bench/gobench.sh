# shellcheck shell=bash
# Sourced by bench/run.sh: the Go benchmarks of rules/, dnsblock/, proxy/, control/.

log "go benchmarks (rules, dnsblock, proxy, control; -benchtime $BENCH_GOTIME)"
if ! "$GO" test -run=NONE -bench=. -benchmem -benchtime="$BENCH_GOTIME" -count=1 ./rules/ ./dnsblock/ ./proxy/ ./control/ \
	>"$WORK/gobench.txt" 2>&1; then
	grep -vE '^(Benchmark|goos|goarch|pkg|cpu|PASS|ok)' "$WORK/gobench.txt" | head -20 >&2
	fail "go test -bench failed (above); the rows of the failed packages say n/a"
fi
grep -E '^(Benchmark|ok|FAIL)' "$WORK/gobench.txt" | sed 's/^/  /' >&2

# gb NAME FIELD prints the value before unit FIELD (ns/op, allocs/op, MB/s,
# B/op) on the line of benchmark NAME (without the -GOMAXPROCS suffix).
gb() {
	awk -v n="$1" -v f="$2" '{
		name = $1; sub(/-[0-9]+$/, "", name)
		if (name != n) next
		for (i = 3; i <= NF; i++) if ($i == f) { print $(i-1); exit }
	}' "$WORK/gobench.txt"
}

# BenchmarkDecide runs against 1M domains and 10k CIDRs.
for c in dns-blocked dns-miss tcp-blocked-addr tcp-miss-name-and-addr tcp-miss-ipv6; do
	row "go Decide/$c ns/op" "$(gb "BenchmarkDecide/$c" ns/op)" - "<1000 ns" 'u < 1000'
	case $c in *miss*) row "go Decide/$c allocs/op" "$(gb "BenchmarkDecide/$c" allocs/op)" - "0" 'u == 0' ;; esac
done
ns=$(gb BenchmarkLoad1M ns/op)
row "go Load1M s" "$(calc "$ns / 1e9")" - "<1 s" 'u < 1'
row "go Load1M MB allocated/op" "$(calc "$(gb BenchmarkLoad1M B/op) / 1048576")" - "info"
# Handler paths (ns/op) and whole UDP round trips vs a stock miekg/dns
# server (ratio < 1 means faster than stock).
row "go BlockedQuery/quiet ns/op" "$(gb BenchmarkBlockedQuery/quiet ns/op)" - "info"
row "go BlockedQuery/logged ns/op" "$(gb BenchmarkBlockedQuery/logged ns/op)" "$(gb BenchmarkBlockedQuery/quiet ns/op)" "info (vs quiet)"
row "go CachedQuery ns/op" "$(gb BenchmarkCachedQuery ns/op)" - "info"
row "go UDP/blocked ns/op (vs stock miekg)" "$(gb BenchmarkUDP/blocked ns/op)" "$(gb BenchmarkUDP/baseline ns/op)" "<=1.0x" 'r <= 1.0'
row "go UDP/cached ns/op (vs stock miekg)" "$(gb BenchmarkUDP/cached ns/op)" "$(gb BenchmarkUDP/baseline ns/op)" "<=1.0x" 'r <= 1.0'
row "go ConnectRaw MB/s (vs direct)" "$(gb BenchmarkConnectRaw/proxy MB/s)" "$(gb BenchmarkConnectRaw/direct MB/s)" ">=0.6x" 'r >= 0.6'
row "go ConnectRaw goproxy MB/s (vs direct)" "$(gb BenchmarkConnectRaw/goproxy MB/s)" "$(gb BenchmarkConnectRaw/direct MB/s)" "peer, info"
# ns/op of parallel GETs: ratio is the slowdown (direct/proxy = throughput ratio).
# What the event hub (dashboard, SSE, --events) adds to a blocked decision.
row "go DecideBlocked ns/op with the event hub (vs none)" "$(gb BenchmarkDecideBlocked/hub ns/op)" "$(gb BenchmarkDecideBlocked/bare ns/op)" "info"
row "go KeepAlive ns/op (vs direct)" "$(gb BenchmarkPlainHTTPKeepAlive/proxy ns/op)" "$(gb BenchmarkPlainHTTPKeepAlive/direct ns/op)" "<=2.5x (>=0.4x rate)" 'r <= 2.5'
row "go KeepAlive by name ns/op (vs direct)" "$(gb BenchmarkPlainHTTPKeepAlive/proxy-name ns/op)" "$(gb BenchmarkPlainHTTPKeepAlive/direct ns/op)" "info"
row "go KeepAlive goproxy-256 ns/op (vs direct)" "$(gb BenchmarkPlainHTTPKeepAlive/goproxy-256 ns/op)" "$(gb BenchmarkPlainHTTPKeepAlive/direct ns/op)" "peer, info"

# Decide over many distinct names in shuffled order (benchtool decide), as
# a DNS server meets them: BenchmarkDecide asks one name, always in cache.
log "Decide over $((BENCH_DNS_NAMES / 1000))k distinct names against a $((BENCH_LOAD_NAMES / 1000))k-name list"
mkdir -p "$WORK/decide"
"$BT" decide -n "$BENCH_LOAD_NAMES" -q "$BENCH_DNS_NAMES" -dir "$WORK/decide" >"$WORK/decide.out" || fail "benchtool decide failed"
rm -rf "$WORK/decide"
sed 's/^/  /' "$WORK/decide.out" >&2
same=$(awk '$1 == "hit-same" {print $2}' "$WORK/decide.out")
while read -r c ns allocs; do
	row "Decide $c ns/op ($((BENCH_LOAD_NAMES / 1000))k list)" "$ns" "$same" "<1000 ns" 'u < 1000'
	[ "$allocs" = 0 ] || row "Decide $c allocs/op" "$allocs" - "0" 'u == 0'
done <"$WORK/decide.out"
