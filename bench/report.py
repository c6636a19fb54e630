"""bench/RESULTS.md from one run's figures (tables, targets, and "How it scales")."""

from __future__ import annotations

from .common import MB, machine, versions

TARGETS = [
    # (label, how to get the figure, comparison, target, unit)
    ("produce, confluent 1 KiB acks=all 1 partition", "produce", ">=", 150, "MB/s"),
    ("consume, confluent 1 KiB acks=all 1 partition", "consume", ">=", 300, "MB/s"),
    ("end-to-end p99 at 1,000 msg/s", "p99", "<=", 5, "ms"),
    ("start-up", "startup", "<=", 0.5, "s"),
    ("idle RSS", "rss", "<=", 60, "MB"),
]


def _row(data: dict, client: str, size: int, acks: str, partitions: int) -> dict | None:
    for r in data.get("throughput", []):
        if (r["client"], r["size"], r["acks"], r["partitions"]) == (client, size, acks, partitions):
            return r
    return None


def target_figures(data: dict) -> list[tuple[str, str, float | None, str, float, str]]:
    out = []
    ref = _row(data, "confluent", 1024, "all", 1)
    for label, key, cmp, target, unit in TARGETS:
        value = None
        if key == "produce" and ref:
            value = ref["produce_bps"] / MB
        elif key == "consume" and ref and "consume_bps" in ref:
            value = ref["consume_bps"] / MB
        elif key == "p99" and data.get("latency"):
            value = data["latency"]["p99"]
        elif key == "startup" and data.get("startup"):
            value = data["startup"]["ready_s"]
        elif key == "rss" and data.get("startup"):
            value = data["startup"]["rss_idle"] / MB
        met = (
            "?"
            if value is None
            else ("met" if (value >= target if cmp == ">=" else value <= target) else "short")
        )
        out.append((label, cmp, value, unit, target, met))
    return out


def targets_text(data: dict) -> str:
    lines = ["Targets (2-core machine):"]
    for label, cmp, value, unit, target, met in target_figures(data):
        v = "?" if value is None else f"{value:,.2f} {unit}"
        lines.append(f"  {label:48} {v:>14}  target {cmp} {target:g} {unit}: {met}")
    return "\n".join(lines)


def _pct(x: float | None, ceil: float | None) -> str:
    return "" if not x or not ceil else f"{x / ceil:.1%}"


def _mb(x: float | None) -> str:
    return "" if x is None else f"{x / MB:,.1f}"


def _cores(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def how_it_scales(data: dict) -> list[str]:
    lines: list[str] = []
    # Message size: fit time per message = a + b * size from the 100 B and 1 KiB rows.
    for client in ("confluent", "kafka-python", "aiokafka"):
        small, big = _row(data, client, 100, "1", 1), _row(data, client, 1024, "1", 1)
        if not small or not big:
            continue
        t_small, t_big = 1 / small["produce_mps"], 1 / big["produce_mps"]
        per_byte = (t_big - t_small) / (1024 - 100)
        per_msg = t_small - per_byte * 100
        lines.append(
            f"- **Message size ({client}, produce, acks=1, 1 partition):** 100 B records go at "
            f"{small['produce_mps']:,.0f} msg/s ({small['produce_bps'] / MB:.1f} MB/s), 1 KiB at "
            f"{big['produce_mps']:,.0f} msg/s ({big['produce_bps'] / MB:.1f} MB/s). A straight line "
            f"through both gives about {per_msg * 1e6:.2f} µs per message plus "
            f"{per_byte * 1e6 * 1024:.2f} µs per KiB: "
            + ("the fixed per-message cost dominates, so larger records (or larger batches) "
               "raise MB/s almost for free." if per_msg > per_byte * 1024
               else "the per-byte cost dominates at these sizes.")
        )  # fmt: skip
    for client in ("confluent",):
        one, eight = _row(data, client, 1024, "1", 1), _row(data, client, 1024, "1", 8)
        ack1, ackall = _row(data, client, 1024, "1", 1), _row(data, client, 1024, "all", 1)
        if one and eight:
            lines.append(f"- **1 vs 8 partitions ({client}, 1 KiB, acks=1):** produce "
                         f"{eight['produce_bps'] / one['produce_bps']:.2f}x, consume "
                         f"{eight.get('consume_bps', 0) / max(one.get('consume_bps', 1), 1):.2f}x "
                         "the single-partition rate.")  # fmt: skip
        if ack1 and ackall:
            lines.append(f"- **acks=all vs acks=1 ({client}, 1 KiB, 1 partition):** "
                         f"{ackall['produce_bps'] / ack1['produce_bps']:.2f}x (on one broker the ISR "
                         "is the leader alone, so any gap is run-to-run noise).")  # fmt: skip
    parts = data.get("partitions", [])
    if len(parts) >= 2:
        first, last = parts[0], parts[-1]
        t0 = first["bytes"] / first["seconds"]
        t1 = last["bytes"] / last["seconds"]
        per_part = ((last["rss"] or 0) - (first["rss"] or 0)) / max(
            1, last["partitions"] - first["partitions"]
        )
        lines.append(f"- **Partitions:** at {last['partitions']:,} partitions produce runs at "
                     f"{t1 / MB:.1f} MB/s, {t1 / t0:.0%} of the {first['partitions']}-partition rate "
                     f"({t0 / MB:.1f} MB/s); broker RSS grows by about {per_part / 1024:,.0f} KiB per "
                     f"partition ({_mb(first['rss'])} -> {_mb(last['rss'])} MB). Creating the "
                     f"{last['partitions']:,}-partition topic took {last['create_seconds']:.2f} s.")  # fmt: skip
    conns = data.get("connections", [])
    if len(conns) >= 2:
        first, last = conns[0], conns[-1]
        t0 = first["bytes"] / first["seconds"]
        t1 = last["bytes"] / last["seconds"]
        best = max(conns, key=lambda r: r["bytes"] / r["seconds"])
        per_conn = ((last["rss"] or 0) - (first["rss"] or 0)) / max(
            1, last["connections"] - first["connections"]
        )
        lines.append(f"- **Connections:** one connection with one request in flight does "
                     f"{t0 / MB:.1f} MB/s; the best was {best['bytes'] / best['seconds'] / MB:.1f} MB/s "
                     f"at {best['connections']} connections, and {last['connections']} connections "
                     f"do {t1 / MB:.1f} MB/s. Each connection costs about {per_conn / 1024:,.0f} KiB "
                     f"of broker RSS ({_mb(first['rss'])} -> {_mb(last['rss'])} MB).")  # fmt: skip
    return lines


def render(data: dict) -> str:
    c = data.get("ceilings", {})
    produce_ceiling = min(c["tcp"], c["file_write"]) if c else None
    consume_ceiling = min(c["tcp"], c["file_read"]) if c else None
    m, v = machine(), versions()
    L = ["# Benchmarks", "",
         "Generated by `make bench` (`python -m bench.run`); do not edit by hand."
         + (" **Quick mode** (`--quick`): short runs, small log." if data.get("quick") else ""), "",
         f"- Date: {data.get('started')}; the run took {data.get('elapsed', 0):.0f} s",
         f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, {m['os']}, Python {m['python']}",
         "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
         "- Broker: `python -m pykbroker` in its own process, 127.0.0.1, temporary log dir, "
         "default settings. Clients run in the benchmark's process. MB = 10^6 bytes; "
         "throughput counts record values only.", ""]  # fmt: skip
    L += ["## Targets", "", "| figure | measured | target | |", "|---|---|---|---|"]
    for label, cmp, value, unit, target, met in target_figures(data):
        val = "?" if value is None else f"{value:,.2f} {unit}"
        L.append(f"| {label} | {val} | {cmp} {target:g} {unit} | {met} |")
    if c:
        L += ["", "## Ceilings (same run)", "",
              f"- Loopback TCP, one process to another, 1 MiB writes: **{c['tcp'] / MB:,.0f} MB/s**",
              f"- Loopback TCP round trip, 1 KiB: p50 {c['rtt']['p50']:.3f} ms, p99 {c['rtt']['p99']:.3f} ms, "
              f"p999 {c['rtt']['p999']:.3f} ms",
              f"- Sequential file write, 1 MiB writes + fsync: **{c['file_write'] / MB:,.0f} MB/s**; "
              f"read back (page cache): **{c['file_read'] / MB:,.0f} MB/s**",
              "- A produce figure's ceiling is min(TCP, file write); a consume figure's is "
              "min(TCP, file read)."]  # fmt: skip
    rows = data.get("throughput", [])
    if rows:
        L += ["", f"## Throughput ({data.get('seconds', 0):g} s of producing per row, then "
              "consuming all of it from the beginning)", "",
              "| client | size | acks | partitions | produce msg/s | produce MB/s | % of ceiling "
              "| broker cores | consume msg/s | consume MB/s | % of ceiling | broker cores |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            L.append(f"| {r['client']} | {r['size']} B | {r['acks']} | {r['partitions']} | "
                     f"{r['produce_mps']:,.0f} | {r['produce_bps'] / MB:,.1f} | "
                     f"{_pct(r['produce_bps'], produce_ceiling)} | {_cores(r.get('produce_cpu'))} | "
                     f"{r.get('consume_mps', 0):,.0f} | {_mb(r.get('consume_bps'))} | "
                     f"{_pct(r.get('consume_bps'), consume_ceiling)} | {_cores(r.get('consume_cpu'))} |")  # fmt: skip
        bad = [
            r
            for r in rows
            if r["acked"] != r["produce_msgs"] or r.get("consume_msgs", r["acked"]) < r["acked"]
        ]
        for r in bad:
            L.append(f"\n**Check failed** for {r['client']} {r['size']} B acks={r['acks']} "
                     f"p={r['partitions']}: sent {r['produce_msgs']}, acknowledged {r['acked']}, "
                     f"consumed {r.get('consume_msgs')}.")  # fmt: skip
        L += ["", "\"broker cores\" is the broker process's CPU time divided by the wall time of "
              "the row (1.00 = one core busy): below 1 with a low MB/s means the client is the "
              "bottleneck, near 1 means the broker's single event loop is."]  # fmt: skip
    lat = data.get("latency")
    if lat:
        L += ["", "## End-to-end latency", "",
              f"confluent-kafka, 1 KiB records, acks=all, linger.ms=0, {lat['rate']:,} msg/s for "
              f"{lat['sent'] / lat['rate']:.0f} s ({lat['count']:,} of {lat['sent']:,} received): "
              f"**p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, p999 {lat['p999']:.2f} ms** "
              f"(max {lat['max']:.2f} ms). Floor: the loopback round trip above."]  # fmt: skip
    parts = data.get("partitions", [])
    if parts:
        L += ["", "## Scale: partitions", "",
              "confluent-kafka, 1 KiB, acks=1, no key (records spread over all partitions).", "",
              "| partitions | msg/s | MB/s | broker RSS (MB) | topic creation (s) |",
              "|---|---|---|---|---|"]  # fmt: skip
        for r in parts:
            L.append(f"| {r['partitions']:,} | {r['msgs'] / r['seconds']:,.0f} | "
                     f"{r['bytes'] / r['seconds'] / MB:,.1f} | {_mb(r['rss'])} | {r['create_seconds']:.2f} |")  # fmt: skip
    conns = data.get("connections", [])
    if conns:
        L += ["", "## Scale: connections", "",
              "N raw connections, each sending ProduceRequests (acks=1) of one 16 x 1 KiB batch, one "
              "request in flight per connection, over 8 partitions.", "",
              "| connections | msg/s | MB/s | broker RSS (MB) | errors |", "|---|---|---|---|---|"]  # fmt: skip
        for r in conns:
            L.append(f"| {r['connections']:,} | {r['msgs'] / r['seconds']:,.0f} | "
                     f"{r['bytes'] / r['seconds'] / MB:,.1f} | {_mb(r['rss'])} | {r['errors']} |")  # fmt: skip
    st = data.get("startup")
    if st:
        own = (
            f" (the broker's own `startup_ms`: {st['own_startup_s'] * 1000:.0f} ms)"
            if st["own_startup_s"]
            else ""
        )
        L += ["", "## Start-up and idle memory", "",
              f"- Start-up, spawn to accepting connections, empty log dir: **{st['ready_s'] * 1000:.0f} ms** "
              f"(median of {st['runs']}: {', '.join(f'{x * 1000:.0f}' for x in st['ready_all'])} ms){own}",
              f"- RSS when ready: {st['rss_ready'] / MB:.1f} MB; idle a few seconds later: "
              f"**{st['rss_idle'] / MB:.1f} MB**"]  # fmt: skip
    rec = data.get("recovery")
    if rec:
        L += ["", "## Recovery after SIGKILL", "",
              f"- {rec['log_bytes'] / (1 << 20):,.0f} MiB of log ({rec['records']:,} 1 KiB records "
              f"over 4 partitions, written in {rec['fill_seconds']:.1f} s), broker killed with "
              f"SIGKILL, restarted on the same log dir: **{rec['recovery_s']:.2f} s** to accepting "
              f"connections; {rec['records_after']:,} of {rec['records']:,} acknowledged records "
              f"present afterwards.",
              f"- A clean restart (after SIGTERM) of the same log: {rec['clean_restart_s']:.2f} s."]  # fmt: skip
    scales = how_it_scales(data)
    if scales:
        L += ["", "## How it scales", "", *scales]
    return "\n".join(L) + "\n"
