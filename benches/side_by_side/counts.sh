#!/usr/bin/env bash
# Work per request that does not depend on how busy the machine is: system calls, mallocs and
# context switches per request, and CPU per request per thread, for one caregate build.
#
#     benches/side_by_side/counts.sh BINARY [flush|fsync]
#
# On these shared machines requests/s and CPU time move by ±25 % between runs; these counts
# move by a few per cent, so they show what a change did when the timings cannot. Run
# benches/side_by_side/run.sh once first: this reuses its PKI, configs and upstream. Needs perf.
# With MALLOC=1 it also counts mallocs, with a uprobe on glibc's malloc (`perf probe -x libc
# malloc`, added once, as root); each hit traps, so CPU figures are then meaningless. Settings
# (environment): N (requests counted, 20000), CONNS (64), OHA_ARGS, TARGET (/bytes/1024), MALLOC.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/target/side_by_side}
BIN=${1:?usage: $0 BINARY [flush|fsync]}
DURABILITY=${2:-flush}
N=${N:-20000}
CONNS=${CONNS:-64}
OHA_ARGS=${OHA_ARGS:-}
TARGET=${TARGET:-/bytes/1024}
export PATH="$HOME/.cargo/bin:$PATH"
for f in "$OUT/pki/ca.pem" "$OUT/caregate-$DURABILITY.toml"; do
    [[ -e $f ]] || { echo "$f is missing: run benches/side_by_side/run.sh first" >&2; exit 2; }
done
command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)" >&2; exit 2; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
tls=(--cacert "$OUT/pki/ca.pem" --cert "$OUT/pki/a81001.pem" --key "$OUT/pki/a81001.key")
url="https://127.0.0.1:18443$TARGET"

events=syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write
events+=,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_fdatasync
events+=,syscalls:sys_enter_clock_nanosleep
if [[ ${MALLOC:-0} == 1 ]]; then
    libc=$(ldconfig -p | awk '/libc\.so\.6 .*x86-64/ {print $NF; exit}')
    if perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc' ||
        perf probe -q -x "$libc" malloc 2>/dev/null; then
        events+=,probe_libc:malloc
    else
        echo "(no uprobe on malloc: mallocs are not counted)" >&2
    fi
fi

rm -rf "$OUT/audit-$DURABILITY"
"$ROOT/target/release/examples/bench_upstream" 127.0.0.1:18080 900 1 >/dev/null 2>&1 &
PIDS+=($!)
"$BIN" --log-format text run --config "$OUT/caregate-$DURABILITY.toml" >"$OUT/logs/counts.log" 2>&1 &
cg=$!
PIDS+=($cg)
for _ in $(seq 100); do
    curl -sf -o /dev/null "${tls[@]}" "https://127.0.0.1:18443/bytes/16" && break
    sleep 0.1
done
# Warm up: connections open, pools filled, allocator caches primed.
oha -n 2000 -c "$CONNS" --no-tui "${tls[@]}" $OHA_ARGS "$url" >/dev/null

threads() { # name voluntary involuntary ticks, one line per thread
    for t in /proc/"$cg"/task/*; do
        echo "$(cat "$t/comm")" \
            "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status")" \
            "$(awk '{print $14 + $15}' "$t/stat")"
    done
}
before=$(threads)
perf stat -x, -e "$events" -p "$cg" -o "$OUT/logs/counts.perf" &
stat=$!
sleep 0.5
oha -n "$N" -c "$CONNS" --no-tui "${tls[@]}" $OHA_ARGS "$url" | grep -E 'Requests/sec'
after=$(threads)
kill -INT "$stat"
wait "$stat" || true

echo "per request, over $N requests ($DURABILITY):"
awk -F, -v n="$N" '$3 ~ /:/ {sub(/^syscalls:sys_enter_/, "", $3); printf "  %-16s %7.3f\n", $3, $1 / n}' \
    "$OUT/logs/counts.perf"
hz=$(getconf CLK_TCK)
paste -d' ' <(echo "$before") <(echo "$after") |
    awk -v n="$N" -v hz="$hz" '{printf "  thread %-18s switches %.3f voluntary, %.3f involuntary; CPU %.1f µs\n",
        $1, ($6 - $2) / n, ($7 - $3) / n, ($8 - $4) * 1e6 / hz / n}'
