"""Manifests: value digests survive Parquet, signatures catch every edit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pets import IntegrityError
from pets.boundary import Manifest, ProtectedFrame, SigningKey, read_protected
from pets.boundary._manifest import MANIFEST_KEY, column_digest


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "s": pd.array(["a", None, "ccc"], dtype="string"),
        "i": pd.array([1, None, 3], dtype="Int64"),
        "f": [0.5, np.nan, -2.0],
        "t": pd.to_datetime(["2026-01-01 00:00:00", None, "2026-03-04 05:06:07"]).astype(
            "datetime64[s]").tz_localize("UTC"),
        "b": [True, False, True],
        "c": pd.Categorical(["x", "y", "x"]),
        "raw": pd.Series([b"\x00\x01", None, b"\xff"], dtype=object),
    })


def _manifest(frame: pd.DataFrame) -> Manifest:
    return Manifest.build(frame, dataset="t", policy_digest="ab" * 32, home="EU",
                          created_by="etl@EU", columns=[
                              {"name": c, "role": "metric", "treatment": "keep",
                               "output": "kept"} for c in frame.columns])


class TestDigests:
    def test_parquet_roundtrip_keeps_every_digest(self, tmp_path, signer):
        frame = _frame()
        pf = ProtectedFrame(frame, _manifest(frame).sign(signer))
        pf.write(tmp_path / "x.parquet")
        back, export = read_protected(tmp_path / "x.parquet", signer.public_key)
        assert export is None and back.manifest == pf.manifest
        for c in frame.columns:
            assert column_digest(c, back.data[c]) == column_digest(c, frame[c]), c

    def test_name_type_nulls_and_order_matter(self):
        s = pd.Series([1, 2, 3])
        base = column_digest("x", s)
        assert base != column_digest("y", s)
        assert base != column_digest("x", s.astype(float))
        assert base != column_digest("x", pd.Series([1, None, 3], dtype="Int64"))
        assert base != column_digest("x", s[::-1].reset_index(drop=True))
        assert column_digest("x", pd.Series(["ab", "c"])) != column_digest(
            "x", pd.Series(["a", "bc"]))

    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=1, max_size=20),
           st.data())
    def test_any_changed_value_changes_the_digest(self, values, data):
        s = pd.Series(values, dtype="string")
        i = data.draw(st.integers(0, len(values) - 1))
        new = data.draw(st.one_of(st.none(), st.text(max_size=8)).filter(
            lambda v: v != values[i]))
        changed = s.copy()
        changed[i] = new
        assert column_digest("c", s) != column_digest("c", changed)


class TestDecimalDigests:
    def test_every_digit_of_a_decimal_counts(self):
        from decimal import Decimal

        def digest(v: str) -> str:
            s = pd.Series([Decimal(v)], dtype=pd.ArrowDtype(pa.decimal128(38, 18)))
            return column_digest("d", s)

        assert digest("1.000000000000000001") != digest("1.000000000000000009")
        assert digest("1.5") == digest("1.500")  # the same value at the column's scale

    def test_survives_a_parquet_round_trip(self, tmp_path):
        from decimal import Decimal

        s = pd.Series([Decimal("12.34"), None], dtype=pd.ArrowDtype(pa.decimal128(10, 2)))
        pd.DataFrame({"d": s}).to_parquet(tmp_path / "d.parquet")
        back = pd.read_parquet(tmp_path / "d.parquet", dtype_backend="pyarrow")["d"]
        assert column_digest("d", back) == column_digest("d", s)


class TestSignature:
    def test_sign_and_verify(self, signer):
        m = _manifest(_frame()).sign(signer)
        assert m.signer == signer.key_id and m.verify(signer.public_key) is m

    @pytest.mark.parametrize("change", [
        {"rows": 4}, {"dataset": "other"}, {"policy_digest": "cd" * 32}, {"home": "US"},
        {"k_anonymity": {"k": 99}},
    ])
    def test_any_edit_breaks_the_signature(self, signer, change):
        m = dataclasses.replace(_manifest(_frame()).sign(signer), **change)
        with pytest.raises(IntegrityError, match="manifest signature is not valid"):
            m.verify(signer.public_key)

    def test_edited_column_entry_breaks_the_signature(self, signer):
        m = _manifest(_frame()).sign(signer)
        cols = list(m.columns)
        cols[0] = dataclasses.replace(cols[0], output="generalized")
        with pytest.raises(IntegrityError):
            dataclasses.replace(m, columns=tuple(cols)).verify(signer.public_key)

    def test_wrong_key_and_unsigned_are_refused(self, signer):
        m = _manifest(_frame())
        with pytest.raises(IntegrityError):
            m.verify(signer.public_key)
        with pytest.raises(IntegrityError):
            m.sign(SigningKey.generate()).verify(signer.public_key)

    def test_any_of_several_keys_after_a_rotation(self, signer):
        m = _manifest(_frame()).sign(signer)
        assert m.verify([SigningKey.generate().public_key, signer.public_key]) is m
        with pytest.raises(IntegrityError):
            m.verify([SigningKey.generate().public_key])

    def test_json_roundtrip(self, signer):
        m = _manifest(_frame()).sign(signer)
        assert Manifest.from_json(m.to_json()) == m
        with pytest.raises(IntegrityError, match="malformed manifest"):
            Manifest.from_json('{"format": "nope"}')


class TestFileTampering:
    def _write(self, tmp_path, signer):
        frame = _frame()
        path = tmp_path / "x.parquet"
        ProtectedFrame(frame, _manifest(frame).sign(signer)).write(path)
        return path

    def test_a_raw_column_moved_into_the_index_is_refused(self, tmp_path, signer):
        path = self._write(tmp_path, signer)
        table = pq.read_table(path)
        frame = table.to_pandas()
        frame.index = pd.Index([f"+4930{i:07d}" for i in range(len(frame))], name="phone")
        smuggled = pa.Table.from_pandas(frame, preserve_index=True)  # pandas metadata: index
        pq.write_table(smuggled.replace_schema_metadata(
            {**smuggled.schema.metadata, MANIFEST_KEY: table.schema.metadata[MANIFEST_KEY]}),
            path)
        assert "phone" in pq.read_table(path).column_names
        with pytest.raises(IntegrityError, match=r"^data does not match its manifest$"):
            read_protected(path, signer.public_key)

    @pytest.mark.parametrize("pandas_meta", [b"{broken", b'{"columns": 3}', b"\xff\xfe"])
    def test_altered_pandas_metadata_is_an_integrity_error(self, tmp_path, signer,
                                                            pandas_meta):
        path = self._write(tmp_path, signer)
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, b"pandas": pandas_meta}), path)
        with pytest.raises(IntegrityError, match=r"^data does not match its manifest$"):
            read_protected(path, signer.public_key)
        with pytest.raises(IntegrityError, match=r"^data does not match its manifest$"):
            ProtectedFrame.read(path)

    def test_changed_value_in_file_is_caught(self, tmp_path, signer):
        path = self._write(tmp_path, signer)
        table = pq.read_table(path)
        frame = table.to_pandas()
        frame.loc[0, "f"] = 0.25
        import pyarrow as pa

        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False)
                       .replace_schema_metadata(table.schema.metadata), path)
        with pytest.raises(IntegrityError, match="data does not match its manifest"):
            read_protected(path, signer.public_key)

    def test_dropped_row_is_caught(self, tmp_path, signer):
        path = self._write(tmp_path, signer)
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 2), path)
        with pytest.raises(IntegrityError):
            read_protected(path, signer.public_key)

    def test_rewritten_manifest_is_caught(self, tmp_path, signer):
        path = self._write(tmp_path, signer)
        table = pq.read_table(path)
        doc = json.loads(table.schema.metadata[MANIFEST_KEY])
        doc["columns"][0]["output"] = "generalized"
        meta = {**table.schema.metadata, MANIFEST_KEY: json.dumps(doc).encode()}
        pq.write_table(table.replace_schema_metadata(meta), path)
        with pytest.raises(IntegrityError, match="manifest signature is not valid"):
            read_protected(path, signer.public_key)

    def test_file_without_manifest_is_refused(self, tmp_path, signer):
        path = tmp_path / "raw.parquet"
        _frame().to_parquet(path)
        with pytest.raises(IntegrityError, match="no pets manifest"):
            read_protected(path, signer.public_key)
        with pytest.raises(IntegrityError, match="no pets manifest"):
            ProtectedFrame.read(path)


class TestRepr:
    def test_text_and_html_repr_show_treatments_not_data_secrets(self, signer):
        frame = _frame()
        pf = ProtectedFrame(frame, _manifest(frame).sign(signer))
        assert "ProtectedFrame(dataset='t', rows=3" in repr(pf)
        html = pf._repr_html_()
        assert "<table>" in html and "keep" in html and signer.key_id in html


class TestHostileManifest:
    @pytest.mark.parametrize("edit", [
        lambda d: d["columns"][0].update(params=[1, 2]),
        lambda d: d["columns"][0].update(name=5),
        lambda d: d.update(rows="3"),
        lambda d: d["columns"].append({"nope": 1}),
        lambda d: d.update(extra=1),
    ])
    def test_malformed_shapes_are_integrity_errors(self, signer, edit):
        d = json.loads(_manifest(_frame()).sign(signer).to_json())
        edit(d)
        with pytest.raises(IntegrityError, match="malformed manifest"):
            Manifest.from_json(json.dumps(d))
