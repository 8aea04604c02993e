#!/usr/bin/env python3
"""Turn a compare.sh run directory into the markdown tables of docs/benchmarks.md.

Usage: table.py OUT_DIR [COMMAND_LINE]

Reads OUT_DIR/<server>/<workload>.json (millrace-bench --json reports), ready_ms.txt,
install-<server>.txt and the soak files, and prints:
  1. the side-by-side table, one column per server and a ratio column (Millrace / peer)
     after each peer; "n/a" where the server lacks the operation, "failed" where the run
     failed, "not installed" where the peer could not be installed;
  2. Millrace against the BRIEF.md targets;
  3. the errors each run counted, and why runs failed.
"""
import json
import os
import statistics
import sys

SERVERS = ["millrace", "kinesalite", "kinesis-mock", "ferrokinesis"]
TITLES = {
    "millrace": "Millrace",
    "kinesalite": "kinesalite 3.3.3",
    "kinesis-mock": "kinesis-mock (kinesis-local 0.6.2)",
    "ferrokinesis": "ferrokinesis 0.7.0",
}


def load(out, server, workload):
    path = os.path.join(out, server, f"{workload}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def install_note(out, server):
    try:
        with open(os.path.join(out, f"install-{server}.txt")) as f:
            return f.read().strip()
    except OSError:
        return "installed"


def ready_ms(out, server):
    try:
        with open(os.path.join(out, server, "ready_ms.txt")) as f:
            values = [float(line) for line in f if line.strip()]
        return statistics.median(values) if values else None
    except (OSError, ValueError):
        return None


def measurement(report, name):
    for m in report.get("measurements", []):
        if m["name"] == name:
            return m
    return None


def cell(out, server, workload, name, field):
    """(number or None, text when not a number)."""
    if install_note(out, server) != "installed":
        return None, "not installed"
    report = load(out, server, workload)
    if report is None:
        return None, "—"
    if report.get("unsupported"):
        return None, "n/a"
    m = measurement(report, name)
    if m is None:
        return None, "failed" if report.get("failure") else "—"
    if field == "rss":
        value = report.get("server_rss_peak_mib")
    elif field == "per_cpu_s":
        per_record = m.get("server_cpu_us_per_record")
        value = 1e6 / per_record if per_record else None
        if value is None:
            return None, "—"
    elif "." in field:
        outer, inner = field.split(".")
        value = m[outer][inner]
    else:
        value = m[field]
    if m.get("calls", 0) == 0 and m.get("records", 0) == 0:
        return None, "failed" if report.get("failure") else "no data"
    if field.startswith("latency.") and m["latency"]["count"] == 0:
        return None, "no data"
    return value, None


def fmt(value, unit):
    if value is None:
        return "—"
    if unit in ("records/s", "calls/s"):
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rows(out, servers):
    """(label, unit, workload, measurement, field) for every row of the main table."""
    result = [
        ("PutRecords 500 × 1 KiB, 16 connections", "records/s", "put-records", "PutRecords", "records_per_s"),
        ("… latency p50", "ms", "put-records", "PutRecords", "latency.p50_ms"),
        ("… latency p99", "ms", "put-records", "PutRecords", "latency.p99_ms"),
        ("… records per server CPU-second", "records/s", "put-records", "PutRecords", "per_cpu_s"),
        ("… server peak RSS", "MiB", "put-records", "PutRecords", "rss"),
        ("PutRecord 100 B, 16 connections, closed loop", "calls/s", "put-record", "PutRecord", "calls_per_s"),
        ("… latency p50", "ms", "put-record", "PutRecord", "latency.p50_ms"),
        ("… latency p99", "ms", "put-record", "PutRecord", "latency.p99_ms"),
        ("… calls per server CPU-second", "calls/s", "put-record", "PutRecord", "per_cpu_s"),
        ("PutRecord 100 B, 128 connections, closed loop", "calls/s", "put-record-wide", "PutRecord", "calls_per_s"),
        ("… latency p50", "ms", "put-record-wide", "PutRecord", "latency.p50_ms"),
        ("… latency p99", "ms", "put-record-wide", "PutRecord", "latency.p99_ms"),
        ("… calls per server CPU-second", "calls/s", "put-record-wide", "PutRecord", "per_cpu_s"),
        ("GetRecords backlog drain (Limit 10,000, 1 KiB)", "records/s", "get-drain", "GetRecords drain", "records_per_s"),
        ("… records per server CPU-second", "records/s", "get-drain", "GetRecords drain", "per_cpu_s"),
        ("put → GetRecords at 1,000/s, p50", "ms", "e2e-poll", "put to GetRecords", "latency.p50_ms"),
        ("… p99", "ms", "e2e-poll", "put to GetRecords", "latency.p99_ms"),
        ("… p99.9", "ms", "e2e-poll", "put to GetRecords", "latency.p999_ms"),
        ("put → SubscribeToShard at 1,000/s, p50", "ms", "e2e-subscribe", "put to SubscribeToShard event", "latency.p50_ms"),
        ("… p99", "ms", "e2e-subscribe", "put to SubscribeToShard event", "latency.p99_ms"),
        ("… p99.9", "ms", "e2e-subscribe", "put to SubscribeToShard event", "latency.p999_ms"),
    ]
    # many-shards rows follow the steps the run used (read from any report that has them).
    names = []
    for server in servers:
        report = load(out, server, "many-shards")
        if report and report.get("measurements"):
            names = [m["name"] for m in report["measurements"]]
            break
    for name in names:
        result.append((f"{name}, calls/s", "calls/s", "many-shards", name, "calls_per_s"))
        result.append((f"{name}, p50", "ms", "many-shards", name, "latency.p50_ms"))
    return result


def main_table(out, servers):
    peers = [s for s in servers if s != "millrace"]
    header = ["figure", "unit", TITLES["millrace"]]
    for peer in peers:
        header += [TITLES[peer], "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ready_row = ["start to first answer (median of runs)", "ms"]
    mine = ready_ms(out, "millrace")
    ready_row.append(fmt(mine, "ms"))
    for peer in peers:
        theirs = ready_ms(out, peer) if install_note(out, peer) == "installed" else None
        ready_row.append(fmt(theirs, "ms") if install_note(out, peer) == "installed" else "not installed")
        ready_row.append(ratio(mine, theirs))
    lines.append("| " + " | ".join(ready_row) + " |")
    for label, unit, workload, name, field in rows(out, servers):
        mine, mine_text = cell(out, "millrace", workload, name, field)
        row = [label, unit, mine_text or fmt(mine, unit)]
        for peer in peers:
            theirs, text = cell(out, peer, workload, name, field)
            row += [text or fmt(theirs, unit), ratio(mine, theirs)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ratio(mine, theirs):
    if mine is None or theirs is None or theirs == 0:
        return ""
    return f"{mine / theirs:,.2f}×" if mine / theirs < 10 else f"{mine / theirs:,.0f}×"


def read_text(out, *path):
    try:
        with open(os.path.join(out, *path)) as f:
            return f.read().strip()
    except OSError:
        return None


def targets_table(out):
    def value(workload, name, field):
        return cell(out, "millrace", workload, name, field)[0]

    lines = ["| BRIEF.md target | Millrace | met? |", "|---|---|---|"]

    def add(target, shown, met):
        verdict = "—" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {target} | {shown} | {verdict} |")

    v = value("put-records", "PutRecords", "records_per_s")
    add("PutRecords 500 × 1 KiB after fsync ≥ 250k records/s", fmt(v, "records/s") + " records/s", None if v is None else v >= 250_000)
    for workload, connections in (("put-record", 16), ("put-record-wide", 128)):
        calls = value(workload, "PutRecord", "calls_per_s")
        p50 = value(workload, "PutRecord", "latency.p50_ms")
        add(f"PutRecord ≥ 50k calls/s, p50 < 1 ms ({connections} connections)",
            f"{fmt(calls, 'calls/s')} calls/s, p50 {fmt(p50, 'ms')} ms",
            None if calls is None or p50 is None else calls >= 50_000 and p50 < 1)
    v = value("get-drain", "GetRecords drain", "records_per_s")
    add("GetRecords backlog drain ≥ 500k records/s", fmt(v, "records/s") + " records/s", None if v is None else v >= 500_000)
    p50 = value("e2e-poll", "put to GetRecords", "latency.p50_ms")
    p99 = value("e2e-poll", "put to GetRecords", "latency.p99_ms")
    add("put → get, polling, 1,000/s: p50 < 2 ms, p99 < 10 ms", f"p50 {fmt(p50, 'ms')} ms, p99 {fmt(p99, 'ms')} ms",
        None if p50 is None or p99 is None else p50 < 2 and p99 < 10)
    p99 = value("e2e-subscribe", "put to SubscribeToShard event", "latency.p99_ms")
    add("SubscribeToShard push p99 < 5 ms", f"p99 {fmt(p99, 'ms')} ms", None if p99 is None else p99 < 5)
    soak = None
    try:
        with open(os.path.join(out, "millrace", "soak.json")) as f:
            soak = json.load(f)
    except (OSError, ValueError):
        pass
    if soak and soak.get("server_rss_peak_mib") is not None:
        m = soak["measurements"][0] if soak.get("measurements") else {}
        through_gib = m.get("records", 0) * 1024 / 2**30
        rss = soak["server_rss_peak_mib"]
        series = soak.get("server_rss_mib_over_time") or []
        shape = ""
        if len(series) >= 4:
            quarters = [series[len(series) * q // 4 - 1] for q in (1, 2, 3, 4)]
            shape = "; RSS at each quarter of the run: " + ", ".join(f"{mib:,.0f}" for _, mib in quarters) + " MiB"
        add("memory while 10 GiB stream through: flat, < 256 MiB",
            f"peak {rss:,.0f} MiB over {through_gib:.1f} GiB{shape}", rss < 256)
    else:
        add("memory while 10 GiB stream through: flat, < 256 MiB", "not run (--soak-gib)", None)
    ready = ready_ms(out, "millrace")
    add("start to healthy, empty < 100 ms", f"{fmt(ready, 'ms')} ms (to first ListStreams answer)",
        None if ready is None else ready < 100)
    recovery = read_text(out, "millrace", "recovery_ms.txt")
    data_bytes = read_text(out, "millrace", "soak_data_bytes.txt")
    if recovery and recovery != "failed" and data_bytes:
        add("recovery of 10 GiB < 2 s",
            f"{float(recovery) / 1000:.2f} s for {int(data_bytes) / 2**30:.1f} GiB on disk "
            "(kill -9, restart, first ListStreams answer)",
            float(recovery) < 2000)
    else:
        add("recovery of 10 GiB < 2 s", "not run (--soak-gib)" if not recovery else "failed", None if not recovery else False)
    report = load(out, "millrace", "many-shards")
    if report and report.get("measurements"):
        ms = report["measurements"]
        base = {m["name"].split(",")[0]: m for m in ms if m["name"].endswith(", 1 shard")}
        largest = [m for m in ms if not m["name"].endswith(", 1 shard")]
        parts, met = [], True
        for op in ("PutRecord", "GetRecords"):
            b = base.get(op)
            top = [m for m in largest if m["name"].startswith(op + ",")]
            if b and top and b["calls_per_s"] > 0:
                t = top[-1]
                r = t["calls_per_s"] / b["calls_per_s"]
                parts.append(f"{op}: {t['calls_per_s']:,.0f} calls/s at {t['name'].split(', ')[1]} vs "
                             f"{b['calls_per_s']:,.0f} at 1 shard ({r:.2f}×)")
                met = met and r >= 0.8
        add("10,000 open shards without a change in per-request cost (met: ≥ 0.8× the 1-shard rate)",
            "; ".join(parts) or "failed", met if parts else None)
    else:
        add("10,000 open shards without a change in per-request cost", "not run", None)
    return "\n".join(lines)


def problems(out, servers):
    lines = []
    for server in servers:
        note = install_note(out, server)
        if note != "installed":
            lines.append(f"- {TITLES[server]}: {note}")
            continue
        for workload in ["put-records", "put-record", "put-record-wide", "get-drain", "e2e-poll", "e2e-subscribe", "many-shards"]:
            report = load(out, server, workload)
            if report is None:
                continue
            if report.get("unsupported"):
                lines.append(f"- {TITLES[server]}, {workload}: not supported ({report['unsupported']})")
            if report.get("failure"):
                lines.append(f"- {TITLES[server]}, {workload}: failed: {report['failure']}")
            for m in report.get("measurements", []):
                errors = dict(m.get("errors", {}))
                if m.get("failed_records"):
                    errors["failed records"] = m["failed_records"]
                if errors:
                    lines.append(f"- {TITLES[server]}, {m['name']}: errors {errors}")
            for n in report.get("notes", []):
                if any(k in n for k in ("fewer", "smaller", "sustained", "consumer", "cleanup")):
                    lines.append(f"- {TITLES[server]}, {workload}: {n}")
    return "\n".join(lines) if lines else "- none"


def main():
    out = sys.argv[1]
    command = sys.argv[2] if len(sys.argv) > 2 else "scripts/compare.sh"
    servers = [s for s in SERVERS if os.path.isdir(os.path.join(out, s))]
    if "millrace" not in servers:
        servers.insert(0, "millrace")
    print(f"Produced by `{command}` (reports in `{out}`). Ratio = Millrace / peer: above 1 is "
          "better for rates, below 1 is better for latencies and memory.")
    loads = []
    try:
        with open(os.path.join(out, "loadavg.txt")) as f:
            loads = [float(line.split()[2]) for line in f if len(line.split()) >= 3]
    except (OSError, ValueError):
        pass
    if loads:
        print(f"1-minute load average when each workload started: min {min(loads):.1f}, "
              f"median {statistics.median(loads):.1f}, max {max(loads):.1f} (on {os.cpu_count()} cores; "
              "the load tool itself adds about 1).")
    print()
    print(main_table(out, servers))
    print("\n" + targets_table(out))
    print("\nErrors, failures and short runs:\n")
    print(problems(out, servers))


if __name__ == "__main__":
    main()
