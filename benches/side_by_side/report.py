#!/usr/bin/env python3
"""The side-by-side table from run.sh's results.jsonl: medians over rounds, the ratio
caregate/nginx, each round's own ratio, and whether the issue's target is met."""

import json
import statistics
import sys

SCENARIOS = {
    "A_flush": ("A: 1 KiB, HTTP/1.1 keep-alive, audit flush", "rps", "req/s", 1.2),
    "A_fsync": ("A: 1 KiB, HTTP/1.1 keep-alive, audit fsync", "rps", "req/s", 1.0),
    "B": ("B: 1 KiB, HTTP/2", "rps", "req/s", 1.2),
    "C": ("C: new mTLS handshake per request", "rps", "req/s", 1.0),
    "D": ("D: 64 MiB downloads, 4 connections", "mb_s", "MB/s", 1.4),
}


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["scenario"], r["target"]), []).append(r)

    print("| scenario | caregate | nginx | caregate/nginx (rounds) | target | p99 ms cg / ng | "
          "CPU µs/req cg / ng (ratio) | caregate peak RSS | oha cores cg / ng |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, (title, metric, unit, target) in SCENARIOS.items():
        cg, ng = by.get((key, "caregate"), []), by.get((key, "nginx"), [])
        if not cg and not ng:
            continue
        c, n = med(cg, metric), med(ng, metric)
        per_round = []
        for a in cg:
            b = next((x for x in ng if x["round"] == a["round"]), None)
            if b:
                per_round.append(fmt(ratio(a[metric], b[metric]), 2))
        r = ratio(c, n)
        met = "" if r is None else (" ✔" if r >= target else " ✘")
        cpu_c, cpu_n = med(cg, "cpu_us_per_req"), med(ng, "cpu_us_per_req")
        errors = sum(x["requests"] - x["ok"] for x in cg + ng)
        note = f" ({errors} non-2xx/failed)" if errors else ""
        hwm = max((x["hwm_kib"] for x in cg), default=None)
        cores = [med([{"c": x.get("client_cpu_s", 0) / x["seconds"]} for x in rs if x["seconds"]], "c") for rs in (cg, ng)]
        print(f"| {title}{note} | {fmt(c)} {unit} | {fmt(n)} {unit} | **{fmt(r, 2)}×**{met} "
              f"({', '.join(per_round)}) | ≥ {target}× | {fmt(med(cg, 'p99_ms'), 2)} / {fmt(med(ng, 'p99_ms'), 2)} "
              f"| {fmt(cpu_c, 1)} / {fmt(cpu_n, 1)} ({fmt(ratio(cpu_c, cpu_n), 2)}×) "
              f"| {fmt(hwm / 1024 if hwm else None, 1)} MiB | {fmt(cores[0], 2)} / {fmt(cores[1], 2)} |")

    fsync, flush = by.get(("AUDIT", "fsync"), []), by.get(("AUDIT", "flush"), [])
    if fsync and flush:
        a, b = med(fsync, "rps"), med(flush, "rps")
        per_round = [fmt(ratio(x["rps"], y["rps"]), 2) for x in fsync for y in flush if x["round"] == y["round"]]
        r = ratio(a, b)
        met = "" if r is None else (" ✔" if r >= 0.9 else " ✘")
        print()
        print("| AUDIT: caregate, durability fsync against flush | fsync | flush | fsync/flush (rounds) | target "
              "| p99 ms fsync / flush | CPU µs/req fsync / flush |")
        print("|---|---|---|---|---|---|---|")
        print(f"| scenario A's request, same run | {fmt(a)} req/s | {fmt(b)} req/s "
              f"| **{fmt(r, 2)}×**{met} ({', '.join(per_round)}) | ≥ 0.9× (under 10% cost) "
              f"| {fmt(med(fsync, 'p99_ms'), 2)} / {fmt(med(flush, 'p99_ms'), 2)} "
              f"| {fmt(med(fsync, 'cpu_us_per_req'), 1)} / {fmt(med(flush, 'cpu_us_per_req'), 1)} |")

    idle = {r["target"]: r for r in rows if r["scenario"] == "E"}
    if idle:
        print()
        print("| E: idle mTLS connections | open (failed) | RSS before | RSS while held | per connection | "
              "peak RSS | CPU µs per connection opened |")
        print("|---|---|---|---|---|---|---|")
        for t in ("caregate", "nginx"):
            r = idle.get(t)
            if not r:
                continue
            per = r["kib_per_conn"]
            met = "" if t != "caregate" or per is None else (" ✔" if per < 40 else " ✘")
            print(f"| {t} | {r['idle_open']} ({r['idle_failed']}) | {fmt(r['rss_before_kib'] / 1024, 1)} MiB "
                  f"| {fmt(r['rss_during_kib'] / 1024, 1)} MiB | **{fmt(per, 1)} KiB**{met} "
                  f"| {fmt(r['hwm_kib'] / 1024, 1)} MiB | {fmt(r['cpu_us_per_handshake'], 0)} |")


if __name__ == "__main__":
    main(sys.argv[1])
