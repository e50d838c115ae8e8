#!/usr/bin/env bash
# Side-by-side benchmark: caregate against nginx as mutual-TLS reverse proxies, same machine,
# same certificates, same upstream, rounds alternating caregate, nginx, caregate, nginx…
#
#     benches/side_by_side/run.sh            (from the top of the checkout; see BENCHMARKS.md)
#
# Settings (environment): DURATION (seconds per round, 8), ROUNDS (3), CONNS (64), H2_STREAMS
# (oha -p for HTTP/2, 4), IDLE_N (10000), AUDIT_CONNS (256), SCENARIOS ("A_flush A_fsync B C D E AUDIT"),
# PROFILE (1: perf profile of caregate under A), OUT (target/side_by_side).
# Everything runs on loopback, every process has a deadline, and the trap stops what we started.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/side_by_side"
OUT=${OUT:-$ROOT/target/side_by_side}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
H2_STREAMS=${H2_STREAMS:-4}
IDLE_N=${IDLE_N:-10000}
IDLE_HOLD=${IDLE_HOLD:-4}
AUDIT_CONNS=${AUDIT_CONNS:-256}
SCENARIOS=${SCENARIOS:-"A_flush A_fsync B C D E AUDIT"}
PROFILE=${PROFILE:-1}
CG_PORT=${CG_PORT:-18443}
NG_PORT=${NG_PORT:-18444}
UP_PORT=${UP_PORT:-18080}
# No process of ours outlives this, whatever happens to the script.
LIFETIME=${LIFETIME:-900}
SMALL=/bytes/1024
LARGE=/bytes/67108864

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- tools ------------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
log "building caregate and the benchmark helpers (release)"
(cd "$ROOT" && cargo build --release --quiet --bin caregate --example bench_upstream --example bench_idle)
BIN="$ROOT/target/release"
CAREGATE="$BIN/caregate"
if ! command -v nginx >/dev/null; then
    log "installing nginx from Debian packages"
    apt-get update -qq && (apt-get install -y -qq nginx-light || apt-get install -y -qq nginx) >/dev/null
fi
NGINX=$(command -v nginx)
if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked; a few minutes, once)"
    cargo install oha --locked --quiet
fi
OHA=$(command -v oha)
PERF=$(command -v perf || true)
PY=$(command -v python3)

# Idle connections need descriptors on both sides; take what the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < IDLE_N + 1000 )); then
    IDLE_N=$(( $(ulimit -n) - 1000 ))
    log "open-file limit $(ulimit -n): IDLE_N lowered to $IDLE_N"
fi

rm -rf "$OUT"
mkdir -p "$OUT"/{nginx/logs,nginx/tmp,results,logs}
RESULTS="$OUT/results/results.jsonl"
: >"$RESULTS"

# --- processes --------------------------------------------------------------------------------
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Starts "$@" in the background under a deadline; sets BG_PID to the process itself.
start_bg() {
    local logfile=$1
    shift
    timeout -s TERM "$LIFETIME" "$@" >"$logfile" 2>&1 &
    local t=$!
    PIDS+=("$t")
    BG_PID=""
    for _ in $(seq 50); do
        BG_PID=$(pgrep -P "$t" | head -n1 || true)
        [[ -n $BG_PID ]] && break
        sleep 0.05
    done
    BG_TIMEOUT=$t
}

stop_bg() { # timeout-pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

wait_ready() { # port
    for _ in $(seq 100); do
        if curl -sf -o /dev/null --cacert "$PKI/ca.pem" --cert "$PKI/a81001.pem" --key "$PKI/a81001.key" \
            "https://127.0.0.1:$1/bytes/16"; then
            return 0
        fi
        sleep 0.1
    done
    log "nothing answers on port $1"
    return 1
}

# The proxy's processes: caregate itself, or nginx's master and workers.
proc_tree() { echo "$1" $(pgrep -P "$1" || true); }
cpu_ticks() { # pids…
    local t=0 p
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
    done
    echo "$t"
}
# CPU seconds (user + system) used so far by this shell's finished children (the load generator).
# `times` must run in this shell, not in a $(…) subshell, whose children are its own.
children_cpu() { times >"$OUT/logs/times.txt"; }
status_kib() { # field pids…
    local f=$1 t=0 p
    shift
    for p in "$@"; do
        [[ -r /proc/$p/status ]] || continue
        t=$(( t + $(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/status") ))
    done
    echo "$t"
}

# --- PKI, upstream, configs -------------------------------------------------------------------
PKI="$OUT/pki"
log "dev PKI in $PKI"
"$CAREGATE" pki dev --out "$PKI" >"$OUT/logs/pki.log" 2>&1
start_bg "$OUT/logs/upstream.log" "$BIN/examples/bench_upstream" "127.0.0.1:$UP_PORT" "$LIFETIME" 1
UPSTREAM_PID=$BG_PID
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$UP_PORT/bytes/16" && break; sleep 0.1; done

caregate_config() { # durability [port] → path
    local f="$OUT/caregate-$1.toml"
    cat >"$f" <<EOF
# Written by benches/side_by_side/run.sh
[listener]
bind = "127.0.0.1:${2:-$CG_PORT}"
server_cert = "pki/server.pem"
server_key = "pki/server.key"
client_ca = ["pki/ca.pem"]
crl = ["pki/ca.crl"]
max_connections = 20000
header_timeout = "120s"
idle_timeout = "120s"
drain_timeout = "1s"
session_resumption = false

[identity]
org_from = ["san_uri:urn:nhs:ods:", "subject:OU", "endpoint"]

[[organisation]]
code = "A81001"
name = "Example Surgery"
groups = ["gp"]

[[upstream]]
name = "bench"
urls = ["http://127.0.0.1:$UP_PORT"]

[[route]]
name = "bytes"
path_prefix = "/bytes/"
upstream = "bench"
class = "epr"
  [[route.allow]]
  groups = ["gp"]
  methods = ["GET"]

[rate_limit.epr]
requests_per_second = 1000000
burst = 1000000

[audit]
dir = "audit-$1"
durability = "$1"
EOF
    echo "$f"
}

cat >"$OUT/nginx/nginx.conf" <<EOF
# Written by benches/side_by_side/run.sh: nginx as an mTLS reverse proxy with upstream keep-alive.
$( [[ $EUID == 0 ]] && echo "user root;" )
worker_processes $(nproc);
worker_rlimit_nofile $(ulimit -n);
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/logs/error.log warn;
daemon off;
events { worker_connections $(( $(ulimit -n) - 100 )); }
http {
    access_log $OUT/nginx/logs/access.log;
    client_body_temp_path $OUT/nginx/tmp/body;
    proxy_temp_path $OUT/nginx/tmp/proxy;
    fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
    scgi_temp_path $OUT/nginx/tmp/scgi;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_header_timeout 120s;
    upstream bench {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NG_PORT ssl http2;
        ssl_certificate $PKI/server.pem;
        ssl_certificate_key $PKI/server.key;
        ssl_client_certificate $PKI/ca.pem;
        ssl_crl $PKI/ca.crl;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What caregate tells its upstream about the caller, so both do similar work.
            proxy_set_header X-Client-Cert-Subject \$ssl_client_s_dn;
            proxy_set_header X-Client-Cert-Fingerprint \$ssl_client_fingerprint;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header Client-Cert \$ssl_client_escaped_cert;
            proxy_set_header X-Request-Id \$request_id;
            proxy_buffer_size 64k;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF

# --- one measured run -------------------------------------------------------------------------
# measure SCENARIO TARGET ROUND PID oha-args… ; appends one JSON line to $RESULTS.
measure() {
    local scenario=$1 target=$2 round=$3 pid=$4
    shift 4
    local pids json before after
    pids=$(proc_tree "$pid")
    json="$OUT/results/$scenario-$target-$round.json"
    local client_before client_after
    before=$(cpu_ticks $pids)
    children_cpu
    client_before=$(tail -n1 "$OUT/logs/times.txt")
    "$OHA" --no-tui --output-format json "$@" >"$json" 2>"$OUT/logs/oha-$scenario-$target-$round.log" || true
    children_cpu
    client_after=$(tail -n1 "$OUT/logs/times.txt")
    after=$(cpu_ticks $pids)
    "$PY" - "$json" "$scenario" "$target" "$round" "$(( after - before ))" "$(getconf CLK_TCK)" \
        "$(status_kib VmHWM $pids)" "$(status_kib VmRSS $pids)" "$client_before" "$client_after" \
        >>"$RESULTS" <<'PY'
import json, sys
import re
path, scenario, target, rnd, ticks, hz, hwm, rss, cb, ca = sys.argv[1:]
def secs_of(times_line):  # "0m1.5s 0m0.2s": children's user and system time
    return sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", times_line))
try:
    d = json.load(open(path))
except Exception as e:  # oha failed: keep a row that says so
    d = {"error": str(e)}
s = d.get("summary", {})
codes = d.get("statusCodeDistribution", {}) or {}
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values())
pct = d.get("latencyPercentiles", {}) or {}
secs = s.get("total") or 0
cpu = int(ticks) / int(hz)
print(json.dumps({
    "scenario": scenario, "target": target, "round": int(rnd),
    "requests": total, "ok": ok, "errors": d.get("errorDistribution", {}),
    "seconds": secs, "rps": ok / secs if secs else 0,
    "mb_s": (s.get("sizePerSec") or 0) / 1e6,
    "p50_ms": (pct.get("p50") or 0) * 1e3, "p99_ms": (pct.get("p99") or 0) * 1e3,
    "cpu_s": cpu, "cpu_us_per_req": cpu / ok * 1e6 if ok else None,
    "hwm_kib": int(hwm), "rss_kib": int(rss), "client_cpu_s": round(secs_of(ca) - secs_of(cb), 2),
}))
PY
}

# Scenario → oha arguments for target port $1.
oha_args() {
    local scenario=$1 port=$2 secs=$3
    local tls=(--cacert "$PKI/ca.pem" --cert "$PKI/a81001.pem" --key "$PKI/a81001.key")
    case $scenario in
    A_*) echo -z "${secs}s" -c "$CONNS" "${tls[@]}" "https://127.0.0.1:$port$SMALL" ;;
    AUDIT) echo -z "${secs}s" -c "$AUDIT_CONNS" "${tls[@]}" "https://127.0.0.1:$port$SMALL" ;;
    B) echo -z "${secs}s" -c "$CONNS" -p "$H2_STREAMS" --http2 "${tls[@]}" "https://127.0.0.1:$port$SMALL" ;;
    C) echo -z "${secs}s" -c "$CONNS" --disable-keepalive "${tls[@]}" "https://127.0.0.1:$port$SMALL" ;;
    D) echo -z "${secs}s" -w -c 4 "${tls[@]}" "https://127.0.0.1:$port$LARGE" ;;
    esac
}

start_caregate() { # scenario
    local durability=flush
    [[ $1 == A_fsync ]] && durability=fsync
    local cfg
    cfg=$(caregate_config "$durability")
    start_bg "$OUT/logs/caregate-$1.log" "$CAREGATE" --log-format text run --config "$cfg"
    CG_PID=$BG_PID
    CG_T=$BG_TIMEOUT
    wait_ready "$CG_PORT"
}

start_nginx() {
    start_bg "$OUT/logs/nginx.log" "$NGINX" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf"
    NG_PID=$BG_PID
    NG_T=$BG_TIMEOUT
    wait_ready "$NG_PORT"
}

# What a new connection negotiates with each proxy (key exchange group, resumption offered).
tls_facts() { # port
    local sess="$OUT/logs/sess-$1.pem" first second
    first=$(openssl s_client -connect "127.0.0.1:$1" -CAfile "$PKI/ca.pem" -cert "$PKI/a81001.pem" \
        -key "$PKI/a81001.key" -sess_out "$sess" -brief </dev/null 2>&1 || true)
    second=$(openssl s_client -connect "127.0.0.1:$1" -CAfile "$PKI/ca.pem" -cert "$PKI/a81001.pem" \
        -key "$PKI/a81001.key" -sess_in "$sess" </dev/null 2>&1 || true)
    printf '%s; %s; second connection: %s' \
        "$(grep -m1 'Protocol version' <<<"$first" | sed 's/.*: //')" \
        "$(grep -m1 -i 'temp key' <<<"$first" | sed 's/.*: //')" \
        "$( [[ -s $sess ]] && grep -m1 -E '^(Reused|New),' <<<"$second" | cut -d, -f1 || echo 'New (no session was issued)')"
}

run_load_scenario() {
    local s=$1
    log "scenario $s"
    start_caregate "$s"
    start_nginx
    if [[ $s == C ]]; then
        echo "caregate: $(tls_facts "$CG_PORT")" >"$OUT/results/tls-facts.txt"
        echo "nginx: $(tls_facts "$NG_PORT")" >>"$OUT/results/tls-facts.txt"
    fi
    # Warm-up: upstream pools, allocator, page cache.
    "$OHA" --no-tui $(oha_args "$s" "$CG_PORT" 1) >/dev/null 2>&1 || true
    "$OHA" --no-tui $(oha_args "$s" "$NG_PORT" 1) >/dev/null 2>&1 || true
    for r in $(seq "$ROUNDS"); do
        measure "$s" caregate "$r" "$CG_PID" $(oha_args "$s" "$CG_PORT" "$DURATION")
        measure "$s" nginx "$r" "$NG_PID" $(oha_args "$s" "$NG_PORT" "$DURATION")
    done
    stop_bg "$CG_T"
    stop_bg "$NG_T"
}

# E: idle connections held; RSS before and while they are held.
run_idle() {
    log "scenario E ($IDLE_N idle connections each)"
    start_caregate E
    start_nginx
    for target in caregate nginx; do
        local port=$CG_PORT pid=$CG_PID
        [[ $target == nginx ]] && port=$NG_PORT pid=$NG_PID
        local pids before during t0 t1 ready
        pids=$(proc_tree "$pid")
        curl -sf -o /dev/null --cacert "$PKI/ca.pem" --cert "$PKI/a81001.pem" --key "$PKI/a81001.key" \
            "https://127.0.0.1:$port/bytes/16" || true
        before=$(status_kib VmRSS $pids)
        t0=$(cpu_ticks $pids)
        local holder_log="$OUT/logs/idle-$target.log"
        timeout -s TERM 120 "$BIN/examples/bench_idle" "127.0.0.1:$port" "$IDLE_N" "$IDLE_HOLD" \
            "$PKI/ca.pem" "$PKI/a81001.pem" "$PKI/a81001.key" /bytes/16 >"$holder_log" 2>&1 &
        local holder=$!
        ready=""
        for _ in $(seq 1200); do
            ready=$(grep -m1 '^ready' "$holder_log" || true)
            [[ -n $ready ]] && break
            sleep 0.1
        done
        sleep 1 # let the last connections settle into idle
        during=$(status_kib VmRSS $pids)
        t1=$(cpu_ticks $pids)
        wait "$holder" || true
        "$PY" - "$target" "$IDLE_N" "$before" "$during" "$(status_kib VmHWM $pids)" "$ready" "$(( t1 - t0 ))" \
            "$(getconf CLK_TCK)" >>"$RESULTS" <<'PY'
import json, sys
target, n, before, during, hwm, ready, ticks, hz = sys.argv[1:]
parts = ready.split()
opened = int(parts[1]) if len(parts) > 1 else 0
failed = int(parts[2]) if len(parts) > 2 else int(n)
delta = int(during) - int(before)
print(json.dumps({
    "scenario": "E", "target": target, "round": 1, "idle_requested": int(n),
    "idle_open": opened, "idle_failed": failed, "rss_before_kib": int(before),
    "rss_during_kib": int(during), "hwm_kib": int(hwm),
    "kib_per_conn": delta / opened if opened else None,
    "cpu_s": int(ticks) / int(hz),
    "cpu_us_per_handshake": int(ticks) / int(hz) / opened * 1e6 if opened else None,
}))
PY
    done
    stop_bg "$CG_T"
    stop_bg "$NG_T"
}

# AUDIT: what durable audit costs. caregate with durability = "fsync" against caregate with
# "flush", rounds alternating, scenario A's request at AUDIT_CONNS connections (issue: < 10%).
run_audit_cost() {
    log "scenario AUDIT (caregate fsync against caregate flush, $AUDIT_CONNS connections)"
    start_bg "$OUT/logs/caregate-audit-fsync.log" "$CAREGATE" --log-format text run --config "$(caregate_config fsync)"
    local fs_pid=$BG_PID fs_t=$BG_TIMEOUT
    wait_ready "$CG_PORT"
    start_bg "$OUT/logs/caregate-audit-flush.log" "$CAREGATE" --log-format text run \
        --config "$(caregate_config flush "$NG_PORT")"
    local fl_pid=$BG_PID fl_t=$BG_TIMEOUT
    wait_ready "$NG_PORT"
    "$OHA" --no-tui $(oha_args AUDIT "$CG_PORT" 1) >/dev/null 2>&1 || true
    "$OHA" --no-tui $(oha_args AUDIT "$NG_PORT" 1) >/dev/null 2>&1 || true
    for r in $(seq "$ROUNDS"); do
        measure AUDIT fsync "$r" "$fs_pid" $(oha_args AUDIT "$CG_PORT" "$DURATION")
        measure AUDIT flush "$r" "$fl_pid" $(oha_args AUDIT "$NG_PORT" "$DURATION")
    done
    stop_bg "$fs_t"
    stop_bg "$fl_t"
}

# A profile of caregate under scenario A (flush): where its CPU goes.
run_profile() {
    if [[ -z $PERF ]] && ! (apt-get install -y -qq linux-perf >/dev/null 2>&1 && PERF=$(command -v perf)); then
        log "perf is not available: no profile"
        return 0
    fi
    log "perf profile of caregate under scenario A (flush)"
    start_caregate A_flush
    "$OHA" --no-tui $(oha_args A_flush "$CG_PORT" 1) >/dev/null 2>&1 || true
    "$OHA" --no-tui $(oha_args A_flush "$CG_PORT" "$DURATION") >/dev/null 2>&1 &
    local load=$!
    "$PERF" record -q -e cpu-clock -g -p "$CG_PID" -o "$OUT/perf.data" -- sleep $(( DURATION - 2 )) \
        >"$OUT/logs/perf.log" 2>&1 || true
    wait "$load" || true
    stop_bg "$CG_T"
    local report=("$PERF" report -i "$OUT/perf.data" --stdio -g none)
    tidy() { grep -v -e '^#' -e '^$' | cut -c1-150 | sed 's/ *$//'; }
    "${report[@]}" --no-children --sort comm,dso 2>/dev/null | tidy | head -n 12 >"$OUT/results/perf-dso.txt" || true
    "${report[@]}" --no-children --sort dso,symbol --percent-limit 0.8 2>/dev/null | tidy | head -n 30 \
        >"$OUT/results/perf-self.txt" || true
    "${report[@]}" --children --sort symbol --percent-limit 2 2>/dev/null | tidy | grep -E 'caregate|writev|futex|recv|_write' \
        | head -n 20 >"$OUT/results/perf-children.txt" || true
}

for s in $SCENARIOS; do
    case $s in
    E) run_idle ;;
    AUDIT) run_audit_cost ;;
    *) run_load_scenario "$s" ;;
    esac
done
[[ $PROFILE == 1 ]] && run_profile

# --- the table --------------------------------------------------------------------------------
{
    echo "## Machine"
    echo
    echo "- $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(uname -sr)"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- caregate $("$CAREGATE" --version | awk '{print $2}') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')), $(rustc --version)"
    echo "- $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') ($(openssl version)), $("$OHA" --version)"
    echo "- DURATION=${DURATION}s ROUNDS=$ROUNDS CONNS=$CONNS H2_STREAMS=$H2_STREAMS IDLE_N=$IDLE_N AUDIT_CONNS=$AUDIT_CONNS"
    echo
    if [[ -s $OUT/results/tls-facts.txt ]]; then
        echo "- new connections (openssl s_client, C): $(paste -sd'|' "$OUT/results/tls-facts.txt" | sed 's/|/ — /')"
    fi
    echo
    "$PY" "$HERE/report.py" "$RESULTS"
    if [[ -s $OUT/results/perf-self.txt ]]; then
        echo
        echo "## caregate profile under A (flush), self time"
        echo
        echo '```'
        cat "$OUT/results/perf-dso.txt"
        echo
        cat "$OUT/results/perf-self.txt"
        echo
        echo "inclusive (children), selected:"
        cat "$OUT/results/perf-children.txt"
        echo '```'
    fi
} | tee "$OUT/results/report.md"
log "report: $OUT/results/report.md; raw figures: $RESULTS"
