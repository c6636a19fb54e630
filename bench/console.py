"""The web console: page load time on a big cluster, and what a live tail costs produce.

    python -m bench.console                 # ~2 minutes
    python -m bench.console --quick         # fewer rounds, shorter windows

1. Page load: a broker process with the console on, 1,000 topics (one partition each, a few
   records in every tenth) and 100 consumer groups (committed offsets on ten topics each, so
   they have lag; Empty groups: no members are kept running). Headless Chromium (Debian's
   package, driven by Playwright) opens the page in a fresh context each round and waits until
   the table is drawn: the topic list (1,000 rows), the group list (100 rows with lag), the
   overview (brokers and charts). Reference in the same run: the same page on a broker with no
   topics and no groups. Also the JSON endpoints alone (http.client, median of the rounds).
2. Produce throughput while the console live-tails the busy topic: confluent-kafka produces
   1 KiB values (acks=1, one partition) for `--seconds`, alternately without and with a tail
   open on that partition, `--rounds` times each. The tail is the console's page in Chromium
   (Live tail clicked: records arrive over Server-Sent Events and are drawn) or, with
   `--tail sse`, a plain SSE reader. The figure is the ratio with/without, from the medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import statistics
import subprocess
import sys
import time

from .common import MB, Broker, free_port, machine
from .throughput import create_topic, produce

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def console_broker() -> Broker:
    port = free_port()
    b = Broker({"console.port": str(port), "group.initial.rebalance.delay.ms": "0"})
    b.console_port = port
    return b


# --- 1. page load --------------------------------------------------------------------------------


def populate(bootstrap: str, topics: int, groups: int) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"topic-{i:04d}" for i in range(topics)]
    for i in range(0, topics, 100):
        futures = admin.create_topics([NewTopic(n, 1, 1) for n in names[i : i + 100]])
        for f in futures.values():
            f.result(120)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in names[::10]:
        for k in range(20):
            p.produce(n, value=b"v%d" % k)
    assert p.flush(60) == 0
    for g in range(groups):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"group-{g:03d}"})
        try:
            chosen = names[::10][g % 10 :: 10][:10] or names[:10]
            c.commit(offsets=[TopicPartition(n, 0, 5) for n in chosen], asynchronous=False)
        finally:
            c.close()


def time_pages(console_url: str, rounds: int, expect_topics: int, expect_groups: int) -> dict:
    from playwright.sync_api import sync_playwright

    pages = {
        "topics": ("#/topics", "#topics tbody tr", expect_topics),
        "groups": ("#/groups", "#groups tbody tr", expect_groups),
        "overview": ("#/", "#charts .chart", None),
    }
    out: dict[str, list[float]] = {k: [] for k in pages}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for _ in range(rounds + 1):  # the first round warms the browser up, not counted
                for name, (route, rows, count) in pages.items():
                    context = browser.new_context()  # no cache, no open connections
                    page = context.new_page()
                    t0 = time.perf_counter()
                    page.goto(console_url + route)
                    page.wait_for_selector(f"body[data-ready={route.strip('#/') or 'overview'}]")
                    if count:
                        page.wait_for_function(
                            f"document.querySelectorAll('{rows}').length >= {count}"
                        )
                    out[name].append(time.perf_counter() - t0)
                    context.close()
        finally:
            browser.close()
    return {k: v[1:] for k, v in out.items()}


def time_endpoints(console_url: str, rounds: int) -> dict[str, float]:
    host, port = console_url.split("//")[1].rstrip("/").split(":")
    out = {}
    for path in ("/api/topics", "/api/groups", "/api/cluster", "/api/metrics?window=120"):
        times = []
        size = 0
        for _ in range(rounds):
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            t0 = time.perf_counter()
            conn.request("GET", path)
            size = len(conn.getresponse().read())
            times.append(time.perf_counter() - t0)
            conn.close()
        out[path] = (statistics.median(times), size)
    return out


def page_load(topics: int, groups: int, rounds: int, say) -> dict:
    result = {}
    with console_broker() as empty:
        url = f"http://127.0.0.1:{empty.console_port}/"
        result["empty"] = time_pages(url, rounds, 0, 0)
    with console_broker() as b:
        t0 = time.monotonic()
        populate(b.bootstrap, topics, groups)
        say(f"created {topics} topics and {groups} groups in {time.monotonic() - t0:.0f} s")
        url = f"http://127.0.0.1:{b.console_port}/"
        result["full"] = time_pages(url, rounds, topics, groups)
        result["endpoints"] = time_endpoints(url, rounds)
        result["rss"] = b.rss()
    return result


# --- 2. produce while tailing ---------------------------------------------------------------------


_SSE_READER = """
import http.client, signal, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
conn.request("GET", sys.argv[2])
events = records = 0
def done(*_):
    print(events, records, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
for line in conn.getresponse():
    if line.startswith(b"data:"):
        events += 1
        records += line.count(b'"offset"')
"""


class SseTail:
    """The console's tail stream read by a separate process (no GIL shared with the producer),
    counting events and records: the browser's network side without its drawing."""

    def __init__(self, port: int, topic: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SSE_READER, str(port), f"/api/topics/{topic}/tail?partition=0"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.events = self.records = 0

    def close(self) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(30)
        self.events, self.records = (int(x) for x in out.split())


class BrowserTail:
    """The console's page with Live tail clicked, in headless Chromium."""

    def __init__(self, port: int, topic: str):
        from playwright.sync_api import sync_playwright

        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page()
        self.page.goto(f"http://127.0.0.1:{port}/#/topics/{topic}/messages")
        self.page.wait_for_selector("body[data-ready=topics]")
        self.page.click("#msg-tail")
        self.page.wait_for_selector("text=waiting for new records")
        self.events = self.records = 0

    def close(self) -> None:
        self.records = self.page.locator("#messages-body tr").count()
        status = self.page.locator("#msg-status").text_content() or ""
        self.events = -1
        self.status = status
        self.browser.close()
        self.pw.stop()


def produce_while_tailing(seconds: float, rounds: int, tail: str, say) -> dict:
    runs: dict[str, list[float]] = {"without": [], "with": []}
    tails = []
    with console_broker() as b:
        topic = "busy"
        create_topic(b.bootstrap, topic, 1, {"retention.bytes": str(512 << 20),
                                             "segment.bytes": str(128 << 20)})  # fmt: skip
        produce("confluent", b.bootstrap, topic, 1024, "1", 1.0)  # warm-up
        for r in range(rounds):
            for mode in ("without", "with"):
                t = None
                if mode == "with":
                    t = (BrowserTail if tail == "browser" else SseTail)(b.console_port, topic)
                cpu0 = b.cpu()
                res = produce("confluent", b.bootstrap, topic, 1024, "1", seconds)
                cores = (b.cpu() - cpu0) / res["seconds"]
                rate = res["bytes"] / res["seconds"]
                runs[mode].append(rate)
                note = ""
                if t is not None:
                    t.close()
                    tails.append(t)
                    note = f"; tail received {t.records} rows" + (
                        f" in {t.events} events" if t.events >= 0 else f" ({t.status})"
                    )
                say(
                    f"round {r + 1} {mode:>7} tail: {rate / MB:,.1f} MB/s, broker {cores:.2f} cores{note}"
                )
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"runs": runs, "median": med, "ratio": med["with"] / med["without"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--tail", choices=("browser", "sse"), default="browser")
    ap.add_argument("--only", choices=("pages", "tail"), default=None)
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 5.0)

    def say(text: str) -> None:
        print(text, flush=True)

    m = machine()
    say(f"# console bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {m}")
    if args.only in (None, "pages"):
        say(f"== page load: {args.topics} topics, {args.groups} groups, median of {rounds} rounds")
        r = page_load(args.topics, args.groups, rounds, say)
        for name in ("topics", "groups", "overview"):
            full = statistics.median(r["full"][name])
            empty = statistics.median(r["empty"][name])
            say(f"{name:>8} page: {full * 1000:,.0f} ms (max {max(r['full'][name]) * 1000:,.0f}); "
                f"same page with nothing in the cluster {empty * 1000:,.0f} ms")  # fmt: skip
        for path, (seconds_, size) in r["endpoints"].items():
            say(f"GET {path}: {seconds_ * 1000:,.1f} ms, {size / 1000:,.0f} kB")
        say(f"broker RSS with {args.topics} topics: {r['rss'] / 2**20:,.0f} MiB")
    if args.only in (None, "tail"):
        say(f"== produce, confluent 1 KiB acks=1, 1 partition, {seconds:g} s x {rounds} rounds "
            f"each, without and with a live tail ({args.tail})")  # fmt: skip
        r = produce_while_tailing(seconds, rounds, args.tail, say)
        say(f"median without tail {r['median']['without'] / MB:,.1f} MB/s, with tail "
            f"{r['median']['with'] / MB:,.1f} MB/s: ratio {r['ratio']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
