# Sourced by the benchmark scripts: a work directory ($WORK) removed on exit,
# the processes they start (appended to PIDS) stopped by their pid on exit,
# a free loopback port, and a wait for a Redis server to answer.
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# waitredis PORT: waits up to 20 s for the Redis server on PORT to answer.
waitredis() {
	for _ in $(seq 100); do
		redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "redis-server on port $1 does not answer" >&2
	return 1
}
