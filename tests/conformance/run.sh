#!/usr/bin/env bash
# External conformance checks (issue 19): sslyze and HTTP/2 abuse probes against the gateway
# binary, run on loopback with a fresh dev PKI. See conformance.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! python3 -c 'import sslyze, h2, hpack, hyperframe' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check sslyze h2
fi

cargo build --quiet --bin caregate
bin="${CARGO_TARGET_DIR:-target}/debug/caregate"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" pki dev --out "$work/pki" >/dev/null
rc=0
timeout 600 python3 tests/conformance/conformance.py "$bin" "$work" || rc=$?
if [ "$rc" -ne 0 ] && [ -f "$work/gateway.log" ]; then
    echo "-- the gateway's log (last 40 lines):"
    tail -n 40 "$work/gateway.log"
fi
exit "$rc"
