"""featpipe.atomic: whole-file writes that leave the previous file on any failure, with one-line errors."""

import errno
import os
import subprocess
import sys

import pytest

from featpipe import atomic
from featpipe.errors import FeatpipeError
from hostile_fixtures import small_disk  # noqa: F401  (a fixture)


def test_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "x.txt"
    atomic.write_text(path, "one")
    atomic.write_text(path, "two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["x.txt"]


def test_an_error_midway_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "previous" and os.listdir(tmp_path) == ["x.csv"]


def test_keras_style_suffixes_are_kept_on_the_temporary_name(tmp_path):
    for name in ("model.keras", "best-3.weights.h5"):
        with atomic.atomic_path(tmp_path / name) as tmp:
            assert tmp.name.endswith(name[name.index("."):]) and tmp.parent == tmp_path
            tmp.write_bytes(b"x")
    assert sorted(os.listdir(tmp_path)) == ["best-3.weights.h5", "model.keras"]


def test_full_disk_is_one_line_and_keeps_the_previous_file(small_disk):
    path = small_disk / "big.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(FeatpipeError, match=f"^no space left on device writing {path}$"):
        atomic.write_bytes(path, b"\0" * (8 << 20))
    assert path.read_bytes() == b"old" and os.listdir(small_disk) == ["big.bin"]


def test_injected_enospc_from_a_library_writer(tmp_path, monkeypatch):
    """Libraries that wrap ENOSPC in their own errors (h5py: RuntimeError) are recognised by the free space."""
    monkeypatch.setattr(atomic, "_is_disk_full", lambda directory: True)
    with pytest.raises(FeatpipeError, match="^no space left on device writing .*model.keras$"):
        with atomic.atomic_path(tmp_path / "model.keras"):
            raise RuntimeError("Disable slist on flush dest failure")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "no space left on device"),
                                           (errno.EROFS, "read-only file system"),
                                           (errno.EACCES, "permission denied")])
def test_os_errors_become_one_line(tmp_path, monkeypatch, code, message):
    def fail(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(FeatpipeError, match=f"^{message} writing {tmp_path / 'x.txt'}$"):
        atomic.write_text(tmp_path / "x.txt", "text")
    assert not os.listdir(tmp_path)


def test_unwritable_destinations_fail_fast(tmp_path):
    with pytest.raises(FeatpipeError, match="no such directory"):
        atomic.check_writable("/nonexistent/dir/x.csv")
    with pytest.raises(FeatpipeError, match="no such directory"):
        atomic.write_text("/nonexistent/dir/x.csv", "x")
    with pytest.raises(FeatpipeError, match="is a directory"):
        atomic.check_writable(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(FeatpipeError, match="not a directory"):
        atomic.make_dirs(tmp_path / "file")


def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind mount instead
        if subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only mount here")
    else:
        ro.chmod(0o555)
    try:
        with pytest.raises(FeatpipeError, match="(read-only file system|permission denied)"):
            atomic.check_writable(ro / "x.csv")
        with pytest.raises(FeatpipeError, match=f"(read-only file system|permission denied) writing {ro / 'x.csv'}"):
            atomic.write_text(ro / "x.csv", "x")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)
        ro.chmod(0o755)


# --- issue 20, item 1: what a user names is what gets written ----------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_new_files_get_the_users_umask(tmp_path, mask):
    previous = os.umask(mask)
    try:
        atomic.write_text(tmp_path / "new.json", "{}")
        with atomic.atomic_path(tmp_path / "model.keras") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(previous)
    for name in ("new.json", "model.keras"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "shared.csv"
    path.write_text("old")
    path.chmod(0o640)
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real" / "out.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic.check_writable(link)
    atomic.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new" and link.read_text() == "new"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "real" / "later.csv")
    atomic.write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.csv").read_text() == "made"
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(FeatpipeError, match="^symbolic link loop: "):
        atomic.write_text(loop, "x")


def test_a_fifo_is_written_through_to_its_reader(tmp_path):
    import threading

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    atomic.write_bytes(fifo, b"a,b\n" * 100_000)  # more than a pipe buffer
    reader.join(10)
    assert received == [b"a,b\n" * 100_000]
    assert fifo.exists() and not fifo.is_file() and os.listdir(tmp_path) == ["out.fifo"]


def test_a_fifo_nobody_reads_is_one_line_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "FIFO_WAIT_SECONDS", 0.2)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(FeatpipeError, match=f"^no process opened the FIFO {fifo} for reading within"):
        atomic.write_text(fifo, "x")
    assert not fifo.is_file() and os.listdir(tmp_path) == ["out.fifo"]


def test_character_devices_are_written_not_replaced():
    atomic.check_writable("/dev/null")  # no write permission on /dev is needed
    atomic.write_text("/dev/null", "discarded")
    with atomic.atomic_path("/dev/null") as tmp:  # the by-name route libraries use
        tmp.write_bytes(b"x")
    assert not os.path.isfile("/dev/null")
    if os.path.exists("/dev/full"):
        with pytest.raises(FeatpipeError, match="^no space left on device writing /dev/full$"):
            atomic.write_text("/dev/full", "x")
        assert not os.path.isfile("/dev/full")


def test_dev_stdout_is_written_through_even_when_it_is_a_pipe():
    script = "from featpipe import atomic; atomic.write_text('/dev/stdout', 'through the pipe\\n')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "through the pipe\n", done.stderr


def test_a_block_device_is_refused_not_overwritten(tmp_path):
    import stat

    node = tmp_path / "disk"
    try:  # an unbound loop-device number: harmless even if it were opened
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 250))
    except (PermissionError, OSError):
        pytest.skip("cannot make a device node here (needs root)")
    for write in (atomic.check_writable, lambda p: atomic.write_text(p, "x")):
        with pytest.raises(FeatpipeError, match=f"^refusing to write {node}: it is a block device"):
            write(node)
    assert stat.S_ISBLK(node.stat().st_mode)
