# shellcheck shell=bash
# Sourced by bench/run.sh: the faults section. Raw TCP through CONNECT,
# to a local sink only, with three unicorn processes side by side:
#   none     rules with no byte fault at all
#   unmatched  throttle, delay and cut rules that match other destinations
#   faulty   the rule of each fault run matches the sink
# A relayed connection no fault matched must cost no more than one with
# none configured (it stays a splice); throttle and delay must not spin:
# their CPU per MB is printed beside the wall time they take.

FTDIR=$WORK/faults
mkdir -p "$FTDIR"
read -r F_SINK F_NONE F_UNM F_THR F_DLY < <(ports 5)
BENCH_FAULT_BYTES=${BENCH_FAULT_BYTES:-1073741824}   # 1 GiB per unfaulted run
BENCH_FAULT_ROUNDS=${BENCH_FAULT_ROUNDS:-5}
BENCH_THROTTLE_RATE=${BENCH_THROTTLE_RATE:-8MiB}     # per second
BENCH_THROTTLE_BYTES=${BENCH_THROTTLE_BYTES:-33554432} # 32 MiB: 4 s at 8 MiB/s

cat >"$FTDIR/none.yaml" <<YAML
scenario: none
rules:
  - {domains: [blocked.invalid], action: reject}
YAML
cat >"$FTDIR/unmatched.yaml" <<YAML
scenario: unmatched
rules:
  - {domains: [slow.invalid], action: throttle, rate: 64kbit}
  - {ips: [192.0.2.0/24], action: delay, latency: 1s, on: chunk}
  - {ips: [127.0.0.1], ports: [1], action: cut, after_bytes: 1KiB}
  - {domains: [blocked.invalid], action: reject}
YAML
cat >"$FTDIR/throttle.yaml" <<YAML
scenario: throttle
rules:
  - {ips: [127.0.0.1], ports: [$F_SINK], action: throttle, rate: $BENCH_THROTTLE_RATE}
YAML
cat >"$FTDIR/delay.yaml" <<YAML
scenario: delay
rules:
  - {ips: [127.0.0.1], ports: [$F_SINK], action: delay, latency: 1ms, on: chunk, direction: up}
YAML

start faults-sink "$BT" sink -addr "127.0.0.1:$F_SINK"
FT_SINK=$START_PID
declare -A FT_PID=()
for v in none:$F_NONE unmatched:$F_UNM throttle:$F_THR delay:$F_DLY; do
	start "faults-${v%%:*}" "$UNICORN" serve --dns "" --control "" --proxy "127.0.0.1:${v##*:}" --upstream "$FAKE" --rules "$FTDIR/${v%%:*}.yaml"
	FT_PID[${v%%:*}]=$START_PID
done
for p in "$F_SINK" "$F_NONE" "$F_UNM" "$F_THR" "$F_DLY"; do
	"$BT" waitport -addr "127.0.0.1:$p" -timeout 10s || die "nothing listening on 127.0.0.1:$p (logs in $WORK)"
done

# fpump NAME PORT BYTES CHUNK sets F_RATE (Gbit/s), F_SECS and F_CPU
# (the unicorn's CPU seconds) for one run through the proxy on PORT.
fpump() {
	local pid=${FT_PID[$1]} out c0 c1
	alive "$pid" "faults-$1"
	c0=$(cpu_ticks "$pid")
	out=$("$BT" pump -target "127.0.0.1:$F_SINK" -bytes "$3" -chunk "$4" -proxy "127.0.0.1:$2") || die "pump through $1 failed"
	c1=$(cpu_ticks "$pid")
	read -r _ F_SECS F_RATE <<<"$out"
	F_CPU=$(calc "($c1 - $c0) / $CLK_TCK")
}

gib=$(calc "$BENCH_FAULT_BYTES / 1073741824")
log "faults (a): ${gib} GiB raw TCP, no fault matched vs none configured, $BENCH_FAULT_ROUNDS rounds"
FR_NONE="" FR_UNM="" FC_NONE="" FC_UNM=""
for r in $(seq "$BENCH_FAULT_ROUNDS"); do
	fpump none "$F_NONE" "$BENCH_FAULT_BYTES" "$BENCH_RAW_CHUNK"
	FR_NONE+=" $F_RATE" FC_NONE+=" $(calc "$F_CPU / ($BENCH_FAULT_BYTES / 1e9)")"
	log "faults round $r none: $F_RATE Gbit/s"
	fpump unmatched "$F_UNM" "$BENCH_FAULT_BYTES" "$BENCH_RAW_CHUNK"
	FR_UNM+=" $F_RATE" FC_UNM+=" $(calc "$F_CPU / ($BENCH_FAULT_BYTES / 1e9)")"
	log "faults round $r unmatched: $F_RATE Gbit/s"
done
# shellcheck disable=SC2086 # the lists split into arguments
{
	row "faults no fault matched vs none, Gbit/s" "$(median $FR_UNM)" "$(median $FR_NONE)" ">=0.95x" 'r >= 0.95'
	row "faults no fault matched vs none, CPU-s/GB" "$(median $FC_UNM)" "$(median $FC_NONE)" "info" ''
}

mib=$(calc "$BENCH_THROTTLE_BYTES / 1048576")
log "faults (b): $mib MiB through throttle $BENCH_THROTTLE_RATE/s"
fpump throttle "$F_THR" "$BENCH_THROTTLE_BYTES" "$BENCH_RAW_CHUNK"
want=$(calc "$BENCH_THROTTLE_BYTES / (${BENCH_THROTTLE_RATE%MiB} * 1048576)")
row "faults throttle wall s (vs rate's)" "$F_SECS" "$want" "0.9-1.1x" 'r >= 0.9 && r <= 1.1'
row "faults throttle CPU ms/MB" "$(calc "$F_CPU * 1000 / ($BENCH_THROTTLE_BYTES / 1048576)")" - "info"
row "faults throttle CPU share of wall time" "$(calc "$F_CPU / $F_SECS")" - "<0.25 (a spin: ~1)" 'u < 0.25'

mib=$(calc "$BENCH_THROTTLE_BYTES / 1048576")
log "faults (c): $mib MiB with a 1 ms delay per chunk"
fpump delay "$F_DLY" "$BENCH_THROTTLE_BYTES" "$BENCH_RAW_CHUNK"
row "faults delay/chunk wall s" "$F_SECS" - "info"
row "faults delay/chunk CPU ms/MB" "$(calc "$F_CPU * 1000 / ($BENCH_THROTTLE_BYTES / 1048576)")" - "info"
row "faults delay/chunk CPU share of wall time" "$(calc "$F_CPU / $F_SECS")" - "<0.25 (a spin: ~1)" 'u < 0.25'

for p in "${FT_PID[@]}" "$FT_SINK"; do stop "$p"; done
