"""The container image built and run for real, with Debian's podman and runc (tests/test_image.py).

No container registry is reachable from these machines, so the base image the Dockerfile names
(`python:3.12-slim-bookworm`) is stood in for by a Debian bookworm made with debootstrap, with
Python 3.11 at /usr/local/bin/python as in the official image (a venv at /usr/local), and passed
to the build through its BASE_IMAGE argument. docker-compose.yml's `zookeeper:3.9` is stood in for
by Debian's zookeeper package on that base (tests/image/zookeeper.Containerfile).

Every image is tagged with a hash of what it is built from and reused while that is unchanged
(a file lock keeps concurrent test sessions from building the same one twice); a fresh machine
builds all three. podman runs with a containers.conf of our own (CONTAINERS_CONF): runc, no
default ulimits (these machines refuse the setrlimit podman's defaults ask for), cgroupfs (no
systemd here).
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "image"
ENSURE_PODMAN = ROOT / "scripts" / "ensure-podman.sh"
DEBIAN_MIRROR = os.environ.get("PYKBROKER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Locks and work directories, outside pytest's basetemp: concurrent pytest runs as the same user
# delete each other's old basetemps, which a debootstrap must not be in.
STATE = Path(os.environ.get("PYKBROKER_IMAGE_STATE", "/var/tmp/pykbroker-test-images"))

# What the official python image has that a debootstrap'ed Debian lacks: Python first on PATH
# at /usr/local/bin (here a venv, so pip installs beside it), a UTF-8 locale, python as CMD.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv")
BASE_CHANGES = (
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
BASE_RECIPE = (
    "debootstrap --variant=minbase bookworm",
    BASE_PACKAGES,
    BASE_CHANGES,
    "venv /usr/local",
    1,
)

CONTAINERS_CONF = """\
# Written by pykbroker's tests (tests/image_helpers.py) for podman as root on these machines.
[containers]
# podman's default ulimits (nofile, nproc) are set with setrlimit, which is refused here.
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def podman_missing() -> str | None:
    """Install podman, runc and debootstrap when missing (as root, with apt-get); say why not."""
    subprocess.run(["sh", str(ENSURE_PODMAN)], check=False, timeout=900)
    if os.geteuid() != 0:
        return "the image tests run podman as root (rootful networking and debootstrap)"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed and can't be (needs apt-get)"
    assert not missing, f"{', '.join(missing)} still missing after scripts/ensure-podman.sh"
    return None


def missing_test_extra(what: str, wheels_for_linux_x86_64_only: bool = False) -> NoReturn:
    """A checker from pyproject's `test` extra is missing. `make test` installs the extra, so as
    root (CI) that fails the test, as a missing podman fails the image tests; elsewhere it
    skips, saying what to install. Extras with Linux x86_64 wheels only skip on other machines."""
    if os.geteuid() == 0 and not (
        wheels_for_linux_x86_64_only and (sys.platform != "linux" or platform.machine() != "x86_64")
    ):
        pytest.fail(f"{what} is not installed (the test extra: pip install -e '.[test]')")
    pytest.skip(f"{what} not installed (test extra)")


def import_test_extra(module: str, what: str, wheels_for_linux_x86_64_only: bool = False):
    try:
        return importlib.import_module(module)
    except ImportError:
        missing_test_extra(what, wheels_for_linux_x86_64_only)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 60, what: str = "condition", interval: float = 0.2):
    """Poll cond() until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # a broker still starting: try again
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def _lock_path(tag: str, kind: str = "") -> Path:
    return STATE / (kind + re.sub(r"[^A-Za-z0-9.-]", "_", tag) + ".lock")


@contextlib.contextmanager
def image_lock(tag: str) -> Iterator[None]:
    """One builder of `tag` at a time on this machine (other checkouts run the same tests)."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(tag), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def digest(*parts: object, files: list[Path] = ()) -> str:
    h = hashlib.sha256(repr(parts).encode())
    for path in sorted(files):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def tree_files(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        if root.is_file():
            out.append(root)
        elif root.is_dir():
            out += [
                p for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            ]  # fmt: skip
    return out


def dockerfile_copy_sources(dockerfile: Path) -> list[Path]:
    """What the Dockerfile's COPY instructions take from the build context."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [ROOT / w for w in words[1:-1] if not w.startswith("--")]
    return sources


def remove_stale_workdirs(age: float = 6 * 3600) -> None:
    """Work directories of sessions that were killed (a debootstrap may have left mounts)."""
    for workdir in STATE.glob("session-*"):
        with contextlib.suppress(OSError):
            if workdir.stat().st_mtime < time.time() - age:
                unmount_under(workdir)
                shutil.rmtree(workdir, ignore_errors=True)


def unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


class Podman:
    """podman with our containers.conf, and the images the tests use (built or reused)."""

    def __init__(self, background: bool = False) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        remove_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix="session-", dir=STATE))
        # Builds made while other tests run yield the CPU to them.
        self.nice = ["nice", "-n", "19"] if background else []
        self.conf = self.workdir / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        self.timings: dict[str, float] = {}
        self._held: list = []

    def run(self, *args: str, check: bool = True, timeout: float = 120, nice=(), **kw):
        out = subprocess.run(
            [*nice, "podman", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, **kw,
        )  # fmt: skip
        if check and out.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} -> {out.returncode}\n{out.stderr[-3000:]}"
            )
        return out

    def close(self) -> None:
        for f in self._held:
            f.close()
        unmount_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def _timed(self, name: str, fn) -> None:
        start = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - start, 1)

    # --- the base image: Debian bookworm + Python 3.11 at /usr/local/bin/python ---------------

    def base_image(self) -> str:
        tag = f"localhost/pykbroker-test-base:bookworm-{digest(BASE_RECIPE)}"
        with image_lock(tag):
            if not self.exists(tag):
                self._timed("base", lambda: self._build_base(tag))
        return tag

    def _build_base(self, tag: str) -> None:
        rootfs = self.workdir / "rootfs"
        try:
            self._debootstrap(rootfs, tag)
        finally:
            unmount_under(rootfs)  # what an interrupted debootstrap left mounted (proc, sys)
            shutil.rmtree(rootfs, ignore_errors=True)

    def _debootstrap(self, rootfs: Path, tag: str) -> None:
        out = subprocess.run(
            [*self.nice, "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "bookworm", str(rootfs), DEBIAN_MIRROR],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert out.returncode == 0, f"debootstrap failed:\n{(out.stdout + out.stderr)[-3000:]}"
        venv = ["chroot", str(rootfs), "python3", "-m", "venv", "/usr/local"]
        subprocess.run([*self.nice, *venv], check=True)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / leftover).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(
            [*self.nice, "tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
        self.run("import", *changes, "-", tag, stdin=tar.stdout, timeout=600, nice=self.nice)
        assert tar.wait() == 0

    # --- the pykbroker image, from the Dockerfile as it is -----------------------------------

    def app_image(self, base: str) -> str:
        dockerfile = ROOT / "Dockerfile"
        files = tree_files(dockerfile, *dockerfile_copy_sources(dockerfile))
        tag = f"localhost/pykbroker-test:{digest(base, files=files)}"
        self.hold(tag)
        with image_lock(tag):
            if not self.exists(tag):
                self._timed("app", lambda: self.build(ROOT, tag, base))
                self.prune("localhost/pykbroker-test:", keep=tag)
        return tag

    def hold(self, tag: str) -> None:
        """Keep another session's prune() from removing `tag` while this one uses it (a shared
        lock until close() or exit): checkouts of the same sources share one image."""
        f = open(_lock_path(tag, "use-"), "a")  # noqa: SIM115 -- held for the session
        fcntl.flock(f, fcntl.LOCK_SH)
        self._held.append(f)

    def prune(self, prefix: str, keep: str, older_than: float = 3600) -> None:
        """Remove this repository's images built from older sources (one per change otherwise)
        an hour after they were made; one a session holds (hold()) or a container uses (rmi
        refuses) stays."""
        listed = json.loads(self.run("images", "--format", "json").stdout or "[]")
        for image in listed:
            names = [n for n in image.get("Names") or [] if n.startswith(prefix) and n != keep]
            if not names or image["Created"] >= time.time() - older_than:
                continue
            with contextlib.ExitStack() as locks:
                try:
                    for name in names:
                        f = locks.enter_context(open(_lock_path(name, "use-"), "a"))
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use by a running session
                self.run("rmi", *names, check=False)

    def zookeeper_image(self, base: str) -> str:
        files = tree_files(STANDINS / "zookeeper.Containerfile", STANDINS / "zoo.cfg")
        tag = f"localhost/pykbroker-test-zookeeper:{digest(base, files=files)}"
        with image_lock(tag):
            if not self.exists(tag):
                self._timed(
                    "zookeeper",
                    lambda: self.build(STANDINS, tag, base, "zookeeper.Containerfile"),
                )
        return tag

    def build(self, context: Path, tag: str, base: str, file: str = "Dockerfile") -> None:
        # --format docker: OCI image configs have no HEALTHCHECK. --network host and the host's
        # pip settings (its CA bundle above all) let pip and apt-get reach the package indexes.
        # --layers=false: podman 4.3 reused a cached COPY layer after files it copies changed
        # (seen with this .dockerignore); the tag's hash of the inputs is the cache instead, and
        # no untagged build-stage image is left behind.
        self.run(
            "build", "--format", "docker", "--network", "host", "--layers=false",
            *self._pip_volumes(),
            "--build-arg", f"BASE_IMAGE={base}", "-t", tag, "-f", str(context / file),
            str(context), timeout=900, nice=self.nice,
        )  # fmt: skip

    def _pip_volumes(self) -> list[str]:
        """The host's pip configuration, as a pip.conf mounted at /etc/pip.conf in RUN steps."""
        settings = host_pip_settings()
        lines = ["[global]"]
        volumes = []
        cert = settings.pop("cert", None)
        if cert and Path(cert).is_file():
            volumes += ["-v", f"{cert}:/run/pykbroker-build/ca.crt:ro"]
            lines.append("cert = /run/pykbroker-build/ca.crt")
        lines += [f"{key} = {value}" for key, value in settings.items()]
        conf = self.workdir / "pip.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [*volumes, "-v", f"{conf}:/etc/pip.conf:ro"]


def host_pip_settings() -> dict[str, str]:
    """The settings of the host's pip that matter inside a build: its CA bundle, its index and
    timeouts (files in pip's order, then PIP_* variables). Local paths (find-links, file://
    indexes, constraints) are left behind: they don't exist in the container."""
    parser = configparser.ConfigParser()
    home = Path.home()
    parser.read([
        "/etc/xdg/pip/pip.conf", "/etc/pip.conf", home / ".pip/pip.conf",
        home / ".config/pip/pip.conf", os.environ.get("PIP_CONFIG_FILE", ""),
    ])  # fmt: skip
    wanted = ("cert", "index-url", "timeout", "default-timeout", "retries", "proxy", "trusted-host")
    settings = {}
    for section in ("global", "install", "wheel"):
        if parser.has_section(section):
            for key in wanted:
                if parser.has_option(section, key):
                    settings[key] = parser.get(section, key)
    for key in wanted:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value
    if "default-timeout" in settings:
        settings["timeout"] = settings.pop("default-timeout")
    if "cert" not in settings:
        for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            if os.environ.get(var):
                settings["cert"] = os.environ[var]
                break
        else:
            if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
                settings["cert"] = "/etc/ssl/certs/ca-certificates.crt"
    if not settings.get("index-url", "https://").startswith(("http://", "https://")):
        del settings["index-url"]
    return settings


class ImageBuilds:
    """The base and the pykbroker image, built (or reused) at once; the ZooKeeper stand-in built
    alongside, on a thread, and waited for only by the test that needs it."""

    def __init__(self, podman: Podman):
        self.podman = podman
        self.base = podman.base_image()
        self._zookeeper: str | None = None
        self._zookeeper_error: BaseException | None = None
        self._thread = threading.Thread(target=self._build_zookeeper, daemon=True)
        self._thread.start()
        self.app = podman.app_image(self.base)

    def _build_zookeeper(self) -> None:
        try:
            self._zookeeper = self.podman.zookeeper_image(self.base)
        except BaseException as e:  # reported by zookeeper()
            self._zookeeper_error = e

    def zookeeper(self) -> str:
        self._thread.join(900)
        if self._zookeeper_error is not None:
            raise self._zookeeper_error
        assert self._zookeeper is not None, "ZooKeeper stand-in build did not finish"
        return self._zookeeper


# --- docker-compose.yml ---------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's `${NAME}` and `${NAME:-default}` (an empty value takes the default too)."""

    def value(m: re.Match) -> str:
        got = environ.get(m["name"], "")
        return got if got else (m["default"] or "")

    return _VARIABLE.sub(value, text)


def load_compose(environ: dict[str, str] | None = None) -> dict:
    """docker-compose.yml as Compose reads it with `environ` (none: every default)."""
    import yaml

    text = (ROOT / "docker-compose.yml").read_text()
    return yaml.safe_load(interpolate(text, environ or {}))


def podman_compose() -> str:
    """podman-compose from this venv (the test extra), else from PATH."""
    here = Path(sys.executable).parent / "podman-compose"
    return str(here) if here.exists() else (shutil.which("podman-compose") or str(here))


# --- made in the background ------------------------------------------------------------------

_background: dict = {}
# Under xdist, the controller process that runs start_background_builds (set in each worker by
# conftest.py); a worker's image_builds() waits on the image locks it holds.
BUILDER_PID: int | None = None


def start_background_builds() -> None:
    """Start making the images now, at the lowest CPU priority, so that a fresh machine has them
    by the time tests/test_image.py runs (conftest.py calls this once tests are collected).
    Only where podman is already installed (make test installs it before pytest)."""
    if _background or os.geteuid() != 0:
        return
    if any(shutil.which(tool) is None for tool in ("podman", "runc", "debootstrap")):
        return

    _background["podman"] = podman = Podman(background=True)

    def build() -> None:
        try:
            _background["images"] = ImageBuilds(podman)
        except BaseException as e:  # raised again by image_builds()
            _background["error"] = e

    _background["thread"] = threading.Thread(target=build, daemon=True, name="image-builds")
    _background["thread"].start()


def image_builds() -> ImageBuilds:
    """The images: the background builds' (waited for), or built now."""
    thread = _background.get("thread")
    if thread is None:
        if BUILDER_PID is not None:  # an xdist worker: its controller started the builds
            unnice_descendants(BUILDER_PID)
        return ImageBuilds(Podman())
    # A test waits for them now: full priority for what is still to come and what runs.
    _background["podman"].nice = []
    unnice_descendants()
    thread.join(900)
    if "error" in _background:
        raise _background["error"]
    assert "images" in _background, "the background image builds did not finish"
    return _background["images"]


def unnice_descendants(root: int | None = None) -> None:
    """Back to nice 0 for every process under `root` (this one by default): the builds'
    debootstrap, podman..."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    root = os.getpid() if root is None else root
    ours = {root}
    grew = True
    while grew:
        found = {pid for pid, ppid in parents.items() if ppid in ours} - ours
        grew = bool(found)
        ours |= found
    for pid in ours - {root, os.getpid()}:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, 0)
