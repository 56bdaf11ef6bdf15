#!/usr/bin/env bash
# Side-by-side figures of docs/benchmarks.md, in one session on one machine:
# a local redis-server on a free loopback port; floodgate serve on the memory
# store and on Redis (its defaults: strict, batched, over-limit cache; and a
# rule with consistency approximate, synced every 100ms), the
# Envoy-style baseline (floodgate bench-server --kind envoy) and the
# do-nothing floor (--kind noop) over gRPC at concurrency 1, 16 and 64 with
# 10,000 keys; the HTTP API; the library in process and the redis_rate
# yardstick; a hot key. Every server is stopped by its pid.
#
#   scripts/bench-side-by-side.sh [seconds per run, default 5] > results.txt
#
# Needs redis-server, jq and /usr/bin/time. Each row prints decisions/s,
# p50 and p99, store round trips or Redis commands per decision, and the CPU
# seconds the load generator (client) and the server process(es) used.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}s"
. scripts/lib.sh

go build -o "$WORK/floodgate" ./cmd/floodgate
FG="$WORK/floodgate"

RP=$(freeport)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
RPID=$!
PIDS+=("$RPID")
waitredis "$RP"
REDIS="redis://127.0.0.1:$RP"

cat >"$WORK/bench.yaml" <<'EOF'
domain: bench
descriptors:
  - key: key
    rate_limit: {unit: second, requests_per_unit: 1000000000}
  - key: hot
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: approx
    consistency: approximate
    rate_limit: {unit: second, requests_per_unit: 1000000000}
EOF

# start NAME ARGS...: starts a server, waits for its gRPC (and HTTP) address.
declare -A ADDR HTTP PID
start() {
	local name=$1; shift
	"$FG" "$@" >"$WORK/$name.log" 2>&1 &
	PID[$name]=$!
	PIDS+=("$!")
	for _ in $(seq 100); do
		ADDR[$name]=$(grep -o 'protocol=grpc addr=[^ ]*' "$WORK/$name.log" | head -1 | cut -d= -f3 || true)
		HTTP[$name]=$(grep -o 'protocol=http addr=[^ ]*' "$WORK/$name.log" | head -1 | cut -d= -f3 || true)
		[ -n "${ADDR[$name]}" ] && break
		sleep 0.1
	done
	[ -n "${ADDR[$name]}" ] || { cat "$WORK/$name.log"; exit 1; }
}
start mem serve --store memory --config "$WORK/bench.yaml" --grpc 127.0.0.1:0 --http 127.0.0.1:0
start redis serve --store "$REDIS" --config "$WORK/bench.yaml" --grpc 127.0.0.1:0 --http 127.0.0.1:0
start envoy bench-server --kind envoy --store "$REDIS"
start noop bench-server --kind noop

# cpu PID...: the CPU seconds (user+system) the processes used so far.
cpu() {
	local t=0
	for p in "$@"; do
		t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat")))
	done
	echo "$t"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3), $(redis-server --version | cut -d' ' -f3)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %5s %10s %9s %9s %9s %9s %9s %8s %8s %8s\n' row conc dec/s p50 p99 rt/dec script/dec redis/dec clientCPU srvCPU redisCPU

# run LABEL SERVERPIDS -- BENCH ARGS...
run() {
	local label=$1 spids=$2; shift 3
	local s0 r0 s1 r1
	s0=$(cpu $spids); r0=$(cpu "$RPID")
	/usr/bin/time -f '%U %S' -o "$WORK/time" "$FG" bench --json --progress never --duration "$DUR" --redis-stats "$REDIS" "$@" >"$WORK/out.json" 2>"$WORK/err" || { cat "$WORK/err"; }
	s1=$(cpu $spids); r1=$(cpu "$RPID")
	local ccpu
	ccpu=$(awk '{printf "%.2f", $1+$2}' "$WORK/time")
	jq -r --arg l "$label" --arg c "$ccpu" --arg s "$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.2f",(b-a)/100}')" --arg r "$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.2f",(b-a)/100}')" \
		'[$l, .concurrency, (.decisions_per_second|floor), ((.latency.p50_ns/1000|floor|tostring)+"µs"), ((.latency.p99_ns/1000|floor|tostring)+"µs"),
		  (if .store_calls >= 0 then (.round_trips_per_decision*10000|round/10000|tostring) else "-" end),
		  (((.redis_commands.evalsha // 0) + (.redis_commands.eval // 0) + (.redis_commands.fcall // 0)) / (if .decisions > 0 then .decisions else 1 end) * 10000 | round / 10000 | tostring),
		  ((.redis_commands_per_decision*10000|round/10000)|tostring), $c, $s, $r,
		  "allowed=\(.allowed) denied=\(.denied) errors=\(.errors)" + (if .exactness then " exact=\(.exactness.ok) admitted=\(.exactness.admitted) allows=\(.exactness.limit_allows)" else "" end) + (if .errors > 0 then " first_error=\(.first_error)" else "" end)]
		 | "\(.[0]|.+" "*(44-length)) \(.[1]) \(.[2]) \(.[3]) \(.[4]) \(.[5]) \(.[6]) \(.[7]) \(.[8]) \(.[9]) \(.[10])  \(.[11])"' "$WORK/out.json"
}

for c in 1 16 64; do
	run "grpc floodgate serve, memory" "${PID[mem]}" -- --target grpc --addr "${ADDR[mem]}" --domain bench --descriptor 'key={key}' --keys 10000 --concurrency $c
	run "grpc floodgate serve, redis strict batched" "${PID[redis]}" -- --target grpc --addr "${ADDR[redis]}" --domain bench --descriptor 'key={key}' --keys 10000 --concurrency $c
	run "grpc floodgate serve, redis approximate" "${PID[redis]}" -- --target grpc --addr "${ADDR[redis]}" --domain bench --descriptor 'approx={key}' --keys 10000 --concurrency $c
	run "grpc envoy-style INCRBY+EXPIRE, redis" "${PID[envoy]}" -- --target grpc --addr "${ADDR[envoy]}" --domain bench --descriptor 'key={key}' --keys 10000 --concurrency $c
	run "grpc do-nothing floor" "${PID[noop]}" -- --target grpc --addr "${ADDR[noop]}" --domain bench --descriptor 'key={key}' --keys 10000 --concurrency $c
done
for c in 1 16 64; do
	run "http /v1/check floodgate serve, memory" "${PID[mem]}" -- --target http --addr "http://${HTTP[mem]}" --limit fixed_window/1000000000/1s --keys 10000 --concurrency $c
	run "http /v1/check floodgate serve, redis" "${PID[redis]}" -- --target http --addr "http://${HTTP[redis]}" --limit fixed_window/1000000000/1s --keys 10000 --concurrency $c
done
for c in 1 64; do
	run "library, memory" "" -- --target library --store memory --limit gcra/1000/1s --keys 10000 --concurrency $c
	run "library, redis, one call per decision" "" -- --target library --store "$REDIS" --limit gcra/1000/1s --keys 10000 --concurrency $c
	run "library, redis, batched + cache" "" -- --target library --store "$REDIS" --batch --cache --limit gcra/1000/1s --keys 10000 --concurrency $c
	run "redis_rate (one EVALSHA per decision)" "" -- --target redis_rate --store "$REDIS" --limit gcra/1000/1s --keys 10000 --concurrency $c
done
run "hot key: grpc floodgate serve, redis" "${PID[redis]}" -- --target grpc --addr "${ADDR[redis]}" --domain bench --descriptor 'hot={key}' --keys 1 --concurrency 64
run "hot key: grpc envoy-style, redis" "${PID[envoy]}" -- --target grpc --addr "${ADDR[envoy]}" --domain bench --descriptor 'hot={key}' --keys 1 --concurrency 64
run "hot key: library, redis, batched + cache" "" -- --target library --store "$REDIS" --batch --cache --limit token_bucket/100/1m --keys 1 --concurrency 64
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
