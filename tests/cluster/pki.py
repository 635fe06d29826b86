"""Certificates and keys of the test control plane, made with `cryptography`.

One CA signs the API server's serving certificate (127.0.0.1, localhost and the names pods use
for the API: kubernetes.default.svc…) and a client certificate per component; the components'
user names are the ones Kubernetes' built-in RBAC bindings expect. A separate key pair signs
ServiceAccount tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of --service-cluster-ip-range: the `kubernetes` Service's ClusterIP.
SERVICE_IP = "10.0.0.1"
API_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local")
# Client identities: (file stem, user name, groups).
CLIENTS = (
    ("admin", "kubetune-admin", ("system:masters",)),
    ("controller-manager", "system:kube-controller-manager", ()),
    ("scheduler", "system:kube-scheduler", ()),
    # The node agent plays every node's kubelet; it is a harness, not a Node-authorised kubelet.
    ("node-agent", "kubetune-node-agent", ("system:masters",)),
)


@dataclass(frozen=True)
class Pki:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def cert(self, stem: str) -> Path:
        return self.folder / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.folder / f"{stem}.key"

    @property
    def service_account_key(self) -> Path:
        return self.folder / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.folder / "sa.pub"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common: str, groups: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                      *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups)])


def _certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
                 usages=(), names: tuple[str, ...] = (), addresses: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if names or addresses:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [*(x509.DNSName(n) for n in names), *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make(folder: Path) -> Pki:
    """Write a fresh CA, serving and client certificates and the ServiceAccount key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder)
    ca_key, ca_name = _key(), _name("kubetune-test-ca")
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(folder / "ca.key", ca_key)

    def issue(stem: str, subject: x509.Name, usages, **sans) -> None:
        key = _key()
        cert = _certificate(subject, key, ca_name, ca_key, usages=usages, **sans)
        pki.cert(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pki.key(stem), key)

    issue("apiserver", _name("kube-apiserver"), (ExtendedKeyUsageOID.SERVER_AUTH,),
          names=API_NAMES, addresses=("127.0.0.1", SERVICE_IP))
    for stem, user, groups in CLIENTS:
        issue(stem, _name(user, groups), (ExtendedKeyUsageOID.CLIENT_AUTH,))
    service_account = _key()
    _write_key(pki.service_account_key, service_account)
    pki.service_account_public_key.write_bytes(service_account.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki
