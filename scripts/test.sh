#!/usr/bin/env bash
# Runs every check of floodgate: the one test command, used by .ci/run.
#
#   bash scripts/test.sh [extra go test flags, e.g. -run TestServe -v]
#
# On a Debian machine with Go it installs what the tests need when missing
# (redis-server, redis-sentinel, redis-cli, from apt-get), then checks
# formatting (gofmt), runs go vet, and runs every test with the race
# detector. It exits non-zero on any failure.
#
# CI=true is passed through to the tests: under CI, tests that need
# infrastructure (such as redis-server) fail when it is missing instead of
# skipping.
set -euo pipefail

cd "$(dirname "$0")/.."
export CI="${CI:-}"

step() { printf '\n==> %s\n' "$*"; }

need=()
for bin in redis-server redis-sentinel redis-cli; do
	command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if ((${#need[@]} > 0)); then
	step "installing redis-server redis-sentinel redis-tools (missing: ${need[*]})"
	sudo=()
	if [[ $(id -u) != 0 ]]; then
		if command -v sudo >/dev/null 2>&1; then
			sudo=(sudo)
		else
			echo "test.sh: ${need[*]} missing, not root and no sudo: install redis-server, redis-sentinel and redis-tools" >&2
			exit 1
		fi
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update
	"${sudo[@]}" apt-get install -y --no-install-recommends redis-server redis-sentinel redis-tools
	# The packages start a system redis-server on port 6379 (and a sentinel on
	# 26379); the tests start their own on free ports and do not need them.
	for bin in redis-server redis-sentinel redis-cli; do
		command -v "$bin" >/dev/null 2>&1 || { echo "test.sh: $bin still missing after apt-get install" >&2; exit 1; }
	done
fi

step "go version"
go version

step "gofmt -l"
unformatted=$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l)
if [[ -n $unformatted ]]; then
	echo "test.sh: these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "go vet ./..."
go vet ./...

# -p 1: one test binary at a time. The fault, exactness and multi-process
# tests measure latency and start real servers; on two cores a second
# package's tests running beside them would be the noise they measure.
step "go test -race -count=1 -p 1 -timeout 25m ./... $*"
go test -race -count=1 -p 1 -timeout 25m "$@" ./...

step "all checks passed"
