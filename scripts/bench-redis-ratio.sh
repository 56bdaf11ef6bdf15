#!/usr/bin/env bash
# The strict, batched library path against the redis_rate yardstick (one
# EVALSHA per decision) on one local redis-server: many keys, concurrency 64,
# GCRA 1000/s. The configurations run alternately, ROUNDS rounds of SECONDS
# each, so that a change in the machine's load hits them all; the report
# gives, per configuration, the median decisions/s, the median of its ratio
# to redis_rate within each round, and the CPU (client + Redis) per decision.
#
#   scripts/bench-redis-ratio.sh [rounds, default 5] [seconds, default 3] [extra flags for floodgate's rows]
#
# Needs redis-server, jq and /usr/bin/time. The server is stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SECS="${2:-3}"
EXTRA="${3:-}"
. scripts/lib.sh

go build -o "$WORK/floodgate" ./cmd/floodgate
PORT=$(freeport)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
RPID=$!
PIDS+=("$RPID")
waitredis "$PORT"
R="redis://127.0.0.1:$PORT"
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }

ROWS=("redis_rate" "library --batch --cache --batch-inflight 1" "library --batch --cache" "library --batch --cache --batch-inflight 3")
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(go version | cut -d' ' -f3), redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2); load at start $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
	for i in "${!ROWS[@]}"; do
		row=${ROWS[$i]}
		extra=""
		[ "$i" -gt 0 ] && extra="$EXTRA"
		r0=$(cpu "$RPID")
		# shellcheck disable=SC2086
		/usr/bin/time -f '%U %S' -o "$WORK/time" "$WORK/floodgate" bench --json --progress never --duration "${SECS}s" \
			--target $row $extra --store "$R" --limit gcra/1000/1s --keys 10000 --concurrency 64 >"$WORK/out.json"
		r1=$(cpu "$RPID")
		jq -r --arg i "$i" --arg r "$round" --arg c "$(awk '{print $1+$2}' "$WORK/time")" --arg s "$(( r1 - r0 ))" \
			'"\($r) \($i) \(.decisions_per_second) \(.decisions) \($c) \($s)"' "$WORK/out.json" >>"$WORK/rows"
	done
done
echo "# load at end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/rows" "${ROWS[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = sys.argv[2:]
by = {}
for r, i, dps, n, c, s in rows:
    by.setdefault(int(i), {})[int(r)] = (float(dps), int(n), float(c), int(s) / 100)
print(f"{'configuration':<48} {'dec/s (median)':>15} {'x redis_rate (median of rounds)':>32} {'CPU µs/decision (client+redis)':>32}")
for i, name in enumerate(names):
    d = by[i]
    dps = statistics.median(v[0] for v in d.values())
    ratio = statistics.median(d[r][0] / by[0][r][0] for r in d)
    cpu = statistics.median((v[2] + v[3]) * 1e6 / v[1] for v in d.values())
    rounds = " ".join(f"{d[r][0]:.0f}" for r in sorted(d))
    print(f"{name:<48} {dps:>15,.0f} {ratio:>32.2f} {cpu:>32.1f}   rounds: {rounds}")
PY
