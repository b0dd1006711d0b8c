#!/usr/bin/env bash
# bench/run.sh: unicorn against the direct path and its peers (dnsmasq,
# tinyproxy), all measured in this run, on loopback only. `make bench`
# builds bin/unicorn and runs this; see bench/README.md for the knobs.
#
# Sections (BENCH_ONLY="go load dns cache proxy socks intercept faults router capture" picks some):
#   go     Go benchmarks of rules/, dnsblock/, proxy/
#   load   1M-name rule load: time to first blocked answer and RSS, vs dnsmasq
#   dns    blocked-name qps, one core each, vs dnsmasq (bench/dns.sh)
#   cache  cached allowed-name qps vs dnsmasq's cache (bench/dns.sh)
#   proxy  HTTPS and raw CONNECT, HTTP keep-alive, vs direct and tinyproxy (bench/proxy.sh)
#   socks  HTTPS download through SOCKS5 vs HTTP CONNECT vs direct (bench/socks.sh)
#   intercept  intercepted vs tunnelled HTTPS keep-alive req/s, leaf reuse (bench/intercept.sh)
#   faults  no fault matched vs none configured; throttle and delay CPU per MB (bench/faults.sh)
#   router transparent router mode vs plain forwarding, in namespaces (bench/router.sh; root)
#   capture  unicorn report vs tshark -z conv,ip on a generated pcap: time and peak RSS (bench/report.sh)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

# Knobs (environment).
BENCH_SECONDS=${BENCH_SECONDS:-10}          # dnsperf and wrk duration per run
BENCH_ROUNDS=${BENCH_ROUNDS:-3}             # interleaved rounds; medians are printed
BENCH_PROXY_ROUNDS=${BENCH_PROXY_ROUNDS:-5} # rounds of the (short, noisy) HTTPS and raw CONNECT runs
BENCH_ONLY=${BENCH_ONLY:-go load dns cache proxy socks intercept faults router capture}
BENCH_GOTIME=${BENCH_GOTIME:-1s}            # -benchtime of the Go benchmarks
BENCH_LOAD_NAMES=${BENCH_LOAD_NAMES:-1000000}
BENCH_DNS_NAMES=${BENCH_DNS_NAMES:-100000}
BENCH_CACHE_NAMES=${BENCH_CACHE_NAMES:-100}
BENCH_DNSPERF_CLIENTS=${BENCH_DNSPERF_CLIENTS:-16}    # dnsperf -c
BENCH_DNSPERF_OUTSTANDING=${BENCH_DNSPERF_OUTSTANDING:-200}  # dnsperf -q
BENCH_DNSPERF_MAXQPS=${BENCH_DNSPERF_MAXQPS:-0}       # dnsperf -Q, 0 = no limit
BENCH_HTTPS_BYTES=${BENCH_HTTPS_BYTES:-1073741824}    # 1 GiB
BENCH_RAW_BYTES=${BENCH_RAW_BYTES:-4294967296}        # 4 GiB
BENCH_RAW_CHUNK=${BENCH_RAW_CHUNK:-131072}         # write size, iperf3's default
BENCH_WRK_CONNS=${BENCH_WRK_CONNS:-50}
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-0}     # DNS server core
BENCH_CLIENT_CPU=${BENCH_CLIENT_CPU:-1}     # dnsperf core
export BENCH_SECONDS BENCH_ROUNDS

GO=${GO:-go}
if ! command -v "$GO" >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	GO=/usr/local/go/bin/go
fi
command -v "$GO" >/dev/null 2>&1 || die "go not found (install Go 1.26, or put /usr/local/go/bin on PATH)"
UNICORN=$ROOT/bin/unicorn
[ -x "$UNICORN" ] || die "$UNICORN missing: run make build (make bench does)"
[ "$(nproc)" -ge 2 ] || die "the bench pins the server and the load generator to different cores: needs 2 CPUs, have $(nproc)"

need_tools dnsperf:dnsperf dnsmasq:dnsmasq tinyproxy:tinyproxy wrk:wrk curl:curl taskset:util-linux awk:gawk getconf:libc-bin
# dnsmasq and tinyproxy live in sbin on Debian.
export PATH=$PATH:/usr/sbin:/sbin

WORK=$(mktemp -d /tmp/unicorn-bench.XXXXXX)
RESULTS_DIR=$BENCH_DIR/results
RESULTS_RAW=$WORK/results.tsv
mkdir -p "$RESULTS_DIR"
: >"$RESULTS_RAW"
cleanup() {
	local rc=$?
	stop_all
	if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
		log "failed (exit $rc); logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building bench/benchtool"
"$GO" build -o "$WORK/benchtool" ./bench/benchtool
BT=$WORK/benchtool

# Listening ports come from below the kernel's ephemeral range.
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
BENCH_PORT_MIN=${BENCH_PORT_MIN:-20000}
BENCH_PORT_MAX=${BENCH_PORT_MAX:-$((eph_lo - 1 < 32000 ? eph_lo - 1 : 32000))}
ports() { "$BT" freeports -min "$BENCH_PORT_MIN" -max "$BENCH_PORT_MAX" "$1"; }

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
has() { case " $BENCH_ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

# The fake upstream every resolver forwards to: a dnsmasq answering every
# name under .test with 127.0.0.1 (TTL 1h so that caches keep it) and
# nothing else (no resolv.conf, no hosts): no query leaves the machine.
read -r FAKE_PORT < <(ports 1)
start fake-upstream dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --no-poll --pid-file= \
	--listen-address=127.0.0.1 --bind-interfaces --port="$FAKE_PORT" \
	--address=/test/127.0.0.1 --local-ttl=3600 --cache-size=0
FAKE_PID=$START_PID
"$BT" dnswait -addr "127.0.0.1:$FAKE_PORT" -name probe.test -rcode NOERROR -timeout 10s >/dev/null ||
	die "fake upstream dnsmasq did not start (log: $WORK/fake-upstream.log)"
FAKE=127.0.0.1:$FAKE_PORT

# shellcheck source=gobench.sh
has go && . "$BENCH_DIR/gobench.sh"
# shellcheck source=dns.sh
{ has load || has dns || has cache; } && . "$BENCH_DIR/dns.sh"
# shellcheck source=proxy.sh
has proxy && . "$BENCH_DIR/proxy.sh"
# shellcheck source=socks.sh
has socks && . "$BENCH_DIR/socks.sh"
# shellcheck source=intercept.sh
has intercept && . "$BENCH_DIR/intercept.sh"
# shellcheck source=faults.sh
has faults && . "$BENCH_DIR/faults.sh"
# shellcheck source=router.sh
has router && . "$BENCH_DIR/router.sh"
# shellcheck source=report.sh
has capture && . "$BENCH_DIR/report.sh"

stop "$FAKE_PID"

{
	echo "unicorn bench $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, ${BENCH_SECONDS}s runs, medians of $BENCH_ROUNDS interleaved rounds ($BENCH_PROXY_ROUNDS for HTTPS/raw), $(($(date +%s) - T0))s"
	echo "load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg) (work from others on the 2 cores makes rates noisy; CPU per query, per request and per GB hold better)"
	echo "ratio = unicorn / baseline (higher is better for rates, lower for time, memory and CPU)"
	render_table
	[ ${#BENCH_FAILURES[@]} -eq 0 ] || printf 'ERROR: %s\n' "${BENCH_FAILURES[@]}"
} >"$WORK/summary.txt"
cp "$WORK/summary.txt" "$RESULTS_DIR/latest.txt"
echo
cat "$WORK/summary.txt"
echo
echo "written to bench/results/latest.txt"
if [ ${#BENCH_FAILURES[@]} -gt 0 ]; then
	printf '[bench] ERROR: %s\n' "${BENCH_FAILURES[@]}" >&2
	exit 1
fi
