"""The Dask grading cluster asks who is calling: TLS both ways, with certificates the course makes.

A scheduler started as book/instructors.md says (on 127.0.0.1 here) lets in the grader's client, which holds the
course's certificate, and refuses a client with none, one signed by another authority, or plain TCP; the grader
refuses a plain-TCP scheduler, and a worker refuses a task whose grader code differs from its own.
"""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader import cluster

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scheduler_command(certs: Path, port: int) -> list[str]:
    """`make dask-scheduler HOST=127.0.0.1`'s command."""
    return [str(Path(sys.executable).with_name("dask")), "scheduler", "--host", "127.0.0.1", "--port", str(port),
            "--protocol", "tls", "--no-dashboard", "--tls-ca-file", str(certs / cluster.CA),
            "--tls-cert", str(certs / cluster.CERT), "--tls-key", str(certs / cluster.KEY)]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    certs, other = base / "certs", base / "other"
    cluster.make_certs(certs)
    cluster.make_certs(other)
    port = _free_port()
    env = dict(os.environ, DASK_CONFIG=str(ROOT / "grader" / "dask.yaml"))
    proc = subprocess.Popen(scheduler_command(certs, port), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield {"address": f"tls://127.0.0.1:{port}", "port": port, "certs": certs, "other": other}
    proc.terminate()
    proc.wait(timeout=30)


def test_the_certificates_are_made_once_with_private_keys():
    import tempfile

    folder = Path(tempfile.mkdtemp()) / "certs"
    files = cluster.make_certs(folder)
    assert [f.name for f in files] == ["ca.pem", "ca-key.pem", "cluster.pem", "cluster-key.pem"]
    assert (folder / "cluster-key.pem").stat().st_mode & 0o077 == 0 and (folder / "ca-key.pem").stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        cluster.make_certs(folder)


def test_the_grader_with_the_course_certificate_gets_in(scheduler):
    from distributed import Client

    with Client(scheduler["address"], security=cluster.security(scheduler["certs"]), timeout="60s") as client:
        assert client.scheduler_info()["address"] == scheduler["address"]


def test_a_client_without_the_certificate_is_refused(scheduler):
    """A TLS client that trusts the course's CA but shows no certificate: the scheduler ends the handshake."""
    ctx = ssl.create_default_context(cafile=str(scheduler["certs"] / cluster.CA))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", scheduler["port"]), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"\0" * 8)
                if not tls.recv(1):  # TLS 1.3: the refusal arrives after the handshake, as an alert or a close
                    raise ConnectionResetError("closed by the scheduler")


def test_a_certificate_from_another_authority_is_refused(scheduler):
    from distributed import Client

    with pytest.raises((OSError, TimeoutError)):
        Client(scheduler["address"], security=cluster.security(scheduler["other"]), timeout="5s")


def test_plain_tcp_is_refused_by_the_scheduler_and_by_the_grader(scheduler, tmp_path):
    from distributed import Client

    with pytest.raises((OSError, TimeoutError)):
        Client(f"tcp://127.0.0.1:{scheduler['port']}", timeout="5s")
    with pytest.raises(SystemExit, match="only TLS"):
        cluster.check_address(f"tcp://127.0.0.1:{scheduler['port']}")


def test_a_worker_refuses_a_task_with_other_grader_code():
    from grader.worker import Task, code_sha256, grade, source_sha256

    A = "mixed_pooling"
    ok = code_sha256(ROOT)
    other = Task(A, "ada", {}, source_sha256(ROOT, A), code_sha256="0" * 64)
    result = grade(other, ROOT)
    assert not result.ok and "grader code" in result.reason and ok != "0" * 64
