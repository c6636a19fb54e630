"""Sends fuzz cases to a running broker on many connections and checks every answer.

Throughout a run: the broker process stays up; a probe on its own connection gets ApiVersions
answered within 1 s every half second; its RSS stays under a bound; every response is a
well-formed frame with the request's correlation id that parses as that API/version's response
(or the broker closes the connection). Requests that may legitimately wait (long polls, joins,
acks=all) and get no answer quickly are dropped with their connection and counted, not failed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from time import perf_counter

from protocol import codec
from protocol.apis import ApiKey
from protocol.framing import read_uvarint

from .cases import LONG_WAIT, Case, CaseFactory, warm_up

MAX_RESPONSE = 64 << 20
PROBE_DEADLINE = 1.0


@dataclass
class Target:
    host: str
    port: int
    pid: int | None = None  # for liveness and RSS (a local process)
    metrics_url: str | None = None  # for the event-loop lag


@dataclass
class Options:
    frames: int = 20_000
    seconds: float | None = None  # stop early after this long
    workers: int = 8
    rss_limit: int | None = None  # bytes
    short_timeout: float = 2.0  # for LONG_WAIT APIs: drop the connection after this
    long_timeout: float = 15.0  # for everything else: no answer by then is a fault
    max_holds: int = 32  # half-written / oversize frames held open at once
    probe_interval: float = 0.5
    progress: bool = False  # print a line every 10 s and each new kind of fault as it happens


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    frames: int = 0
    by_kind: Counter = field(default_factory=Counter)
    kind_seconds: Counter = field(default_factory=Counter)  # worker time spent per strategy
    api_seconds: Counter = field(default_factory=Counter)  # and per API
    by_api: Counter = field(default_factory=Counter)  # "Name vN" -> frames sent
    responses: Counter = field(default_factory=Counter)  # api name -> responses parsed
    closed: Counter = field(default_factory=Counter)  # "kind api" -> connections the broker closed
    abandoned: Counter = field(default_factory=Counter)  # long waits we gave up on
    faults: Counter = field(default_factory=Counter)
    errors: list[dict] = field(default_factory=list)  # the first few of each fault
    slowest: tuple[float, str] = (0.0, "")
    fields_seen: dict = field(default_factory=dict)  # (api, version) -> numeric/length fields
    fields_mutated: set = field(default_factory=set)  # ((api, version), field) set to a boundary
    rss_start: int = 0
    rss_max: int = 0
    stalls: list[str] = field(default_factory=list)  # new longest loop stalls, and after what
    rss_jumps: list[str] = field(default_factory=list)  # growth of >64 MiB in 0.1 s, and after what
    probes: int = 0
    probe_max: float = 0.0
    connections: int = 0
    broker_died: bool = False
    aborted: bool = False  # stopped early: the broker died or went over its RSS bound
    verbose: bool = False
    loop_lag_max: float | None = None
    broker_cpu: float = 0.0  # seconds of CPU the broker used during the run
    fuzzer_cpu: float = field(default_factory=time.process_time)

    def fault(self, what: str, case: Case | None, message: str) -> None:
        self.faults[what] += 1
        if self.verbose and self.faults[what] == 1:
            print(f"FAULT {what}: {case.describe() if case else ''} {message[:300]}", flush=True)
        if sum(1 for e in self.errors if e["fault"] == what) < 5:
            entry = {"fault": what, "message": message}
            if case is not None:
                entry["case"] = case.describe()
                entry["frame_hex"] = case.frame[:512].hex()
            self.errors.append(entry)

    @property
    def ok(self) -> bool:
        return not self.faults


def api_label(api_key: int, version: int) -> str:
    try:
        name = ApiKey(api_key).name
    except ValueError:
        name = f"api{api_key}"
    return f"{name} v{version}"


def rss_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
                if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                    return None
    except (FileNotFoundError, ProcessLookupError):
        return None
    return 0


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        if not 4 <= size <= MAX_RESPONSE:
            raise ValueError(f"response size prefix {size}")
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def check_response(api_key: int, version: int, frame: bytes) -> None:
    """Raise unless `frame` (correlation id onward) parses as this API/version's response."""
    pos = 4
    if codec.response_is_flexible(api_key, version):
        ntags, pos = read_uvarint(frame, pos)
        for _ in range(ntags):
            _tag, pos = read_uvarint(frame, pos)
            size, pos = read_uvarint(frame, pos)
            pos += size
    return codec.decode_response(api_key, version, frame, pos)


class Fuzzer:
    def __init__(self, target: Target, factory: CaseFactory, options: Options):
        self.target = target
        self.factory = factory
        self.opts = options
        self.stats = Stats(verbose=options.progress)
        self._next_index = 0
        self._stop = asyncio.Event()
        self._holds: asyncio.Semaphore | None = None
        self._hold_tasks: set[asyncio.Task] = set()
        self._recent: deque[str] = deque(maxlen=40)  # the last cases sent, for a post-mortem
        self._lag_seen = 0.0

    # --- the run ------------------------------------------------------------------------

    async def run(self) -> Stats:
        self._holds = asyncio.Semaphore(self.opts.max_holds)
        if self.target.pid is not None:
            self.stats.rss_start = rss_of(self.target.pid) or 0
            cpu0 = cpu_seconds(self.target.pid)
        warm_up()
        self._probe_stop = threading.Event()
        probe = threading.Thread(target=self._probe, name="fuzz-probe", daemon=True)
        probe.start()
        watchers = [asyncio.create_task(self._monitor())]
        workers = [asyncio.create_task(self._worker()) for _ in range(self.opts.workers)]
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stopped, *workers], return_when=asyncio.FIRST_COMPLETED)
        done = asyncio.gather(*workers)
        await asyncio.wait([stopped, done], return_when=asyncio.FIRST_COMPLETED)
        if self._stop.is_set():  # aborted (broker gone or over its memory bound): stop now
            for task in [*workers, *self._hold_tasks]:
                task.cancel()
        await asyncio.gather(done, *self._hold_tasks, return_exceptions=True)
        self._stop.set()
        stopped.cancel()
        self._probe_stop.set()
        await asyncio.to_thread(probe.join)
        await asyncio.gather(*watchers, return_exceptions=True)
        self.stats.elapsed = time.monotonic() - self.stats.started
        if self.target.pid is not None:
            self.stats.broker_cpu = cpu_seconds(self.target.pid) - cpu0
        self.stats.fuzzer_cpu = time.process_time() - self.stats.fuzzer_cpu
        if self.target.metrics_url and not self.stats.aborted:
            self.stats.loop_lag_max = await asyncio.to_thread(loop_lag_max, self.target.metrics_url)
        return self.stats

    def _take(self) -> int | None:
        if self._stop.is_set() or self._next_index >= self.opts.frames:
            return None
        if self.opts.seconds and time.monotonic() - self.stats.started > self.opts.seconds:
            return None
        i = self._next_index
        self._next_index += 1
        return i

    async def _connect(self):
        reader, writer = await asyncio.open_connection(self.target.host, self.target.port)
        self.stats.connections += 1
        return reader, writer

    async def _worker(self) -> None:
        conn = None
        while (index := self._take()) is not None:
            t0 = perf_counter()
            case = self.factory.case(index)
            self._count(case)
            self._recent.append(case.describe())
            try:
                if case.hold:
                    await self._holds.acquire()
                    task = asyncio.create_task(self._hold(case))
                    self._hold_tasks.add(task)
                    task.add_done_callback(self._hold_tasks.discard)
                    continue
                if case.connections:
                    await self._burst(case)
                    continue
                if conn is None:
                    conn = await self._connect()
                if not await self._exchange(conn, case):
                    conn[1].close()
                    conn = None
            except OSError as e:
                if conn is not None:
                    conn[1].close()
                    conn = None
                if not self._stop.is_set():
                    self.stats.fault("connect_failed", case, repr(e))
                    await asyncio.sleep(0.1)
            finally:
                took = perf_counter() - t0
                self.stats.kind_seconds[case.kind] += took
                self.stats.api_seconds[api_label(case.api_key, case.version).split()[0]] += took
                if case.kind == "records":
                    self.stats.api_seconds["records:" + case.detail.split()[0]] += took
        if conn is not None:
            conn[1].close()

    def _count(self, case: Case) -> None:
        s = self.stats
        if case.fields:
            key = (case.api_key, case.version)
            s.fields_seen.setdefault(key, set()).update(case.fields)
            s.fields_mutated.update((key, f) for f in case.mutated)
        s.frames += 1
        s.by_kind[case.kind] += 1
        if case.api_key >= 0 and case.kind not in ("header", "garbage", "oversize", "burst"):
            s.by_api[api_label(case.api_key, case.version)] += 1

    # --- one request/response exchange -------------------------------------------------------

    async def _exchange(self, conn, case: Case) -> bool:
        """Send a case and check what comes back; False once the connection is done with."""
        reader, writer = conn
        s = self.stats
        label = api_label(case.api_key, case.version)
        writer.write(case.frame)
        started = perf_counter()
        waiting_for_request = True
        timeout = self.opts.short_timeout if case.api_key in LONG_WAIT else self.opts.long_timeout
        while True:
            try:
                frame = await asyncio.wait_for(read_frame(reader), timeout)
            except TimeoutError:
                if case.api_key in LONG_WAIT or case.kind in ("header", "garbage"):
                    s.abandoned[label] += 1
                else:
                    s.fault("no_response", case, f"nothing within {timeout} s")
                return False
            except ValueError as e:
                s.fault("bad_response_frame", case, str(e))
                return False
            if frame is None:
                s.closed[f"{case.kind} {label}"] += 1
                return False
            corr = struct.unpack_from(">i", frame)[0]
            if case.sentinel and corr == case.correlation_id + 1:
                # The sentinel's answer: the request itself had none (acks=0 produce).
                self._check(ApiKey.API_VERSIONS, 0, frame, case, "sentinel")
                return True
            if case.kind == "garbage":
                return True  # whatever header it parsed, the broker answered with a frame
            if not waiting_for_request or corr != case.correlation_id:
                s.fault("wrong_correlation_id", case,
                        f"got {corr}, expected {case.correlation_id}")  # fmt: skip
                return False
            waiting_for_request = False
            took = perf_counter() - started
            if took > s.slowest[0]:
                s.slowest = (took, case.describe())
            self._check_request_response(case, frame)
            if not case.sentinel:
                return True

    def _check_request_response(self, case: Case, frame: bytes) -> None:
        api, ver = case.api_key, case.version
        supported = self.factory.apis.get(api)
        if supported is None or not supported[0] <= ver <= supported[1]:
            if api == ApiKey.API_VERSIONS:
                ver = 0  # UNSUPPORTED_VERSION comes back with a v0 body (KIP-511)
            elif case.kind == "header":
                self.stats.fault("answered_unsupported", case,
                                 f"a response to api {api} v{ver}: {frame[:64].hex()}")  # fmt: skip
                return
        resp = self._check(api, ver, frame, case, "response")
        if resp is not None and case.refuse:
            # A batch Kafka refuses (bad CRC, corrupt compressed payload, bad magic, keyless
            # record on a compacted topic) must not be acknowledged with error 0.
            part = resp.responses[0].partition_responses[0]
            if part.error_code == 0:
                kind = case.detail.split()[0].split(":")[0]
                self.stats.fault(f"accepted_bad_batch:{kind}", case,
                                 f"{case.detail}: error 0 at offset {part.base_offset}")  # fmt: skip

    def _check(self, api: int, ver: int, frame: bytes, case: Case, what: str):
        try:
            resp = check_response(api, ver, frame)
        except Exception as e:
            self.stats.fault("unparseable_response", case, f"{what}: {e!r}: {frame[:128].hex()}")
            return None
        self.stats.responses[api_label(api, ver)] += 1
        return resp

    async def _hold(self, case: Case) -> None:
        """Send a half-written frame, keep the connection open a while, then close it."""
        try:
            reader, writer = await self._connect()
            writer.write(case.frame)
            try:
                data = await asyncio.wait_for(reader.read(65536), case.hold)
                if not data:
                    self.stats.closed[f"{case.kind}"] += 1
                else:
                    self.stats.fault("answered_half_frame", case, data[:64].hex())
            except TimeoutError:
                pass  # still waiting for the rest, as it should
            except ConnectionError:
                self.stats.closed[f"{case.kind}"] += 1
            writer.close()
        except OSError as e:
            self.stats.fault("connect_failed", case, repr(e))
        finally:
            self._holds.release()

    async def _burst(self, case: Case) -> None:
        async def one():
            reader, writer = await self._connect()
            try:
                writer.write(case.frame)
                frame = await asyncio.wait_for(read_frame(reader), self.opts.long_timeout)
                if frame is None:
                    self.stats.fault("burst_closed", case, "connection closed")
                else:
                    self._check(ApiKey.API_VERSIONS, 0, frame, case, "burst")
            finally:
                writer.close()

        results = await asyncio.gather(*(one() for _ in range(case.connections)),
                                       return_exceptions=True)  # fmt: skip
        for r in results:
            if isinstance(r, BaseException):
                self.stats.fault("burst_failed", case, repr(r))

    def _note_stall(self) -> None:
        """When the broker's longest loop stall grows past 0.25 s, note what was just sent."""
        if not self.target.metrics_url:
            return
        lag = loop_lag_max(self.target.metrics_url)
        if lag is None or lag <= max(self._lag_seen, 0.25):
            return
        self._lag_seen = lag
        if len(self.stats.stalls) < 10:
            recent = " | ".join(list(self._recent)[-8:])
            self.stats.stalls.append(f"{lag:.3f} s after {recent}")

    # --- the watchers ----------------------------------------------------------------------

    def _probe(self) -> None:
        """ApiVersions on a connection of its own, answered within PROBE_DEADLINE, throughout.

        A thread with a blocking socket, so that work on the fuzzer's own loop (generating a
        case, decoding a response) never delays reading the broker's answer.
        """
        sock = None
        corr = 0
        body = {"client_software_name": "fuzz-probe", "client_software_version": "1"}
        while not self._probe_stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection((self.target.host, self.target.port), 10)
                corr += 1
                frame = codec.encode_request(ApiKey.API_VERSIONS, 3, corr, "probe", body)
                started = perf_counter()
                sock.sendall(frame)
                answer = _recv_frame(sock)
                took = perf_counter() - started
                self.stats.probes += 1
                self.stats.probe_max = max(self.stats.probe_max, took)
                if answer is None:
                    self.stats.fault("probe_closed", None, "the broker closed the probe")
                    sock.close()
                    sock = None
                elif took > PROBE_DEADLINE:
                    recent = " | ".join(list(self._recent)[-12:])
                    self.stats.fault("probe_slow", None,
                                     f"ApiVersions took {took:.3f} s; last cases sent: {recent}")  # fmt: skip
            except OSError as e:
                self.stats.fault("probe_failed", None, repr(e))
                if sock is not None:
                    sock.close()
                sock = None
            self._note_stall()
            self._probe_stop.wait(self.opts.probe_interval)
        if sock is not None:
            sock.close()

    async def _monitor(self) -> None:
        pid = self.target.pid
        if pid is None:
            return
        last_report = time.monotonic()
        last_rss = self.stats.rss_start
        while not self._stop.is_set():
            rss = rss_of(pid)
            if rss is None:
                self.stats.broker_died = True
                self.stats.fault("broker_died", None, f"process {pid} is gone; last cases sent: "
                                 + " | ".join(self._recent))  # fmt: skip
                self.stats.aborted = True
                self._stop.set()
                return
            if rss - last_rss > 64 << 20 and len(self.stats.rss_jumps) < 10:
                recent = " | ".join(list(self._recent)[-8:])
                self.stats.rss_jumps.append(f"{last_rss >> 20} -> {rss >> 20} MiB after {recent}")
            last_rss = rss
            self.stats.rss_max = max(self.stats.rss_max, rss)
            limit = self.opts.rss_limit
            if limit and rss > limit:
                # Stop at once: an unbounded allocation would go on to take the machine's memory.
                self.stats.fault("rss_over_limit", None, f"RSS {rss >> 20} MiB > {limit >> 20} MiB;"
                                 " last cases sent: " + " | ".join(self._recent))  # fmt: skip
                self.stats.aborted = True
                self._stop.set()
                return
            if self.opts.progress and time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                lag = None
                if self.target.metrics_url:
                    lag = await asyncio.to_thread(loop_lag_max, self.target.metrics_url)
                print(f"{self.stats.frames} frames, {time.monotonic() - self.stats.started:.0f} s,"
                      f" RSS {rss >> 20} MiB, loop lag max {lag} s, probe max"
                      f" {self.stats.probe_max:.3f} s, faults {dict(self.stats.faults)}",
                      flush=True)  # fmt: skip
            try:
                await asyncio.wait_for(self._stop.wait(), 0.1)
            except TimeoutError:
                pass


def _recv_frame(sock: socket.socket) -> bytes | None:
    """One response frame from a blocking socket, or None if the broker closed it."""
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf[4:]


def loop_lag_max(metrics_url: str) -> float | None:
    """pykbroker_event_loop_lag_max_seconds from the broker's Prometheus endpoint."""
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("pykbroker_event_loop_lag_max_seconds "):
            return float(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return rss_of(pid) is not None
