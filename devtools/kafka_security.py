"""TLS, SCRAM users and the ACL authorizer for the local broker (``--security sasl_ssl``).

Role: make the local Kafka (one node or a cluster) secured the way a production cluster is, so
the end-to-end tests and a developer run against TLS + SASL/SCRAM-SHA-512 + ACLs.

Everything lives in ``<data-dir>/security`` and is made once, then reused across restarts:

- ``ca.pem`` / ``ca.key``: a private CA; ``broker.pem``: the brokers' key and certificate
  (CN ``batchpipe-broker``, SAN ``localhost`` and ``127.0.0.1``, so clients verify the
  hostname they dialled), signed by that CA;
- ``users.json`` (mode 0600): a random password per principal: ``admin`` (a super user, also
  used between brokers) and one per service (``shared.acls.SERVICE_PRINCIPALS``).

Listeners: clients and brokers use ``SASL_SSL`` (SCRAM-SHA-512 over TLS) advertised as
``localhost``; the controller quorum uses mutual TLS (the broker certificate is its principal,
``User:CN=batchpipe-broker``, a super user). SCRAM credentials are written into the metadata
log when storage is formatted (``format_args``), so they exist before any broker starts.

Invariant: no password is ever logged; they are only written to files of mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from batchpipe.shared.acls import SERVICE_PRINCIPALS
from batchpipe.shared.settings import ENV_PREFIX, Settings

ADMIN: Final = "admin"
PRINCIPALS: Final = (ADMIN, *SERVICE_PRINCIPALS)
BROKER_CN: Final = "batchpipe-broker"
MECHANISM: Final = "SCRAM-SHA-512"
AUTHORIZER: Final = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_tls(directory: Path, *, days: int = 825) -> None:
    """Create the CA and the broker certificate in ``directory`` unless they exist."""
    if (directory / "broker.pem").exists() and (directory / "ca.pem").exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchpipe local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(san, critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write_private(directory / "ca.key", ca_key.private_bytes(pem, pkcs8, plain))
    _write_private(
        directory / "broker.pem",
        key.private_bytes(pem, pkcs8, plain) + cert.public_bytes(pem) + ca_cert.public_bytes(pem),
    )
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))


def ensure_passwords(directory: Path) -> dict[str, str]:
    """The password of every principal, generated once into ``users.json`` (mode 0600)."""
    path = directory / "users.json"
    kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if all(p in kept for p in PRINCIPALS):
        return kept
    directory.mkdir(parents=True, exist_ok=True)
    users = {p: kept.get(p) or secrets.token_urlsafe(24) for p in PRINCIPALS}
    _write_private(path, json.dumps(users, indent=2).encode())
    return users


@dataclass(frozen=True)
class BrokerSecurity:
    """The security of a local broker: its files, its users and the listeners they imply."""

    directory: Path
    passwords: Mapping[str, str]
    advertised_host: str = "localhost"

    @classmethod
    def create(cls, data_dir: Path) -> BrokerSecurity:
        """Certificates and users under ``data_dir/security``, made on first use."""
        directory = data_dir / "security"
        ensure_tls(directory)
        return cls(directory, ensure_passwords(directory))

    def __repr__(self) -> str:  # never show the passwords
        return f"BrokerSecurity({self.directory}, users={sorted(self.passwords)})"

    @property
    def cafile(self) -> Path:
        return self.directory / "ca.pem"

    def server_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The listener, TLS, SASL and authorizer properties of one node."""
        store = str(self.directory / "broker.pem")
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{self.passwords[ADMIN]}";'
        )
        return {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.advertised_host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": store,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.cafile),
            "ssl.endpoint.identification.algorithm": "https",
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{ADMIN};User:CN={BROKER_CN}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create every SCRAM user."""
        args: list[str] = []
        for user, password in self.passwords.items():
            args += ["--add-scram", f"{MECHANISM}=[name={user},password={password}]"]
        return args

    def client_env(self, user: str) -> dict[str, str]:
        """The ``BATCHPIPE_KAFKA_*`` variables a client of ``user`` needs (with its password)."""
        return {
            f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            f"{ENV_PREFIX}KAFKA_SASL_MECHANISM": MECHANISM,
            f"{ENV_PREFIX}KAFKA_SASL_USERNAME": user,
            f"{ENV_PREFIX}KAFKA_SASL_PASSWORD": self.passwords[user],
            f"{ENV_PREFIX}KAFKA_SSL_CAFILE": str(self.cafile),
        }


def load_settings_from(env: Mapping[str, str], **overrides: Any) -> Settings:
    """``Settings`` from ``BATCHPIPE_*`` variables given here (not the process environment)."""
    fields = {
        name.removeprefix(ENV_PREFIX).lower(): value
        for name, value in env.items()
        if name.startswith(ENV_PREFIX)
    }
    return Settings(**(fields | overrides))


def render_env(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines, shell-quoted."""
    import shlex

    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """Write ``render_env(env)`` to ``path`` readable by its owner only (it holds a password)."""
    _write_private(path, render_env(env).encode())
