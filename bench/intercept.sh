# shellcheck shell=bash
# Sourced by bench/run.sh: the intercept section. Keep-alive HTTPS req/s
# through unicorn to a host it intercepts (TLS terminated with a leaf from
# a bench CA, each request decided and forwarded over TLS to the server)
# against the same requests to a host it tunnels blindly, in the same run;
# and whether a second connection to an intercepted host reuses the leaf.
#
# The interception: an rpc_error rule for a JSON-RPC method never sent, so
# every request is intercepted and forwarded. The server is benchtool's
# HTTPS server, its self-signed certificate trusted with --upstream-ca.

IXDIR=$WORK/intercept
mkdir -p "$IXDIR"
BENCH_INTERCEPT_REQS=${BENCH_INTERCEPT_REQS:-20000}
BENCH_INTERCEPT_CONNS=${BENCH_INTERCEPT_CONNS:-4}
read -r I_TLS I_UNI < <(ports 2)

start intercept-tlsserver "$BT" tlsserver -addr "127.0.0.1:$I_TLS" \
	-names "tunnel.test,intercept.test,*.intercept.test" -certout "$IXDIR/server.pem"
IX_TLS=$START_PID
"$UNICORN" ca init --dir "$IXDIR/ca" >"$WORK/intercept-ca.log" 2>&1 || die "unicorn ca init failed (log: $WORK/intercept-ca.log)"
cat >"$IXDIR/rules.yaml" <<'YAML'
scenario: bench-intercept
rules:
  - {domains: [intercept.test], action: rpc_error, code: -32005, jsonrpc: [never_called]}
YAML
"$BT" waitport -addr "127.0.0.1:$I_TLS" -timeout 10s || die "bench HTTPS server did not start (log: $WORK/intercept-tlsserver.log)"
start intercept-unicorn "$UNICORN" serve --control "" --dns "" --proxy "127.0.0.1:$I_UNI" --upstream "$FAKE" \
	--rules "$IXDIR/rules.yaml" --ca-dir "$IXDIR/ca" --upstream-ca "$IXDIR/server.pem" --log-level warn
IX_UNI=$START_PID
"$BT" waitport -addr "127.0.0.1:$I_UNI" -timeout 10s || die "unicorn (intercept) did not start (log: $WORK/intercept-unicorn.log)"

ROOTS=$IXDIR/ca/ca.pem,$IXDIR/server.pem
log "intercept: $BENCH_INTERCEPT_REQS keep-alive HTTPS requests over $BENCH_INTERCEPT_CONNS connections, tunnelled vs intercepted"
declare -A IX_RATE=()
for r in $(seq "$BENCH_ROUNDS"); do
	for path in tunnel intercept; do
		alive "$IX_UNI" intercept-unicorn
		out=$("$BT" keepalive -proxy "127.0.0.1:$I_UNI" -target "$path.test:$I_TLS" -roots "$ROOTS" \
			-n "$BENCH_INTERCEPT_REQS" -conns "$BENCH_INTERCEPT_CONNS") || { fail "keepalive $path failed"; continue; }
		read -r _ _ rate <<<"$out"
		log "intercept round $r $path: $rate req/s"
		IX_RATE[$path]+=" $rate"
	done
done
# shellcheck disable=SC2086 # the lists split into arguments
row "intercept HTTPS keep-alive req/s (c$BENCH_INTERCEPT_CONNS)" "$(median ${IX_RATE[intercept]:-})" "$(median ${IX_RATE[tunnel]:-})" ">=0.5x tunnelled" 'r >= 0.5'

# A fresh name, so its leaf is issued on the first connection.
fresh="leaf$(date +%s%N).intercept.test"
if out=$("$BT" leafcheck -proxy "127.0.0.1:$I_UNI" -target "$fresh:$I_TLS" -roots "$ROOTS" -conns 3); then
	read -r first _ < <(sed -n 1p <<<"$out")
	read -r second same < <(sed -n 2p <<<"$out")
	log "intercept leaf: handshakes $(echo "$out" | awk '{printf "%s ms (same key %s) ", $1, $2}')"
	row "intercept TLS handshake ms, 2nd vs 1st conn" "$second" "$first" "info" ''
	row "intercept leaf reused on 2nd conn (1 = yes)" "$same" "1" "same leaf key" 'u == 1'
else
	fail "leafcheck failed"
fi

for p in "$IX_UNI" "$IX_TLS"; do stop "$p"; done
