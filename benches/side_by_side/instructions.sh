#!/usr/bin/env bash
# Userspace instructions per request for one caregate build, counted by valgrind's callgrind:
# the same build gives the same count to within about 0.1 % from run to run, however busy the
# machine, so a change of a few per cent in the work per request shows, where timings (±25 %
# here) and CPU per request (±10 %) cannot. What it cannot show: time spent waiting on memory,
# contention between threads, and the kernel (system calls are counted in counts.sh). Crypto
# counts are not those of the real machine either: valgrind hides SHA and AVX-512 extensions,
# so ring takes slower paths than it does outside.
#
#     benches/side_by_side/instructions.sh BINARY [TOP]
#
# Prints the total per request and the TOP (30) functions by their own instructions per request.
# Run benches/side_by_side/run.sh once first: this reuses its PKI, `flush` config and upstream.
# Needs valgrind (Debian: apt-get install valgrind). Settings (environment): N (requests counted,
# 3000), CONNS (16), OHA_ARGS, TARGET (/bytes/1024). Each oha run opens CONNS new connections,
# whose handshakes are part of the count (about 10 % of it at the defaults).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/target/side_by_side}
BIN=$(realpath "${1:?usage: $0 BINARY [TOP]}")
TOP=${2:-30}
N=${N:-3000}
CONNS=${CONNS:-16}
OHA_ARGS=${OHA_ARGS:-}
TARGET=${TARGET:-/bytes/1024}
export PATH="$HOME/.cargo/bin:$PATH"
for f in "$OUT/pki/ca.pem" "$OUT/caregate-flush.toml"; do
    [[ -e $f ]] || { echo "$f is missing: run benches/side_by_side/run.sh first" >&2; exit 2; }
done
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)" >&2; exit 2; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
tls=(--cacert "$OUT/pki/ca.pem" --cert "$OUT/pki/a81001.pem" --key "$OUT/pki/a81001.key")
url="https://127.0.0.1:18443$TARGET"
dumps="$OUT/logs/callgrind"
rm -rf "$OUT/audit-flush" "$dumps"
mkdir -p "$dumps"

timeout 900 "$ROOT/target/release/examples/bench_upstream" 127.0.0.1:18080 900 1 >/dev/null 2>&1 &
PIDS+=($!)
timeout 900 valgrind --tool=callgrind --callgrind-out-file="$dumps/out" \
    "$BIN" --log-format text run --config "$OUT/caregate-flush.toml" >"$OUT/logs/instructions.log" 2>&1 &
PIDS+=($!)
# Under valgrind the gateway starts in seconds, not milliseconds.
for _ in $(seq 300); do
    curl -sf -o /dev/null "${tls[@]}" "https://127.0.0.1:18443/bytes/16" && break
    sleep 0.2
done
vg=$(pgrep -nf "callgrind-out-file=$dumps/out")
# Warm up (pools filled, allocator caches primed), then count from zero.
# shellcheck disable=SC2086
oha -n 500 -c "$CONNS" --no-tui "${tls[@]}" $OHA_ARGS "$url" >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
# shellcheck disable=SC2086
oha -n "$N" -c "$CONNS" --no-tui "${tls[@]}" $OHA_ARGS "$url" | grep -E 'Success rate'
callgrind_control -d "$vg" >/dev/null 2>&1
for _ in $(seq 100); do [[ -s $dumps/out.1 ]] && break; sleep 0.1; done
python3 - "$dumps/out.1" "$N" "$TOP" <<'EOF'
import collections, re, sys
# Self cost per function from a callgrind dump: cost lines under `fn=`, except the line after
# each `calls=`, which is the inclusive cost of that call.
path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, cost, fn, after_call = {}, collections.Counter(), None, False
def name(ref):
    m = re.match(r'\((\d+)\)(?: (.*))?', ref)
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), m.group(1))
for line in open(path, errors='replace'):
    if line.startswith('fn='):
        fn = name(line[3:].strip())
    elif line.startswith('cfn='):
        name(line[4:].strip())
    elif line.startswith('calls='):
        after_call = True
    elif line[:1].isdigit() or line[:1] in '+-*':
        if after_call:
            after_call = False
        elif fn is not None and len(line.split()) >= 2:
            cost[fn] += int(line.split()[1])
def short(s):
    for _ in range(6):
        s = re.sub(r'<[^<>]*>', '', s)
    return s[:100]
by_name = collections.Counter()
for k, v in cost.items():
    by_name[short(k)] += v
total = sum(cost.values())
print(f"userspace instructions per request: {total // n:,}")
for k, v in by_name.most_common(top):
    print(f"{v // n:9,} {100 * v / total:5.1f} %  {k}")
EOF
