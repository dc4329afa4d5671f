import os
import signal

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


class TestCheckOutput:
    """pets._io.check_output: an output never destroys an input or what pets keeps."""

    @pytest.fixture
    def d(self, tmp_path):
        (tmp_path / "in.csv").write_text("id\n1\n")
        (tmp_path / "keyring").mkdir()
        (tmp_path / "keyring" / "k.json").write_text("{}")
        (tmp_path / "sub").mkdir()
        return tmp_path

    def test_a_new_path_is_returned_resolved(self, d):
        from pets._io import check_output

        (d / "link").symlink_to(d / "sub")
        assert check_output(d / "link" / "out.csv", inputs=[d / "in.csv"]) == \
            (d / "sub" / "out.csv").resolve()

    @pytest.mark.parametrize("make, fragment", [
        (lambda d: d / "in.csv", "is the input"),
        (lambda d: d / "sub" / ".." / "in.csv", "is the input"),
        (lambda d: (d / "ln").symlink_to(d / "in.csv") or d / "ln", "is the input"),
        (lambda d: (d / "lsub").symlink_to(d) or d / "lsub" / "in.csv", "is the input"),
        (lambda d: os.link(d / "in.csv", d / "hard") or d / "hard", "is a hard link to the input"),
    ])
    def test_the_input_is_refused_even_with_overwrite(self, d, make, fragment):
        from pets._io import check_output

        with pytest.raises(InputError, match=fragment) as err:
            check_output(make(d), option="OUT", inputs=[d / "in.csv"], overwrite=True)
        assert str(err.value).startswith("OUT ") and str(d.resolve() / "in.csv") in str(err.value)

    def test_an_output_inside_or_containing_an_input_directory(self, d):
        from pets._io import check_output

        with pytest.raises(InputError, match="is inside the input"):
            check_output(d / "sub" / "x", inputs=[d / "sub"])
        with pytest.raises(InputError, match="contains the input"):
            check_output(d / "sub", inputs=[d / "sub" / "a.parquet"], overwrite=True)

    @pytest.mark.parametrize("make, fragment", [
        (lambda d: d / "keyring", "is the protected location"),
        (lambda d: d / "keyring" / "k.json", "is inside the protected location"),
        (lambda d: d / "keyring" / "new.json", "is inside the protected location"),
        (lambda d: d / "sub" / ".." / "keyring" / "k.json", "is inside the protected location"),
        (lambda d: (d / "lk").symlink_to(d / "keyring") or d / "lk" / "new", "is inside"),
        (lambda d: os.link(d / "keyring" / "k.json", d / "h") or d / "h",
         "is a hard link to a file under the protected location"),
        (lambda d: (d / "dangling").symlink_to(d / "keyring" / "nope") or d / "dangling",
         "is inside the protected location"),
    ])
    def test_protected_locations_are_refused_even_with_overwrite(self, d, make, fragment):
        from pets._io import check_output

        with pytest.raises(InputError, match=fragment):
            check_output(make(d), protected=[d / "keyring"], overwrite=True)
        assert (d / "keyring" / "k.json").read_text() == "{}"

    def test_an_output_containing_a_protected_location(self, d):
        from pets._io import check_output

        with pytest.raises(InputError, match="contains the protected location"):
            check_output(d, protected=[d / "keyring" / "k.json"], overwrite=True)

    def test_an_existing_file_needs_overwrite(self, d):
        from pets._io import check_output

        (d / "old.csv").write_text("x")
        with pytest.raises(InputError, match=r"already exists.*--overwrite"):
            check_output(d / "old.csv")
        assert check_output(d / "old.csv", overwrite=True) == (d / "old.csv").resolve()

    @pytest.mark.parametrize("bad", ["", "a\0b"])
    def test_unusable_paths(self, bad):
        from pets._io import check_output

        with pytest.raises(InputError, match="not a usable path"):
            check_output(bad)


class TestSignals:
    @pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
    def test_a_signal_unwinds_and_removes_the_temp_file(self, tmp_path, signo):
        from pets._io import Interrupted, signals_raise

        with pytest.raises(Interrupted) as err, signals_raise(), \
                atomic_path(tmp_path / "plain.csv", mode=0o600) as tmp:
            tmp.write_text("secret plaintext")
            assert oct(tmp.stat().st_mode & 0o777) == "0o600"
            os.kill(os.getpid(), signo)
        assert err.value.exit_code == 128 + signo
        assert list(tmp_path.iterdir()) == []

    def test_a_signal_in_a_critical_section_is_raised_at_its_end(self, tmp_path):
        from pets._io import Interrupted, _deferred, signals_raise

        done = []
        with pytest.raises(Interrupted), signals_raise():
            with _deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append(1)
            done.append(2)
        assert done == [1]

    def test_atomic_directory_is_removed_on_a_signal(self, tmp_path):
        from pets._io import Interrupted, signals_raise

        with pytest.raises(Interrupted), signals_raise(), \
                atomic_directory(tmp_path / "ds") as tmp:
            (tmp / "part.0").write_text("rows")
            assert oct(tmp.stat().st_mode & 0o777) == "0o700"
            os.kill(os.getpid(), signal.SIGHUP)
        assert list(tmp_path.iterdir()) == []

    def test_handlers_are_restored(self):
        from pets._io import signals_raise

        before = signal.getsignal(signal.SIGTERM)
        with signals_raise():
            assert signal.getsignal(signal.SIGTERM) is not before
        assert signal.getsignal(signal.SIGTERM) is before
