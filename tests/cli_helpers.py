"""Running the command-line tools as a user would: installed console scripts, in a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

BIN = os.path.dirname(sys.executable)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def shell(command: str, port: int | str, stdin: str | None = None, timeout: float = 60) -> Result:
    """Run a shell command line verbatim but for the port (or a whole bootstrap list), with the
    tools on PATH."""
    target = port if isinstance(port, str) else f"localhost:{port}"
    command = command.replace("localhost:9092", target)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(
        command, shell=True, input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def tool(name: str, *args: str, port: int, stdin: str | None = None, timeout: float = 60) -> Result:
    """Run one tool with an argument list (no shell), pointed at the broker on `port`."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    argv = [
        os.path.join(BIN, name),
        *(a.replace("localhost:9092", f"localhost:{port}") for a in args),
    ]
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
