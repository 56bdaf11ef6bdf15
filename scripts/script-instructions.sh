#!/usr/bin/env bash
# Instructions the Redis server executes per decision inside the decision
# script (FCALL or EVALSHA, from the call's arrival to its reply), counted by
# valgrind's callgrind: repeatable whatever else the machine is doing, unlike
# CPU time. A redis-server runs under callgrind on a free loopback port,
# collecting only inside fcallCommand and evalGenericCommand;
# BenchmarkDecideBatch (GCRA, 10,000 keys, batches of n ops from one
# goroutine) runs against it for each n, calling the script as a function
# (fcall) and by EVALSHA (eval); the counters are zeroed before and read after
# each run; the warm rows (BenchmarkDecideBatchWarm) are batches under a
# fixed window and a sliding window counter on 1,000 keys that outlive the
# run, so that nearly every decision overwrites its key within its window;
# the last row is the go-redis/redis_rate yardstick
# (BenchmarkRedisRate, GCRA, one EVALSHA per decision) on the same server.
# The server is stopped by its pid.
#
#   scripts/script-instructions.sh [decisions per batch size, default 20000]
#
# Needs redis-server and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20000}"
. scripts/lib.sh

go test -c -o "$WORK/redis.test" ./store/redis
PORT=$(freeport)
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" --collect-atstart=no \
	--toggle-collect=evalGenericCommand --toggle-collect=fcallCommand \
	redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/valgrind.log" 2>&1 &
VPID=$!
PIDS+=("$VPID")
waitredis "$PORT"

echo "# $(date -u +%FT%TZ) $(redis-server --version | cut -d' ' -f3), $N decisions per row"
printf '%-24s %14s\n' "batch" "instr/decision"
# count NAME BENCH: runs the benchmark BENCH for N decisions and prints the
# instructions per decision the server spent in scripts.
count() {
	callgrind_control -z "$VPID" >/dev/null 2>&1
	FLOODGATE_BENCH_REDIS="127.0.0.1:$PORT" "$WORK/redis.test" -test.run '^$' \
		-test.bench "$2" -test.benchtime "${N}x" >"$WORK/bench.out"
	rm -f "$WORK"/cg.out.*
	callgrind_control -d "$VPID" >/dev/null 2>&1
	for _ in $(seq 50); do ls "$WORK"/cg.out.* >/dev/null 2>&1 && break; sleep 0.1; done
	sleep 0.5
	f=$(ls -t "$WORK"/cg.out.* | head -1)
	total=$(grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}')
	printf '%-24s %14d\n' "$1" $((total / (N + 1)))
}
for via in fcall eval; do
	for n in 1 8 32 128; do
		count "$via/$n" "DecideBatch/$via/n$n\$"
	done
done
for alg in fixed_window sliding_window; do
	for n in 1 32; do
		count "warm/$alg/$n" "DecideBatchWarm/$alg/n$n\$"
	done
done
count redis_rate 'RedisRate/gcra/p1$'
