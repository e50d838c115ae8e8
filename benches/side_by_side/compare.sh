#!/usr/bin/env bash
# Like-for-like comparison of caregate builds (and nginx), rounds alternating, for measuring one
# change: on these shared machines only figures from the same run compare.
#
#     benches/side_by_side/compare.sh OLD_BINARY NEW_BINARY [nginx]
#
# Run benches/side_by_side/run.sh once first: this reuses its PKI, configs and nginx setup in
# OUT, and its upstream binary. Settings (environment): ROUNDS (3), DURATION (5 s), CONNS (64),
# DURABILITY (flush | fsync), OHA_ARGS (extra oha arguments, e.g. "-p 4 --http2"), TARGET
# (/bytes/1024), OUT (target/side_by_side). Prints one line per round and proxy: requests/s,
# CPU µs per request (utime + stime from /proc), context switches per request, p99.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/target/side_by_side}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
DURABILITY=${DURABILITY:-flush}
OHA_ARGS=${OHA_ARGS:-}
TARGET=${TARGET:-/bytes/1024}
export PATH="$HOME/.cargo/bin:$PATH"
(($# >= 1)) || { echo "usage: $0 BINARY… (a caregate binary, or nginx)" >&2; exit 2; }
for f in "$OUT/pki/ca.pem" "$OUT/caregate-$DURABILITY.toml" "$OUT/nginx/nginx.conf"; do
    [[ -e $f ]] || { echo "$f is missing: run benches/side_by_side/run.sh first" >&2; exit 2; }
done

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
tls=(--cacert "$OUT/pki/ca.pem" --cert "$OUT/pki/a81001.pem" --key "$OUT/pki/a81001.key")

timeout 900 "$ROOT/target/release/examples/bench_upstream" 127.0.0.1:18080 900 1 >/dev/null 2>&1 &
PIDS+=($!)
ready() { # port
    for _ in $(seq 100); do
        curl -sf -o /dev/null --cacert "$OUT/pki/ca.pem" --cert "$OUT/pki/a81001.pem" \
            --key "$OUT/pki/a81001.key" "https://127.0.0.1:$1/bytes/16" && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }

for round in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        rm -rf "$OUT/audit-$DURABILITY"
        if [[ $bin == nginx ]]; then
            timeout 900 nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" >/dev/null 2>&1 &
            port=18444
        else
            timeout 900 "$bin" --log-format text run --config "$OUT/caregate-$DURABILITY.toml" \
                >"$OUT/logs/compare.log" 2>&1 &
            port=18443
        fi
        t=$!
        ready $port
        pid=$(pgrep -P "$t" | head -n1)
        procs=("$pid" $(pgrep -P "$pid" || true))
        # shellcheck disable=SC2086
        oha --no-tui -z 1s -c "$CONNS" $OHA_ARGS "${tls[@]}" "https://127.0.0.1:$port$TARGET" >/dev/null 2>&1
        c0=$(ticks "${procs[@]}") s0=$(switches "$pid")
        # shellcheck disable=SC2086
        oha --no-tui --output-format json -z "${DURATION}s" -c "$CONNS" $OHA_ARGS "${tls[@]}" \
            "https://127.0.0.1:$port$TARGET" >"$OUT/logs/compare.json" 2>/dev/null
        c1=$(ticks "${procs[@]}") s1=$(switches "$pid")
        python3 - "$round" "$bin" $((c1 - c0)) $((s1 - s0)) "$(getconf CLK_TCK)" "$OUT/logs/compare.json" <<'EOF'
import json, sys
rnd, name, ticks, switches, hz, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
j = json.load(open(path))
ok = sum(n for code, n in j["statusCodeDistribution"].items() if code.startswith("2"))
cpu = ticks / hz * 1e6 / max(ok, 1)
print(f"round {rnd}  {name[-40:]:>40}  {j['summary']['requestsPerSec']:9.0f} req/s  {cpu:7.1f} µs CPU/req  "
      f"{switches / max(ok, 1):5.2f} switches/req  p99 {j['latencyPercentiles']['p99'] * 1000:6.2f} ms")
EOF
        kill "$t" 2>/dev/null || true
        wait "$t" 2>/dev/null || true
    done
done
