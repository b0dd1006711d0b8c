# shellcheck shell=bash
# Sourced by bench/run.sh: the router section. Router mode in network
# namespaces (testbed's phone / router / fake internet, RFC 5737 addresses
# only) against plain kernel forwarding in the same namespaces, rounds
# interleaved: raw TCP and an HTTPS download through the transparent
# listener, the TCP connection rate (client-first exchanges), and UDP that
# is only forwarded across the nftables sets. Info rows compare with
# forwarding plus NAT (masquerade), the part of router mode's cost any
# home router pays. Needs root, iproute2 and
# nftables; the measuring is testbed's TestRouterThroughput, which prints
# "ROUTERBENCH name unicorn baseline ratio min max": the medians, then the
# median and spread of the per-round ratios (logged: the rounds' spread
# says how far to trust a ratio). Info rows also compare a minimal Go
# splice relay (without and with conntrack) with forwarding and with
# unicorn: the cost of any userspace hop here.

if [ "$(id -u)" -ne 0 ]; then
	fail "router: needs root (network namespaces and nftables); skipped"
else
	need_tools ip:iproute2 nft:nftables
	# At least 5 rounds: single rounds here swing by a factor of two.
	rounds=$((BENCH_ROUNDS > 5 ? BENCH_ROUNDS : 5))
	log "router: $rounds interleaved rounds in namespaces, unicorn router up vs plain forwarding"
	if out=$(UNICORN_ROUTER_BENCH=1 BENCH_ROUNDS=$rounds \
		BENCH_ROUTER_RAW_MB=${BENCH_ROUTER_RAW_MB:-2048} BENCH_ROUTER_HTTPS_MB=${BENCH_ROUTER_HTTPS_MB:-1024} \
		BENCH_ROUTER_SECONDS=${BENCH_ROUTER_SECONDS:-3} \
		"$GO" test -count=1 -timeout 30m -run '^TestRouterThroughput$' -v ./testbed/ 2>&1); then
		echo "$out" >"$WORK/router.log"
		while read -r _ name u b r lo hi; do
			log "router $name: per-round ratio median $r (min $lo, max $hi)"
			case $name in
			raw_tcp_gbit) row "router raw TCP Gbit/s (transparent)" "$u" "$b" ">=0.6x forwarding" 'r >= 0.6' ;;
			https_gbit) row "router HTTPS download Gbit/s (transparent)" "$u" "$b" ">=0.9x forwarding" 'r >= 0.9' ;;
			tcp_conn_per_s) row "router TCP connections/s (transparent)" "$u" "$b" ">=0.5x forwarding" 'r >= 0.5' ;;
			udp_gbit) row "router UDP Gbit/s (forwarded, nft sets)" "$u" "$b" ">=0.95x forwarding" 'r >= 0.95' ;;
			*_relay_vs_baseline) row "  Go splice relay vs forwarding: ${name%_relay_vs_baseline}" "$u" "$b" "info" '' ;;
			*_vs_relay_nat) row "  same, vs the relay + conntrack: ${name%_vs_relay_nat}" "$u" "$b" "info" '' ;;
			*_vs_nat) row "  same, vs forwarding with NAT only: ${name%_vs_nat}" "$u" "$b" "info" '' ;;
			*_vs_relay) row "  same, vs a plain Go splice relay: ${name%_vs_relay}" "$u" "$b" "info" '' ;;
			esac
		done < <(grep '^ROUTERBENCH ' <<<"$out")
		# CPU per unit (s/GB, or µs per connection) of the bench's own
		# process (both ends, and the Go relay) and of unicorn.
		while read -r _ line; do
			log "router CPU: $line"
		done < <(grep '^ROUTERCPU ' <<<"$out")
	else
		echo "$out" >"$WORK/router.log"
		fail "router: the namespace measurement failed (log: $WORK/router.log)"
	fi
fi
