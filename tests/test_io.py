import pytest

from pets import InputError
from pets._io import atomic_directory, atomic_path


class TestAtomicDirectory:
    def test_failure_leaves_nothing_and_keeps_the_old_directory(self, tmp_path):
        dest = tmp_path / "ds"
        dest.mkdir()
        (dest / "old").write_text("kept")
        with pytest.raises(RuntimeError), atomic_directory(dest, overwrite=True) as tmp:
            (tmp / "new").write_text("partial")
            raise RuntimeError("boom")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
        assert [p.name for p in dest.iterdir()] == ["old"]

    def test_overwrite_swaps_in_the_complete_directory(self, tmp_path):
        dest = tmp_path / "ds"
        dest.mkdir()
        (dest / "old").write_text("x")
        with atomic_directory(dest, overwrite=True) as tmp:
            (tmp / "new").write_text("y")
        assert [p.name for p in dest.iterdir()] == ["new"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    def test_existing_destination_refused_without_overwrite(self, tmp_path):
        (tmp_path / "ds").mkdir()
        with pytest.raises(InputError, match="already exists"), atomic_directory(tmp_path / "ds"):
            pass


def test_atomic_path_failure_removes_the_temp_file(tmp_path):
    with pytest.raises(ValueError), atomic_path(tmp_path / "f") as tmp:
        tmp.write_text("partial")
        raise ValueError
    assert list(tmp_path.iterdir()) == []
