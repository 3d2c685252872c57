"""A throw-away certificate authority so that the mirror can speak HTTPS, as every real OpenImages URL does.

`TestCA()` makes a CA key and certificate in memory; `ca.server_context()` is an `ssl.SSLContext` for a
server certificate it signs for 127.0.0.1, ::1 and localhost; `ca.write_pem(path)` writes the CA certificate
for clients (`--ca-bundle` / `SSL_CERT_FILE`). A second `TestCA()` is a CA that did not sign the server's
certificate: what a client must refuse. Built with `cryptography` (a [dev] dependency, already needed by
moto); keys are EC P-256, quick to make. For tests, the demo and benchmarks only -- never a real deployment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_HOSTS = ("localhost",)
_IPS = ("127.0.0.1", "::1")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestCA:
    """An in-memory CA and the server certificate it signs for the loopback names."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, name: str = "oiv4 mirror test CA") -> None:
        now = dt.datetime.now(dt.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )  # digital_signature, key_cert_sign, crl_sign
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self._server_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in _HOSTS]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _IPS]
        self.server_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("127.0.0.1"))
            .issuer_name(self.cert.subject)
            .public_key(self._server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM: what a client trusts."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write_pem(self, path: str | Path) -> Path:
        """Write the CA certificate to `path` (for `--ca-bundle` / `SSL_CERT_FILE`); returns the path."""
        path = Path(path)
        path.write_bytes(self.ca_pem)
        return path

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSLContext presenting the loopback certificate this CA signed."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        key_pem = self._server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chain_pem = self.server_cert.public_bytes(serialization.Encoding.PEM) + self.ca_pem
        # load_cert_chain reads files only: a private temp dir, removed as soon as the context holds the key.
        with tempfile.TemporaryDirectory(prefix="oiv4-mirror-tls-") as tmp:
            cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_file.write_bytes(chain_pem)
            key_file.write_bytes(key_pem)
            ctx.load_cert_chain(cert_file, key_file)
        return ctx
