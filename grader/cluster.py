"""A Dask grading cluster that asks who is calling: TLS both ways, with certificates the course makes.

A Dask scheduler runs whatever its clients send, on every worker, with the workers' rights (root, on a grading
machine). So the cluster speaks only TLS (``tls://``), and every connection, scheduler, worker or client, must
show a certificate signed by the course's own certificate authority:

    python -m grader dask-certs .dask-certs      # ca.pem, ca-key.pem, cluster.pem, cluster-key.pem

``ca-key.pem`` signs; it stays on the instructor's machine. ``ca.pem``, ``cluster.pem`` and ``cluster-key.pem`` go
to every machine of the cluster (book/instructors.md has the commands). :func:`security` is what the grader's
client uses; the ``dask scheduler`` and ``dask worker`` commands take the same files as ``--tls-*`` options.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

CA, CA_KEY, CERT, KEY = "ca.pem", "ca-key.pem", "cluster.pem", "cluster-key.pem"
DAYS = 400  # a course year, and a little more


def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CNN course grading"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key, issuer: str, signer, *, ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if not ca:  # one certificate for every member: each is a server to some and a client to others
        usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_certs(folder: Path) -> list[Path]:
    """A certificate authority and the cluster's certificate signed by it, in ``folder`` (keys readable by their
    owner only). Refuses to overwrite: new certificates lock out every machine that holds the old ones."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    if (folder / CA).exists():
        raise FileExistsError(f"{folder / CA} exists: remove the folder to make new certificates")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("CNN course grading CA", ca_key, "CNN course grading CA", ca_key, ca=True)
    cert = _certificate("CNN course grading cluster", key, "CNN course grading CA", ca_key, ca=False)
    private = {"encoding": serialization.Encoding.PEM, "format": serialization.PrivateFormat.PKCS8,
               "encryption_algorithm": serialization.NoEncryption()}
    _write(folder / CA, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / CA_KEY, ca_key.private_bytes(**private), 0o600)
    _write(folder / CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / KEY, key.private_bytes(**private), 0o600)
    return [folder / n for n in (CA, CA_KEY, CERT, KEY)]


def certs_folder(root: Path, folder: Path | str | None = None) -> Path:
    """Where the grader's client finds the certificates: ``folder``, else ``DASK_CERTS``, else ``.dask-certs``."""
    return Path(folder or os.environ.get("DASK_CERTS") or Path(root) / ".dask-certs")


def security(folder: Path):
    """The grader's client's side of the TLS: the course's CA and the cluster's certificate, encryption required."""
    from distributed.security import Security

    missing = [n for n in (CA, CERT, KEY) if not (Path(folder) / n).is_file()]
    if missing:
        raise SystemExit(f"the Dask cluster's certificates are not in {folder} ({', '.join(missing)} missing): make "
                         f"them with `make dask-certs` (or point DASK_CERTS at the folder that holds them)")
    f = Path(folder)
    return Security(tls_ca_file=str(f / CA), tls_client_cert=str(f / CERT), tls_client_key=str(f / KEY),
                    require_encryption=True)


def check_address(address: str) -> None:
    """Only TLS: a scheduler reached over plain TCP would run anyone's code on the workers."""
    if not address.startswith("tls://"):
        raise SystemExit(f"SCHEDULER={address}: the grading cluster speaks only TLS (tls://host:8786), with the "
                         f"course's certificates; book/instructors.md shows how to start it")
