"""TLS for SSL and SASL_SSL listeners: an SSLContext from Kafka's ssl.* keys (PEM key and trust
stores, as Kafka 2.7+ reads them), and the principal of a client certificate.

Kafka reads JKS and PKCS12 stores through the JVM. pykbroker reads PEM (files or inline),
PKCS12 with the `cryptography` package and JKS with `pyjks`, both optional: a store of either
kind is turned into PEM in memory (the key only ever in a private file removed at once, the
ssl module loading keys from files only).
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Callable
from typing import Any

from pykbroker.config import ConfigError

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "required": ssl.CERT_REQUIRED,
    "requested": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


def server_context(get: Callable[[str], Any], listener: str) -> ssl.SSLContext:
    """The SSLContext of one listener; `get(key)` gives that listener's value of a key.
    ConfigError naming the listener for anything a Kafka broker would also refuse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = [_VERSIONS[v] for v in get("ssl.enabled.protocols")]
    if not versions:
        raise ConfigError(f"Listener {listener}: ssl.enabled.protocols is empty")
    ctx.minimum_version, ctx.maximum_version = min(versions), max(versions)
    _load_keystore(ctx, get, listener)
    _load_truststore(ctx, get, listener)
    ctx.verify_mode = _CLIENT_AUTH[get("ssl.client.auth")]
    suites = get("ssl.cipher.suites")
    if suites:
        _set_ciphers(ctx, suites, listener)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def client_context(get: Callable[[str], Any], listener: str) -> ssl.SSLContext:
    """The SSLContext this broker connects to the others with, from the inter-broker listener's
    keys: its trust store to verify them, its key store presented if they ask for a client
    certificate, the peer's name checked unless ssl.endpoint.identification.algorithm is empty."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    versions = [_VERSIONS[v] for v in get("ssl.enabled.protocols")]
    ctx.minimum_version, ctx.maximum_version = min(versions), max(versions)
    if get("ssl.truststore.location") or get("ssl.truststore.certificates"):
        _load_truststore(ctx, get, listener)
    else:
        ctx.load_default_certs()  # the JVM's default trust store, here the OS's
    _load_keystore(ctx, get, listener)
    ctx.check_hostname = (get("ssl.endpoint.identification.algorithm") or "").lower() == "https"
    suites = get("ssl.cipher.suites")
    if suites:
        _set_ciphers(ctx, suites, listener)
    return ctx


def _load_keystore(ctx: ssl.SSLContext, get, listener: str) -> None:
    kind = (get("ssl.keystore.type") or "").upper()
    chain, key = get("ssl.keystore.certificate.chain"), get("ssl.keystore.key")
    location = get("ssl.keystore.location")
    key_password = get("ssl.key.password")
    if chain or key:
        if kind != "PEM":
            raise ConfigError(f"Listener {listener}: ssl.keystore.certificate.chain and "
                              "ssl.keystore.key require ssl.keystore.type=PEM")  # fmt: skip
        if not (chain and key):
            raise ConfigError(f"Listener {listener}: ssl.keystore.certificate.chain and "
                              "ssl.keystore.key must both be set")  # fmt: skip
        if location:
            raise ConfigError(f"Listener {listener}: ssl.keystore.location can't be set with "
                              "ssl.keystore.certificate.chain")  # fmt: skip
        # The ssl module loads keys from files only: a private file, removed at once.
        with _private_file(key + "\n" + chain) as path:
            _load_cert_chain(ctx, path, key_password, listener)
        return
    if not location:
        raise ConfigError(f"Listener {listener}: an SSL listener needs a key store: "
                          "ssl.keystore.location, or ssl.keystore.certificate.chain and "
                          "ssl.keystore.key (ssl.keystore.type=PEM)")  # fmt: skip
    password = get("ssl.keystore.password")
    if kind == "PEM":
        if password:
            # Kafka's own check for PEM stores.
            raise ConfigError(f"Listener {listener}: SSL key store password cannot be specified "
                              "with PEM format, only key password may be specified")  # fmt: skip
        _load_cert_chain(ctx, location, key_password, listener)
        return
    if kind not in ("PKCS12", "JKS"):
        raise ConfigError(f"Listener {listener}: ssl.keystore.type {kind or None} is not "
                          "supported: PEM, PKCS12 or JKS")  # fmt: skip
    if not password:
        # Kafka's DefaultSslEngineFactory refuses a JKS/PKCS12 key store without one.
        raise ConfigError(f"Listener {listener}: SSL key store is specified, but key store "
                          "password is not specified.")  # fmt: skip
    # As Kafka: the key's password is ssl.key.password, else the store's.
    pem = _store_key_pem(kind, location, password, key_password or password, listener)
    with _private_file(pem) as path:
        _load_cert_chain(ctx, path, None, listener)


def _read_store(location: str, what: str, listener: str) -> bytes:
    try:
        with open(location, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"Listener {listener}: failed to load SSL {what} store: {e}") from None


def _store_key_pem(kind: str, location: str, password: str, key_password: str,
                   listener: str) -> str:  # fmt: skip
    """The key (unencrypted PKCS#8) and certificate chain of a PKCS12 or JKS key store, in PEM."""
    data = _read_store(location, "key", listener)
    try:
        if kind == "PKCS12":
            pkcs12, ser = _pkcs12(listener)
            store = pkcs12.load_pkcs12(data, password.encode())
            if store.key is None or store.cert is None:
                raise ValueError("no private key entry")
            key = store.key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                          ser.NoEncryption()).decode()  # fmt: skip
            certs = [store.cert.certificate] + [c.certificate for c in store.additional_certs]
            return key + "".join(c.public_bytes(ser.Encoding.PEM).decode() for c in certs)
        jks = _jks(listener)
        ks = jks.KeyStore.loads(data, password)
        entries = list(ks.private_keys.values())
        if not entries:
            raise ValueError("no private key entry")
        entry = entries[0]  # Kafka's key manager picks an alias; one entry is the usual store
        if not entry.is_decrypted():
            entry.decrypt(key_password)
        key = _pem("PRIVATE KEY", entry.pkey_pkcs8)
        return key + "".join(_pem("CERTIFICATE", der) for _kind, der in entry.cert_chain)
    except ConfigError:
        raise
    except Exception as e:  # a wrong password, a damaged or empty store
        raise ConfigError(f"Listener {listener}: failed to load SSL key store {location} "
                          f"({kind}): {e or type(e).__name__}") from None  # fmt: skip


def _store_trust_pem(kind: str, location: str, password: str | None, listener: str) -> str:
    """The certificates of a PKCS12 or JKS trust store, in PEM."""
    data = _read_store(location, "trust", listener)
    try:
        if kind == "PKCS12":
            pkcs12, ser = _pkcs12(listener)
            store = pkcs12.load_pkcs12(data, password.encode() if password else None)
            certs = ([store.cert] if store.cert else []) + list(store.additional_certs)
            pem = "".join(c.certificate.public_bytes(ser.Encoding.PEM).decode() for c in certs)
        else:
            jks = _jks(listener)
            # Without a password pyjks skips the store's integrity check, as Java does when
            # reading a trust store with no password.
            ks = jks.KeyStore.loads(data, password or None, try_decrypt_keys=False)
            pem = "".join(_pem("CERTIFICATE", c.cert) for c in ks.certs.values())
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"Listener {listener}: failed to load SSL trust store {location} "
                          f"({kind}): {e or type(e).__name__}") from None  # fmt: skip
    if not pem:
        raise ConfigError(f"Listener {listener}: SSL trust store {location} holds no certificate")
    return pem


def _pem(label: str, der: bytes) -> str:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def _pkcs12(listener: str):
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12
    except ImportError:
        raise ConfigError(f"Listener {listener}: PKCS12 stores need the `cryptography` package "
                          "(pip install 'pykbroker[keystores]'), or use PEM") from None  # fmt: skip
    return pkcs12, serialization


def _jks(listener: str):
    try:
        import jks
    except ImportError:
        raise ConfigError(f"Listener {listener}: JKS stores need the `pyjks` package (pip install "
                          "'pykbroker[keystores]'), or convert the store to PKCS12 or PEM "
                          "(keytool -importkeystore -deststoretype PKCS12)") from None  # fmt: skip
    return jks


def _load_cert_chain(ctx, path: str, password: str | None, listener: str) -> None:
    try:
        ctx.load_cert_chain(path, password=password or "")
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"Listener {listener}: failed to load SSL key store: {e}") from None


def _load_truststore(ctx: ssl.SSLContext, get, listener: str) -> None:
    kind = (get("ssl.truststore.type") or "").upper()
    location, inline = get("ssl.truststore.location"), get("ssl.truststore.certificates")
    if not location and not inline:
        ctx.load_default_certs(
            ssl.Purpose.CLIENT_AUTH
        )  # the JVM's default trust store, here the OS's
        return
    if kind not in ("PEM", "PKCS12", "JKS"):
        raise ConfigError(f"Listener {listener}: ssl.truststore.type {kind or None} is not "
                          "supported: PEM, PKCS12 or JKS")  # fmt: skip
    if inline and kind != "PEM":
        raise ConfigError(f"Listener {listener}: ssl.truststore.certificates requires "
                          "ssl.truststore.type=PEM")  # fmt: skip
    if location and inline:
        raise ConfigError(f"Listener {listener}: ssl.truststore.location can't be set with "
                          "ssl.truststore.certificates")  # fmt: skip
    if kind != "PEM":
        inline = _store_trust_pem(kind, location, get("ssl.truststore.password"), listener)
        location = None
    try:
        if location:
            ctx.load_verify_locations(cafile=location)
        else:
            ctx.load_verify_locations(cadata=inline)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"Listener {listener}: failed to load SSL trust store: {e}") from None


@contextlib.contextmanager
def _private_file(text: str):
    fd, path = tempfile.mkstemp(prefix="pykbroker-key-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600
            f.write(text)
        yield path
    finally:
        os.unlink(path)


# IANA (Java) cipher suite names -> OpenSSL names, for the TLS 1.2 suites clients use.
_IANA_KX = {"ECDHE_RSA": "ECDHE-RSA", "ECDHE_ECDSA": "ECDHE-ECDSA", "DHE_RSA": "DHE-RSA", "RSA": ""}
_IANA_CIPHER = {"AES_128_GCM": "AES128-GCM", "AES_256_GCM": "AES256-GCM",
                "AES_128_CBC": "AES128", "AES_256_CBC": "AES256",
                "CHACHA20_POLY1305": "CHACHA20-POLY1305"}  # fmt: skip
_IANA = re.compile(r"TLS_(ECDHE_RSA|ECDHE_ECDSA|DHE_RSA|RSA)_WITH_([A-Z0-9_]+?)_(SHA\d*)")
_TLS13 = re.compile(r"TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256|"
                    r"AES_128_CCM_SHA256|AES_128_CCM_8_SHA256)")  # fmt: skip


def openssl_cipher_name(name: str) -> str | None:
    """TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 -> ECDHE-RSA-AES256-GCM-SHA384; an OpenSSL name
    as is; None for a TLS 1.3 suite (OpenSSL always enables its TLS 1.3 suites)."""
    if _TLS13.fullmatch(name):
        return None
    m = _IANA.fullmatch(name)
    if m is None:
        return name
    kx, cipher, mac = m.groups()
    parts = [_IANA_KX[kx], _IANA_CIPHER.get(cipher, cipher.replace("_", "-"))]
    if cipher.endswith("_CBC"):
        parts.append("SHA" if mac == "SHA" else mac)  # CBC suites name their MAC
    elif cipher.endswith("GCM"):
        parts.append(mac)
    return "-".join(p for p in parts if p)


def _set_ciphers(ctx: ssl.SSLContext, suites: list[str], listener: str) -> None:
    names = [n for n in (openssl_cipher_name(s) for s in suites) if n]
    if not names:  # TLS 1.3 suites only: TLS 1.2 has nothing left
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return
    try:
        ctx.set_ciphers(":".join(names))
    except ssl.SSLError:
        raise ConfigError(f"Listener {listener}: none of ssl.cipher.suites {suites} is "
                          "available") from None  # fmt: skip


# --- the principal of a client certificate --------------------------------------------------

# Attribute keywords Java's X500Principal.getName() (RFC 2253) writes; others as dotted OIDs.
_RFC2253_KEYWORDS = {"commonName": "CN", "countryName": "C", "localityName": "L",
                     "stateOrProvinceName": "ST", "organizationName": "O",
                     "organizationalUnitName": "OU", "streetAddress": "STREET",
                     "domainComponent": "DC", "userId": "UID"}  # fmt: skip
_OIDS = {"emailAddress": "1.2.840.113549.1.9.1", "serialNumber": "2.5.4.5", "title": "2.5.4.12",
         "surname": "2.5.4.4", "givenName": "2.5.4.42", "initials": "2.5.4.43",
         "generationQualifier": "2.5.4.44", "dnQualifier": "2.5.4.46", "pseudonym": "2.5.4.65",
         "postalCode": "2.5.4.17", "businessCategory": "2.5.4.15"}  # fmt: skip


def _escape(value: str) -> str:
    out = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _der_string(value: str, ia5: bool) -> str:
    data = value.encode()
    tag = 0x16 if ia5 else 0x13  # IA5String (emailAddress) or PrintableString
    if len(data) < 128:
        header = bytes([tag, len(data)])
    else:
        n = (len(data).bit_length() + 7) // 8
        header = bytes([tag, 0x80 | n]) + len(data).to_bytes(n, "big")
    return "#" + (header + data).hex()


def subject_dn(peercert: dict) -> str:
    """The subject of ssl.getpeercert() as Java's X500Principal.getName() writes it (RFC 2253:
    last RDN first, no spaces), e.g. "CN=alice,OU=eng,O=Acme,C=US" -- what Kafka's DEFAULT
    principal mapping rule gives."""
    rdns = []
    for rdn in reversed(peercert.get("subject", ())):
        parts = []
        for name, value in rdn:
            keyword = _RFC2253_KEYWORDS.get(name)
            if keyword is not None:
                parts.append(f"{keyword}={_escape(value)}")
            else:
                oid = _OIDS.get(name, name)
                parts.append(f"{oid}={_der_string(value, name == 'emailAddress')}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


_RULE = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_RULE_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(?:,\s*|$)")
_BACKREF = re.compile(r"\$(\d+)")


class SslPrincipalMapper:
    """ssl.principal.mapping.rules, as Kafka's SslPrincipalMapper: rules tried in order, the
    first whose regex matches the whole DN gives the name (replacement with $1.. groups, then
    /L lower or /U upper case); DEFAULT gives the DN itself."""

    def __init__(self, rules: str | None):
        self.rules: list[tuple[re.Pattern, str, str] | None] = []  # None: DEFAULT
        text = (rules if rules is not None else "DEFAULT").strip()
        for m in _RULE_SPLITTER.finditer(text):
            if m.start() == len(text) and m.group(1) == "":
                break
            rule = m.group(1)
            parsed = re.fullmatch(_RULE, rule)
            if parsed is None:
                raise ConfigError(f"Invalid rule: {rule}")
            if parsed.group(1):
                self.rules.append(None)
            elif parsed.group(2) is not None:
                full = re.match(r"RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?)$", rule)
                if full is None:
                    raise ConfigError(f"Invalid rule: `{rule}`")
                try:
                    pattern = re.compile(full.group(1))
                except re.error as e:
                    raise ConfigError(f"Invalid rule: {rule}: {e}") from None
                self.rules.append((pattern, full.group(2), full.group(3)))
            elif rule:
                raise ConfigError(f"Invalid rule: {rule}")

    def name(self, dn: str) -> str:
        for rule in self.rules:
            if rule is None:
                return dn
            pattern, replacement, case = rule
            if pattern.fullmatch(dn) is None:
                continue
            # As Kafka: String.replaceAll over the DN; $n back references, and one naming a
            # group that doesn't exist stays literal.
            template = replacement.replace("\\/", "/")

            def expand(m: re.Match, template=template, groups=pattern.groups) -> str:
                def ref(b: re.Match) -> str:
                    n = int(b.group(1))
                    while n > groups and n >= 10:
                        n //= 10
                    return (m.group(n) or "") if n <= groups else b.group(0)

                return _BACKREF.sub(ref, template)

            result = pattern.sub(expand, dn)
            if case == "L":
                result = result.lower()
            elif case == "U":
                result = result.upper()
            return result
        raise ValueError(f"No rules apply to {dn}, rules {self.rules}")
