"""Kafka's inline JAAS configuration (`sasl.jaas.config`), as its JaasConfig parses it:

    <LoginModule class> <required|requisite|sufficient|optional> key="value" key2=word ... ;

one or more such entries. Values are quoted strings (backslash escapes the next character) or
bare words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pykbroker.config import ConfigError

_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(;)|(=)|([^\s=;"]+))', re.S)
_FLAGS = ("required", "requisite", "sufficient", "optional")

PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


@dataclass
class JaasEntry:
    login_module: str
    control_flag: str
    options: dict[str, str] = field(default_factory=dict)


def _tokens(text: str):
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ConfigError(f"Invalid JAAS config: unexpected {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group(1) is not None:
            yield "str", re.sub(r"\\(.)", r"\1", m.group(1))
        elif m.group(2):
            yield ";", ";"
        elif m.group(3):
            yield "=", "="
        else:
            yield "word", m.group(4)


def parse_jaas_config(text: str) -> list[JaasEntry]:
    """Parse sasl.jaas.config; ConfigError (with Kafka-like wording) if malformed."""
    tokens = list(_tokens(text))
    entries: list[JaasEntry] = []
    i = 0
    while i < len(tokens):
        kind, module = tokens[i]
        if kind != "word":
            raise ConfigError(f"Invalid JAAS config: expected a login module, got {module!r}")
        if i + 1 >= len(tokens) or tokens[i + 1][1].lower() not in _FLAGS:
            raise ConfigError(
                f"Invalid JAAS config: login module control flag not specified for {module}"
            )
        entry = JaasEntry(module, tokens[i + 1][1].lower())
        i += 2
        while i < len(tokens) and tokens[i][0] != ";":
            if i + 2 >= len(tokens) or tokens[i][0] != "word" or tokens[i + 1][0] != "=":
                raise ConfigError(f"Invalid JAAS config: malformed option in {module}")
            entry.options[tokens[i][1]] = tokens[i + 2][1]
            i += 3
        if i >= len(tokens):
            raise ConfigError("Invalid JAAS config: an entry does not end with ';'")
        i += 1
        entries.append(entry)
    if not entries:
        raise ConfigError("JAAS config property does not contain any login modules")
    return entries
