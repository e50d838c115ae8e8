#!/usr/bin/env python3
"""External conformance checks of a running caregate (issue 19), called by run.sh.

Starts the gateway (the binary given) on loopback with a dev PKI and a tiny upstream, waits for
the admin /readyz, then:

- sslyze: without a client certificate the server must report client authentication REQUIRED;
  with one, the server must pass Mozilla's "intermediate" configuration;
- HTTP/2 abuse probes over TLS with the client certificate (ALPN h2), each while a
  well-behaved client (a plain GET over a new connection) must be served, and after which the
  gateway must still be up and serving.

Every wait is bounded; nothing sleeps to synchronise except bounded polling. Prints one line per
check and a closing "N passed, N failed" line; exits 1 on a failure.

Usage: conformance.py CAREGATE_BINARY WORKDIR
"""

import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import h2.connection  # noqa: F401  (pip h2: brings hyperframe and hpack)
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

TIMEOUT = 10.0  # seconds, for any one connection's wait
GOOD_PATH = "/fhir/metadata"

# Known open defects: probe name -> why. A probe listed here that fails is reported as an
# expected failure (XFAIL), not a CI failure; one that passes is reported as XPASS (remove it).
KNOWN_DEFECTS = {}

ERRORS = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
    8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the upstream: answers every request with a small FHIR-ish JSON, and remembers paths -----

SEEN = []  # (method, path, body length) the upstream received in full


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        SEEN.append((self.command, self.path, len(body)))
        out = json.dumps({"resourceType": "CapabilityStatement", "status": "active"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/fhir+json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


# --- the gateway ----------------------------------------------------------------------------

CONFIG = """
[listener]
bind = "127.0.0.1:{port}"
server_cert = "{pki}/server.pem"
server_key = "{pki}/server.key"
client_ca = ["{pki}/ca.pem"]
crl = ["{pki}/ca.crl"]
handshake_timeout = "10s"
header_timeout = "10s"
idle_timeout = "30s"
max_header_bytes = "64KiB"
drain_timeout = "2s"

[admin]
bind = "127.0.0.1:{admin}"

[identity]
org_from = ["san_uri:urn:nhs:ods:", "subject:OU", "endpoint"]

[[organisation]]
code = "A81001"
name = "Example Surgery"
groups = ["gp"]

[[upstream]]
name = "epr"
urls = ["http://127.0.0.1:{upstream}"]
connect_timeout = "2s"
response_timeout = "10s"

[[route]]
name = "epr-fhir"
path_prefix = "/fhir/"
upstream = "epr"
class = "epr"
  [[route.allow]]
  groups = ["gp"]
  methods = ["GET", "POST"]

[rate_limit.epr]
requests_per_second = 100000
burst = 100000

[audit]
dir = "{work}/audit"
durability = "flush"
signing_key = "{pki}/audit-signing.key"
"""


class Gateway:
    def __init__(self, binary, work):
        self.work = work
        self.pki = os.path.join(work, "pki")
        self.port, self.admin, self.upstream_port = free_port(), free_port(), free_port()
        self.upstream = http.server.ThreadingHTTPServer(("127.0.0.1", self.upstream_port), Upstream)
        self.upstream.daemon_threads = True
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        config = os.path.join(work, "caregate.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(port=self.port, admin=self.admin, upstream=self.upstream_port,
                                  pki=self.pki, work=work))
        self.log = open(os.path.join(work, "gateway.log"), "wb")
        self.proc = subprocess.Popen([binary, "run", "--config", config], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the gateway did not become ready (see {self.log.name}):\n"
                         + open(self.log.name, errors="replace").read()[-3000:])
            time.sleep(0.1)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def alive(self):
        return self.proc.poll() is None and self.ready()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.upstream.shutdown()
        self.log.close()


# --- a raw HTTP/2 client: frames as written, so that it can misbehave ------------------------

class H2:
    def __init__(self, gw, cert=True):
        ctx = ssl.create_default_context(cafile=os.path.join(gw.pki, "ca.pem"))
        if cert:
            ctx.load_cert_chain(os.path.join(gw.pki, "a81001.pem"), os.path.join(gw.pki, "a81001.key"))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.buf = b""
        self.closed = False
        self.goaway = None  # error code name
        self.resets = {}  # stream id -> error code name
        self.status = {}  # stream id -> :status
        self.ended = set()  # streams the server ended
        self.pongs = self.settings_acks = 0
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
                  + WindowUpdateFrame(0, window_increment=1 << 24).serialize())

    def send(self, data):
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError):
            self.closed = True
            return False

    def headers(self, sid, method="GET", path=GOOD_PATH, extra=(), end_stream=True, end_headers=True):
        block = self.enc.encode([(":method", method), (":scheme", "https"), (":authority", "localhost"),
                                 (":path", path)] + list(extra))
        f = HeadersFrame(sid, block)
        for flag, on in (("END_STREAM", end_stream), ("END_HEADERS", end_headers)):
            if on:
                f.flags.add(flag)
        return f.serialize()

    def read(self, until=lambda c: False, timeout=TIMEOUT, quiet=None):
        """Reads frames until `until(self)`, the connection closes, `timeout` passes, or (with
        `quiet`) nothing arrives for that long."""
        deadline = time.monotonic() + timeout
        while not self.closed and not until(self):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(min(left, quiet) if quiet else left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if quiet:
                    return
                continue
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return
            self.buf += data
            self._frames()

    def _frames(self):
        while len(self.buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            f.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                self.send(SettingsFrame(0, flags=["ACK"]).serialize())
            elif isinstance(f, SettingsFrame):
                self.settings_acks += 1
            elif isinstance(f, PingFrame) and "ACK" in f.flags:
                self.pongs += 1
            elif isinstance(f, GoAwayFrame):
                self.goaway = ERRORS.get(f.error_code, f.error_code)
            elif isinstance(f, RstStreamFrame):
                self.resets[f.stream_id] = ERRORS.get(f.error_code, f.error_code)
            elif isinstance(f, HeadersFrame):
                for k, v in self.dec.decode(f.data):
                    if k in (":status", b":status"):
                        self.status[f.stream_id] = int(v)
            elif isinstance(f, DataFrame) and f.data:
                self.send(WindowUpdateFrame(f.stream_id, window_increment=len(f.data)).serialize())
            if "END_STREAM" in getattr(f, "flags", ()):
                self.ended.add(f.stream_id)

    def outcome(self, sid=None):
        parts = []
        if sid is not None:
            if sid in self.status:
                parts.append(f"status {self.status[sid]}")
            if sid in self.resets:
                parts.append(f"RST_STREAM {self.resets[sid]}")
        if self.goaway:
            parts.append(f"GOAWAY {self.goaway}")
        if self.closed:
            parts.append("connection closed")
        return ", ".join(parts) or ("no answer" if sid is not None else "connection kept open")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def good_get(gw):
    """A well-behaved request on a new connection: its status, or what went wrong."""
    try:
        c = H2(gw)
        c.send(c.headers(1))
        c.read(until=lambda c: 1 in c.ended or 1 in c.resets)
        c.close()
        return c.status.get(1), c.outcome(1)
    except (OSError, ssl.SSLError, AssertionError) as e:
        return None, f"{type(e).__name__}: {e}"


# --- the probes: each returns (ok, what the gateway did) -------------------------------------

def probe_rapid_reset(gw, c):
    sent = 0
    for batch in range(20):
        out = b""
        for i in range(50):
            sid = 1 + 2 * (batch * 50 + i)
            out += c.headers(sid) + RstStreamFrame(sid, error_code=8).serialize()
        if not c.send(out):
            break
        sent += 50
        c.read(quiet=0.01, timeout=0.05)
        if c.goaway or c.closed:
            break
    c.read(quiet=1.0, timeout=TIMEOUT)
    answered = sum(1 for s in c.status)
    return True, f"{sent} streams opened and reset; {answered} answered; {c.outcome()}"


def probe_continuation_flood(gw, c):
    c.send(c.headers(1, end_headers=False))
    sent = 0
    # A literal header of its own encoder: every frame the same 200-odd bytes.
    fragment = hpack.Encoder().encode([("x-flood", "a" * 200)])
    for _ in range(200):
        out = b"".join(ContinuationFrame(1, fragment).serialize() for _ in range(50))
        if not c.send(out):
            break
        sent += 50
        c.read(quiet=0.005, timeout=0.02)
        if c.goaway or c.closed:
            break
    c.read(until=lambda c: c.goaway or 1 in c.status or 1 in c.resets, timeout=TIMEOUT)
    ok = bool(c.goaway or c.closed or 1 in c.resets or c.status.get(1, 0) in (400, 431))
    return ok, (f"{sent} CONTINUATION frames ({sent * len(fragment) // 1024} KiB of headers) "
                f"without END_HEADERS; {c.outcome(1)}")


def probe_empty_data_flood(gw, c):
    c.send(c.headers(1, method="POST", path="/fhir/Observation", end_stream=False,
                     extra=[("content-type", "application/fhir+json")]))
    sent = 0
    for _ in range(100):
        if not c.send(DataFrame(1, b"").serialize() * 200):
            break
        sent += 200
        c.read(quiet=0.005, timeout=0.02)
        if c.goaway or c.closed or 1 in c.resets:
            break
    if not (c.goaway or c.closed or 1 in c.resets):
        end = DataFrame(1, b'{"resourceType":"Observation"}')
        end.flags.add("END_STREAM")
        c.send(end.serialize())
    c.read(until=lambda c: c.goaway or 1 in c.ended or 1 in c.resets, timeout=TIMEOUT)
    return True, f"{sent} empty DATA frames; {c.outcome(1)}"


def probe_transfer_encoding(gw, c):
    path = "/fhir/Observation?probe=te"
    c.send(c.headers(1, method="POST", path=path, end_stream=False,
                     extra=[("content-type", "application/fhir+json"), ("transfer-encoding", "chunked")]))
    end = DataFrame(1, b"5\r\nhello\r\n0\r\n\r\n")
    end.flags.add("END_STREAM")
    c.send(end.serialize())
    c.read(until=lambda c: c.goaway or 1 in c.ended or 1 in c.resets)
    forwarded = any(p == path for _, p, _ in SEEN)
    ok = not forwarded and (c.status.get(1) == 400 or (1 not in c.status and (1 in c.resets or c.goaway)))
    return ok, f"{c.outcome(1)}; forwarded upstream: {forwarded}"


def content_length_probe(c, declared, body, tag):
    path = f"/fhir/Observation?probe={tag}"
    c.send(c.headers(1, method="POST", path=path, end_stream=False,
                     extra=[("content-type", "application/fhir+json"), ("content-length", str(declared))]))
    end = DataFrame(1, body)
    end.flags.add("END_STREAM")
    c.send(end.serialize())
    c.read(until=lambda c: c.goaway or 1 in c.ended or 1 in c.resets)
    whole = [n for _, p, n in SEEN if p == path]
    st = c.status.get(1)
    # Refused: a 400, or the stream reset (RFC 9113 §8.1.1: malformed, a stream error) before any
    # response; never a 2xx, and the upstream never receives a whole request of another length.
    ok = (st == 400 or (st is None and (1 in c.resets or c.goaway))) and all(n == declared for n in whole)
    return ok, f"content-length {declared}, {len(body)} bytes sent: {c.outcome(1)}; upstream got {whole or 'nothing'}"


def probe_body_longer(gw, c):
    return content_length_probe(c, 10, b'{"a":"' + b"x" * 20 + b'"}', "longer")


def probe_body_shorter(gw, c):
    return content_length_probe(c, 40, b'{"a":"b"}', "shorter")


def probe_settings_flood(gw, c):
    sent = 0
    for _ in range(50):
        if not c.send(SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize() * 200):
            break
        sent += 200
        if c.goaway or c.closed:
            break
    c.read(quiet=1.0)
    return True, f"{sent} SETTINGS frames sent without reading the ACKs; {c.settings_acks} ACKs read; {c.outcome()}"


def probe_ping_flood(gw, c):
    sent = 0
    for _ in range(50):
        if not c.send(PingFrame(0, opaque_data=b"12345678").serialize() * 400):
            break
        sent += 400
        if c.goaway or c.closed:
            break
    c.read(quiet=1.0)
    return True, f"{sent} PINGs sent without reading the PONGs; {c.pongs} PONGs read; {c.outcome()}"


PROBES = [
    ("rapid_reset", probe_rapid_reset),
    ("continuation_flood", probe_continuation_flood),
    ("empty_data_flood", probe_empty_data_flood),
    ("transfer_encoding", probe_transfer_encoding),
    ("body_longer_than_content_length", probe_body_longer),
    ("body_shorter_than_content_length", probe_body_shorter),
    ("settings_flood", probe_settings_flood),
    ("ping_flood", probe_ping_flood),
]


def run_probe(gw, name, probe):
    """The probe on its own connection, a good GET while it runs, and one after."""
    result, started = {}, threading.Event()

    def attack():
        try:
            c = H2(gw)
            started.set()
            result["ok"], result["what"] = probe(gw, c)
            c.close()
        except Exception as e:  # a probe that cannot run is a failure, with its reason
            result["ok"], result["what"] = False, f"probe error: {type(e).__name__}: {e}"
        finally:
            started.set()

    t = threading.Thread(target=attack, daemon=True)
    t.start()
    started.wait(TIMEOUT)
    during = good_get(gw)
    t.join(60)
    if t.is_alive():
        result["ok"], result["what"] = False, "the probe did not finish within 60 s"
    after = good_get(gw)
    alive = gw.alive()
    problems = []
    if not result.get("ok"):
        problems.append("refusal not as expected")
    if during[0] != 200:
        problems.append(f"good GET during the probe: {during[1]}")
    if after[0] != 200:
        problems.append(f"good GET after the probe: {after[1]}")
    if not alive:
        problems.append("the gateway is down")
    return problems, f"{result.get('what')}; good GET during: {during[1]}, after: {after[1]}"


# --- sslyze ---------------------------------------------------------------------------------

def sslyze(gw, with_cert):
    out = os.path.join(gw.work, f"sslyze-{'cert' if with_cert else 'nocert'}.json")
    cmd = [sys.executable, "-m", "sslyze", "--json_out", out, "--quiet"]
    if with_cert:
        cmd += ["--cert", os.path.join(gw.pki, "a81001.pem"), "--key", os.path.join(gw.pki, "a81001.key"),
                # The dev CA is no public root: sslyze validates the server's chain against it.
                "--certinfo_ca_file", os.path.join(gw.pki, "ca.pem"), "--mozilla_config=intermediate"]
    else:
        cmd += ["--certinfo", "--mozilla_config=disable"]
    cmd.append(f"127.0.0.1:{gw.port}")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    try:
        with open(out) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None, p
    return report, p


def check_sslyze(gw):
    results = []
    report, p = sslyze(gw, with_cert=False)
    auth = None
    if report:
        for sr in report.get("server_scan_results", []):
            auth = ((sr.get("connectivity_result") or {}).get("client_auth_requirement"))
    results.append(("sslyze: client authentication REQUIRED without a certificate",
                    [] if auth == "REQUIRED" else [f"reported {auth!r}: {p.stdout[-500:]}{p.stderr[-500:]}"],
                    f"client_auth_requirement = {auth}"))

    report, p = sslyze(gw, with_cert=True)
    problems, what = [], ""
    if report is None:
        problems.append(f"no report: {p.stdout[-800:]}{p.stderr[-800:]}")
    else:
        sr = report["server_scan_results"][0]
        if sr.get("scan_status") != "COMPLETED":
            problems.append(f"scan {sr.get('scan_status')}: {sr.get('connectivity_error_trace')}")
        # sslyze exits 1 and prints the violations when the server is not compliant.
        lines = [l.strip() for l in p.stdout.splitlines() if l.strip()]
        if p.returncode != 0:
            problems.append("not compliant with Mozilla intermediate: " + " | ".join(lines[-12:]))
        scans = sr.get("scan_result") or {}
        versions = [v.replace("_cipher_suites", "").upper() for v, r in scans.items()
                    if v.endswith("_cipher_suites") and (r.get("result") or {}).get("accepted_cipher_suites")]
        what = f"sslyze exit {p.returncode}; protocols accepted: {', '.join(sorted(versions))}"
    results.append(("sslyze: Mozilla intermediate with the client certificate", problems, what))
    return results


def main():
    binary, work = sys.argv[1], sys.argv[2]
    gw = Gateway(binary, work)
    passed = failed = 0
    try:
        checks = check_sslyze(gw)
        for name, probe in PROBES:
            problems, what = run_probe(gw, name, probe)
            checks.append((f"h2 {name}", problems, what))
        for name, problems, what in checks:
            key = name.removeprefix("h2 ")
            if problems and key in KNOWN_DEFECTS:
                print(f"XFAIL {name}: {what}\n      known open defect: {KNOWN_DEFECTS[key]}; {'; '.join(problems)}")
                passed += 1
            elif problems:
                print(f"FAIL  {name}: {what}\n      {'; '.join(problems)}")
                failed += 1
            else:
                tag = "XPASS" if key in KNOWN_DEFECTS else "ok   "
                print(f"{tag} {name}: {what}")
                passed += 1
    finally:
        gw.stop()
    print(f"conformance: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
