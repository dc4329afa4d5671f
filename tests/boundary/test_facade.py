"""Boundary: the convenience object records exactly what the functions record."""

from __future__ import annotations

import pytest

from pets import JurisdictionError, PolicyError
from pets.boundary import Boundary


class TestBoundary:
    def test_protect_export_reidentify_verify(self, raw, policy, keys, eu_ctx, log, tmp_path):
        b = Boundary(policy, keys, log, eu_ctx)
        pf = b.protect(raw)
        r = b.export(pf, "US", tmp_path / "u.parquet", columns="allowed")
        assert "phone" not in r.columns
        assert b.reidentify(pf, "email", pf.data["email"][:2], reason="t").tolist() == \
            raw["email"][:2].tolist()
        with pytest.raises(PolicyError):
            b.export(raw, "US", tmp_path / "raw.parquet")
        kinds = [e["kind"] for e in log.entries() if e["kind"].startswith("boundary.")]
        assert kinds == ["boundary.protect", "boundary.export", "boundary.reidentify",
                         "boundary.refused"]
        assert b.verify().ok and "users" in repr(b)

    def test_us_boundary_cannot_protect(self, raw, policy, keys, us_ctx, log):
        with pytest.raises(JurisdictionError):
            Boundary(policy, keys, log, us_ctx).protect(raw)

    def test_a_dask_frame_gives_the_lazy_dataset_with_the_same_values(self, raw, policy, keys,
                                                                      eu_ctx, log):
        dd = pytest.importorskip("dask.dataframe")
        import dask

        b = Boundary(policy, keys, log, eu_ctx)
        lazy = b.protect(dd.from_pandas(raw, npartitions=3), progress=False)
        with dask.config.set(scheduler="sync"):
            got = lazy.compute(progress=False)
        want = b.protect(raw)
        same = ["user_id", "email", "country", "minutes"]  # phone: randomized ciphertexts
        assert got.data[same].reset_index(drop=True).equals(
            want.data[same].reset_index(drop=True))
        assert got.manifest.treatments() == want.manifest.treatments()
        assert b.reidentify(got, "phone", got.data["phone"], reason="t").tolist() == \
            raw["phone"].tolist()
