"""Protected datasets on disk: the receiver's check of an exported dataset, part by part."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from pets import Context, InputError, IntegrityError
from pets.boundary import SigningKey, export
from pets.boundary._dataset import (
    DatasetIndex,
    files_digest,
    iter_parts,
    read_index,
    verify_dataset,
    verify_structure,
)
from pets.boundary._manifest import EXPORT_KEY
from tests.boundary.test_export import SAFE, _dask_dataset, _flip


@pytest.fixture
def dataset(raw, policy, keys, tmp_path):
    import pandas as pd

    big = pd.concat([raw] * 5, ignore_index=True).assign(
        user_id=pd.array([f"u{i:03d}" for i in range(60)], dtype="string"))
    return _dask_dataset(big, policy, keys, tmp_path / "protected" / "users")


@pytest.fixture
def exported(dataset, policy, signer, log, tmp_path, keys):
    dest = tmp_path / "us" / "users"
    export(dataset, "US", dest, policy=policy, keys=keys,
           context=Context("EU", principal="etl"), audit=log, columns=SAFE)
    return dest


class TestVerifyDataset:
    def test_protected_and_exported_datasets_verify_with_the_public_key(self, dataset,
                                                                       exported, signer):
        pem = signer.public_pem()
        a = verify_dataset(dataset, pem)
        b = verify_dataset(exported, pem)
        assert a == b and a.rows == 60
        assert read_index(dataset).export is None
        assert read_index(exported).export["columns"] == SAFE

    def test_another_key_is_refused(self, exported):
        with pytest.raises(IntegrityError, match="manifest signature is not valid"):
            verify_dataset(exported, SigningKey.generate().public_key)

    def test_not_a_dataset(self, tmp_path, signer):
        with pytest.raises(InputError, match="not a pets protected dataset"):
            verify_dataset(tmp_path, signer.public_key)

    @pytest.mark.parametrize("doc", ["{", "[]", '{"format": "pets.dataset/2"}',
                                     '{"format": "pets.dataset/1", "manifest": {}, "parts": []}'])
    def test_malformed_dataset_manifest(self, exported, signer, doc):
        (exported / "_manifest.json").write_text(doc)
        with pytest.raises(IntegrityError, match="malformed dataset manifest"):
            verify_dataset(exported, signer.public_key)

    def test_listing_outside_the_directory_is_malformed(self, exported, signer):
        doc = json.loads((exported / "_manifest.json").read_text())
        doc["parts"][0]["file"] = "../part.00000.parquet"
        (exported / "_manifest.json").write_text(json.dumps(doc))
        with pytest.raises(IntegrityError, match="malformed dataset manifest"):
            verify_dataset(exported, signer.public_key)


class TestReceiverDetectsTampering:
    """What arrived abroad is checked with the public key alone; every edit fails."""

    def test_a_column_dropped_from_one_part(self, exported, signer):
        part = exported / "part.00001.parquet"
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["email"]), part)
        with pytest.raises(IntegrityError, match="dataset does not match its manifest"):
            verify_dataset(exported, signer.public_key)

    def test_a_column_added_back_to_the_record_only(self, exported, signer):
        doc = json.loads((exported / "_manifest.json").read_text())
        doc["export"]["columns"] = ["user_id", "email", "phone", "country", "minutes"]
        (exported / "_manifest.json").write_text(json.dumps(doc))
        with pytest.raises(IntegrityError, match="export record signature is not valid"):
            verify_dataset(exported, signer.public_key)

    def test_an_edited_value(self, exported, signer):
        part = exported / "part.00000.parquet"
        table = pq.read_table(part)
        pq.write_table(table, part, compression="none", use_dictionary=False,
                       write_statistics=False)  # each value once, in its page
        verify_dataset(exported, signer.public_key)  # same values, other bytes: still valid
        value = table.column("user_id")[2].as_py().encode()
        _flip(part, part.read_bytes().index(value) + len(value) // 2)
        with pytest.raises(IntegrityError, match=r"^data does not match its manifest$"):
            verify_dataset(exported, signer.public_key)

    def test_a_removed_part(self, exported, signer):
        (exported / "part.00002.parquet").unlink()
        with pytest.raises(IntegrityError, match="dataset does not match its manifest"):
            verify_dataset(exported, signer.public_key)

    def test_a_part_record_that_differs(self, exported, signer):
        part = exported / "part.00000.parquet"
        table = pq.read_table(part)
        record = json.loads(table.schema.metadata[EXPORT_KEY])
        record["destination"] = "SG"
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, EXPORT_KEY: json.dumps(record).encode()}), part)
        with pytest.raises(IntegrityError, match="dataset does not match its manifest"):
            verify_dataset(exported, signer.public_key)


class TestOnePartAtATime:
    def test_footers_first_then_each_part_when_asked(self, dataset, signer):
        calls: list[tuple[str, object]] = []

        def reader(file, columns):
            calls.append((file.name, None if columns is None else list(columns)))
            return (pq.read_schema(file).empty_table() if columns == []
                    else pq.read_table(file))

        index = read_index(dataset)
        parts = verify_structure(index, signer.public_key, reader=reader)
        assert calls == [(f"part.0000{i}.parquet", []) for i in range(3)]  # footers only
        it = iter_parts(index, parts, reader=reader)
        next(it)
        assert calls[3:] == [("part.00000.parquet", None)]  # one part read, not all
        assert len(list(it)) == 2

    def test_a_part_replaced_after_the_footer_check_is_refused(self, dataset, signer,
                                                               tmp_path):
        index = read_index(dataset)
        parts = verify_structure(index, signer.public_key)
        shutil.copy(dataset / "part.00001.parquet", dataset / "part.00000.parquet")
        with pytest.raises(IntegrityError, match="dataset does not match its manifest"):
            list(iter_parts(index, parts))


class TestFilesDigest:
    def test_order_of_the_mapping_does_not_matter_but_every_file_does(self):
        a = files_digest({"part.00000.parquet": "aa", "_manifest.json": "bb"})
        assert a == files_digest({"_manifest.json": "bb", "part.00000.parquet": "aa"})
        assert a != files_digest({"part.00000.parquet": "aa"})
        assert a != files_digest({"part.00000.parquet": "ab", "_manifest.json": "bb"})
        assert a != files_digest({"part.00001.parquet": "aa", "_manifest.json": "bb"})

    def test_index_round_trips(self, exported):
        index = read_index(exported)
        again = DatasetIndex(index.root, index.manifest, index.parts, index.encrypted,
                             index.export)
        assert json.loads(again.to_json()) == json.loads(
            (exported / "_manifest.json").read_text())


def _value_bytes(table):
    return {k: [v.encode() if isinstance(v, str) else v for v in col]
            for k, col in table.to_pydict().items()}


class TestAnyFlippedByte:
    """Property: a flipped byte anywhere is refused, or changes nothing the receiver gets."""

    def test_in_a_part_file(self, exported, signer):
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        part = exported / "part.00001.parquet"
        original = part.read_bytes()
        expected = _value_bytes(pq.read_table(part))

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(offset=st.integers(0, len(original) - 1), bit=st.integers(0, 7))
        def flipped(offset, bit):
            data = bytearray(original)
            data[offset] ^= 1 << bit
            part.write_bytes(bytes(data))
            try:
                verify_dataset(exported, signer.public_key)
            except IntegrityError:
                return
            # accepted: then every value is the one the home signed. A flip in the metadata may
            # change how a reader types a value (a pandas dtype; string shown as binary: digests
            # treat both as the same bytes), never the value.
            assert _value_bytes(pq.read_table(part)) == expected

        try:
            flipped()
        finally:
            part.write_bytes(original)
        verify_dataset(exported, signer.public_key)

    def test_in_the_dataset_manifest(self, exported, signer):
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        file = exported / "_manifest.json"
        original = file.read_bytes()
        manifest = verify_dataset(exported, signer.public_key)
        record = read_index(exported).export

        @settings(max_examples=80, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(offset=st.integers(0, len(original) - 1), bit=st.integers(0, 7))
        def flipped(offset, bit):
            data = bytearray(original)
            data[offset] ^= 1 << bit
            file.write_bytes(bytes(data))
            try:
                got = verify_dataset(exported, signer.public_key)
            except IntegrityError:
                return
            assert got == manifest and read_index(exported).export == record

        try:
            flipped()
        finally:
            file.write_bytes(original)


# -- adversarial review: the directory holds the listed parts and nothing else -------------------

def _raw_part(directory, name):
    """A plain Parquet file of raw-looking rows with the exported columns (what a reader of the
    directory, e.g. ``pandas.read_parquet(dir)``, would pick up as more rows)."""
    import pandas as pd

    table = pq.read_table(directory / "part.00000.parquet")
    frame = pd.DataFrame({c: ["raw"] * 3 if c != "minutes" else [1.0] * 3
                          for c in table.column_names})
    pq.write_table(pa_table(frame), directory / name)


def pa_table(frame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def _symlinked_part(directory, tmp_path):
    outside = tmp_path / "outside.parquet"
    shutil.copy(directory / "part.00001.parquet", outside)
    (directory / "part.00001.parquet").unlink()
    (directory / "part.00001.parquet").symlink_to(outside)


def _symlinked_manifest(directory, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copy(directory / "_manifest.json", outside)
    (directory / "_manifest.json").unlink()
    (directory / "_manifest.json").symlink_to(outside)


def _fifo_part(directory, tmp_path):
    import os

    (directory / "part.00002.parquet").unlink()
    os.mkfifo(directory / "part.00002.parquet")


def _renamed_part(directory, tmp_path):
    """Part 2 renamed and listed under its new name: the signed chain is unchanged."""
    (directory / "part.00002.parquet").rename(directory / "part.00009.parquet")
    doc = json.loads((directory / "_manifest.json").read_text())
    doc["parts"][2]["file"] = "part.00009.parquet"
    (directory / "_manifest.json").write_text(json.dumps(doc))


def _subdirectory(directory, tmp_path):
    (directory / "more").mkdir()
    _raw_part(directory, "more/part.00000.parquet")


def _listed_twice(directory, tmp_path):
    doc = json.loads((directory / "_manifest.json").read_text())
    doc["parts"].append(doc["parts"][0])
    (directory / "_manifest.json").write_text(json.dumps(doc))


def _duplicated_under_another_name(directory, tmp_path):
    shutil.copy(directory / "part.00000.parquet", directory / "part.00003.parquet")
    doc = json.loads((directory / "_manifest.json").read_text())
    doc["parts"].append({"file": "part.00003.parquet", "rows": doc["parts"][0]["rows"]})
    (directory / "_manifest.json").write_text(json.dumps(doc))


def _truncated_part(directory, tmp_path):
    part = directory / "part.00001.parquet"
    part.write_bytes(part.read_bytes()[:-100])


def _appended_part(directory, tmp_path):
    part = directory / "part.00001.parquet"
    part.write_bytes(part.read_bytes() + b"raw,rows,appended\n")


TAMPERED_DIRECTORY = {
    "part listed twice": _listed_twice,
    "part duplicated under another name": _duplicated_under_another_name,
    "truncated part": _truncated_part,
    "bytes appended to a part": _appended_part,
    "trailing space": lambda d, t: _raw_part(d, "part.00001.parquet "),
    "hidden file": lambda d, t: _raw_part(d, ".part.parquet"),
    "underscore file": lambda d, t: _raw_part(d, "_part.parquet"),
    "upper-case suffix": lambda d, t: _raw_part(d, "part.00003.PARQUET"),
    "upper-case name": lambda d, t: _raw_part(d, "PART.00001.parquet"),
    "other suffix": lambda d, t: _raw_part(d, "extra.parq"),
    "sub-directory": _subdirectory,
    "symlinked part": _symlinked_part,
    "symlinked _manifest.json": _symlinked_manifest,
    "fifo part": _fifo_part,
    "renamed part": _renamed_part,
}


class TestDirectoryHoldsOnlyTheListedParts:
    """Anything a directory reader would pick up besides the listed parts is refused."""

    @pytest.mark.parametrize("attack", sorted(TAMPERED_DIRECTORY))
    def test_receiver_refuses(self, exported, signer, tmp_path, attack):
        TAMPERED_DIRECTORY[attack](exported, tmp_path)
        with pytest.raises(IntegrityError, match=r"^dataset does not match its manifest$"):
            verify_dataset(exported, signer.public_key)

    def test_the_untouched_export_reads_as_exactly_its_rows(self, exported, signer):
        import pandas as pd

        verify_dataset(exported, signer.public_key)
        assert len(pd.read_parquet(exported)) == 60


class TestExportRecordIsSigned:
    """The export record (destination, columns, who, when) is signed by the gate with the
    boundary's key and bound to the dataset manifest: edited consistently (in
    ``_manifest.json`` and every part) it no longer verifies, and the signed audit log's
    files digest does not match either."""

    def test_a_consistently_edited_destination_is_refused(
            self, exported, signer, log):
        entry = [e for e in log.entries() if e["kind"] == "boundary.export"][-1]

        def digest():
            import hashlib

            return files_digest({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                 for p in exported.iterdir()})

        assert digest() == entry["fields"]["digest"]
        doc = json.loads((exported / "_manifest.json").read_text())
        doc["export"]["destination"] = "SG"
        (exported / "_manifest.json").write_text(json.dumps(doc))
        for part in exported.glob("part.*.parquet"):
            table = pq.read_table(part)
            pq.write_table(table.replace_schema_metadata(
                {**table.schema.metadata, EXPORT_KEY: json.dumps(doc["export"]).encode()}),
                part)
        with pytest.raises(IntegrityError, match="export record signature is not valid"):
            verify_dataset(exported, signer.public_key)
        assert digest() != entry["fields"]["digest"]  # not what the gate let out
