"""Parquet datasets: many files and row groups, atomic completion, no partial output."""

from __future__ import annotations

from tests.engines.conftest import require_dask

require_dask()

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from pets import InputError  # noqa: E402
from pets.datasets import synthetic_events  # noqa: E402
from pets.engines._parquet import read_dataset, write_dataset  # noqa: E402


@pytest.fixture
def events() -> pd.DataFrame:
    return synthetic_events(3_000, n_users=200, seed=3)


def _fail_on_third(frame: pd.DataFrame) -> pd.DataFrame:
    if frame["n"].min() >= 200:
        raise RuntimeError("worker lost")
    return frame


class TestWriteDataset:
    def test_roundtrip_many_files_and_row_groups(self, tmp_path, events):
        ddf = dd.from_pandas(events, npartitions=4)
        with dask.config.set(scheduler="synchronous"):
            n = write_dataset(ddf, tmp_path / "out", row_group_size=300, progress=False)
        files = sorted((tmp_path / "out").iterdir())
        assert n == len(events) and len(files) == 4
        assert all(pq.ParquetFile(f).num_row_groups >= 2 for f in files)
        back = read_dataset(tmp_path / "out").compute().reset_index(drop=True)
        # Parquet has no second unit: timestamps come back in ms, as with pandas.to_parquet.
        expected = events.astype({"ts": "datetime64[ms, UTC]"}).reset_index(drop=True)
        pd.testing.assert_frame_equal(back, expected)

    def test_existing_destination_is_refused(self, tmp_path, events):
        (tmp_path / "out").mkdir()
        with pytest.raises(InputError, match="already exists"):
            write_dataset(dd.from_pandas(events, npartitions=2), tmp_path / "out", progress=False)

    def test_failed_partition_leaves_no_output_and_no_temp_dir(self, tmp_path):
        frame = pd.DataFrame({"n": range(300)})
        ddf = dd.from_pandas(frame, npartitions=3).map_partitions(_fail_on_third,
                                                                  meta=frame.iloc[:0])
        with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError,
                                                                     match="worker lost"):
            write_dataset(ddf, tmp_path / "out", progress=False)
        assert list(tmp_path.iterdir()) == []

    def test_failed_overwrite_keeps_the_previous_dataset(self, tmp_path):
        frame = pd.DataFrame({"n": range(300)})
        with dask.config.set(scheduler="synchronous"):
            write_dataset(dd.from_pandas(frame.iloc[:100], npartitions=1), tmp_path / "out",
                          progress=False)
            bad = dd.from_pandas(frame, npartitions=3).map_partitions(_fail_on_third,
                                                                      meta=frame.iloc[:0])
            with pytest.raises(RuntimeError):
                write_dataset(bad, tmp_path / "out", overwrite=True, progress=False)
        assert read_dataset(tmp_path / "out").compute()["n"].tolist() == list(range(100))
        assert [p.name for p in tmp_path.iterdir()] == ["out"]

    def test_overwrite_replaces_when_complete(self, tmp_path, events):
        with dask.config.set(scheduler="synchronous"):
            write_dataset(dd.from_pandas(events.iloc[:10], npartitions=1), tmp_path / "out",
                          progress=False)
            write_dataset(dd.from_pandas(events, npartitions=2), tmp_path / "out",
                          overwrite=True, progress=False)
        assert len(read_dataset(tmp_path / "out").compute()) == len(events)
        assert [p.name for p in tmp_path.iterdir()] == ["out"]

    def test_empty_partitions_keep_the_schema(self, tmp_path, events):
        ddf = dd.from_pandas(events, npartitions=3)
        ddf = ddf[ddf["event"] == "no-such-event"]
        with dask.config.set(scheduler="synchronous"):
            assert write_dataset(ddf, tmp_path / "out", progress=False) == 0
        back = read_dataset(tmp_path / "out").compute()
        assert list(back.columns) == list(events.columns) and len(back) == 0


class TestReadDataset:
    def test_missing_input_names_the_path(self, tmp_path):
        with pytest.raises(InputError, match=r"no Parquet input at .*nope"):
            read_dataset(tmp_path / "nope")

    def test_list_of_files(self, tmp_path, events):
        events.iloc[:1000].to_parquet(tmp_path / "a.parquet", index=False)
        events.iloc[1000:].to_parquet(tmp_path / "b.parquet", index=False)
        ddf = read_dataset([tmp_path / "a.parquet", tmp_path / "b.parquet"])
        assert ddf.npartitions == 2
        assert ddf.compute()["user_id"].tolist() == events["user_id"].tolist()
