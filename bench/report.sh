# shellcheck shell=bash
# Sourced by bench/run.sh: the capture section. `unicorn report` against
# `tshark -r FILE -q -z conv,ip` on the same generated pcap (ordinary
# traffic of 200 devices on documentation addresses, written by
# capture/capturetest/genpcap), interleaved, in the same run: wall time and
# peak RSS (/usr/bin/time). The file is read once first so that both read
# it from the page cache.

BENCH_PCAP_SIZE=${BENCH_PCAP_SIZE:-1GB}

need_tools tshark:tshark
# GNU time for the peak RSS; `command -v time` finds the shell keyword,
# so need_tools cannot tell whether it is there.
if [ ! -x /usr/bin/time ]; then
	log "installing the Debian package time (GNU time)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2 ||
		die "/usr/bin/time missing and apt-get install time failed"
fi

RPDIR=$WORK/report
mkdir -p "$RPDIR"
"$GO" build -o "$RPDIR/genpcap" ./capture/capturetest/genpcap
log "capture: generating a $BENCH_PCAP_SIZE pcap"
"$RPDIR/genpcap" -bulk "$BENCH_PCAP_SIZE" -o "$RPDIR/bulk.pcap" || die "genpcap failed"
PCAP_BYTES=$(stat -c %s "$RPDIR/bulk.pcap")
cat "$RPDIR/bulk.pcap" >/dev/null

# timed NAME CMD... runs CMD under /usr/bin/time; prints "seconds rss_kb".
timed() {
	local name=$1; shift
	/usr/bin/time -o "$RPDIR/$name.time" -f '%e %M' "$@" >"$RPDIR/$name.out" 2>"$RPDIR/$name.err"
	local rc=$?
	# unicorn report exits 3 when the capture has leaks: a report all the same.
	if [ "$rc" -ne 0 ] && { [ "$name" != unicorn ] || [ "$rc" -ne 3 ]; }; then
		fail "capture: $name exited $rc (see $RPDIR/$name.err)"
		return 1
	fi
	tail -n 1 "$RPDIR/$name.time"
}

declare -A RP_SEC=() RP_RSS=()
for r in $(seq "$BENCH_ROUNDS"); do
	for tool in unicorn tshark; do
		case $tool in
		unicorn) out=$(timed unicorn "$UNICORN" report --format json --out "$RPDIR/report.json" "$RPDIR/bulk.pcap") || continue ;;
		tshark) out=$(timed tshark tshark -n -r "$RPDIR/bulk.pcap" -q -z conv,ip) || continue ;;
		esac
		read -r sec rss <<<"$out"
		log "capture round $r $tool: ${sec}s, peak RSS ${rss} KiB"
		RP_SEC[$tool]+=" $sec"
		RP_RSS[$tool]+=" $rss"
	done
done
# shellcheck disable=SC2086 # the lists split into arguments
{
	u_sec=$(median ${RP_SEC[unicorn]:-}) t_sec=$(median ${RP_SEC[tshark]:-})
	u_rss=$(median ${RP_RSS[unicorn]:-}) t_rss=$(median ${RP_RSS[tshark]:-})
}
size_mib=$(calc "$PCAP_BYTES / 1048576")
row "report ${size_mib} MiB pcap, seconds (vs tshark conv,ip)" "$u_sec" "$t_sec" "<=0.33x tshark" 'r <= 0.3334'
row "report peak RSS MiB (vs tshark conv,ip)" "$(calc "$u_rss / 1024")" "$(calc "$t_rss / 1024")" "bounded: <=256 MiB" 'u <= 256'
row "report MiB/s" "$(calc "$size_mib / $u_sec")" "$(calc "$size_mib / $t_sec")" "info" ''
rm -f "$RPDIR/bulk.pcap"
