"""``keep_freed_memory``: glibc's malloc keeps a training step's freed blocks for the next one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from pyroseq.runs.allocator import MMAP_THRESHOLD, keep_freed_memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Whether malloc serves a block of 30 MiB by its own mmap: the IS_MMAPPED bit (2) of the size word that
# glibc keeps just before the block. Asked once per process, after ``call``: glibc's default threshold
# (128 KiB) maps it, and so would any threshold glibc raised itself (it raises its own to the size of a freed
# mapped block, so a second probe in the same process would see the heap); the raised threshold (32 MiB)
# takes it from the heap.
PROBE = textwrap.dedent(
    """
    import ctypes
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    {call}
    block = libc.malloc(30 << 20)
    print(bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2))
    """
)
KEEP = "from pyroseq.runs.allocator import keep_freed_memory; print(keep_freed_memory({}))"


def mmapped(call: str, env: dict[str, str] | None = None) -> list[str]:
    """What ``call`` printed, and whether the block after it was mapped, in a fresh Python."""
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | (env or {})
    code = PROBE.format(call=call)
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@glibc
def test_a_block_below_the_threshold_comes_from_the_heap_once_set():
    assert mmapped("") == ["True"]
    assert mmapped(KEEP.format("")) == ["True", "False"]


@glibc
def test_the_users_glibc_tunables_stand_unless_overridden():
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}
    assert mmapped(KEEP.format(""), tunables) == ["False", "True"]
    assert mmapped(KEEP.format("override=True"), tunables) == ["True", "False"]


@glibc
def test_the_command_line_sets_it_for_its_process():
    command = "from pyroseq.cli.main import cli; "
    command += "cli(['data', 'words', '--source', 'sample'], standalone_mode=False)"
    assert mmapped(command)[-1] == "False"
    # the same command with the call taken out: the block is mapped (nothing else in it raised the threshold)
    patched = command.replace("; cli(", "; import pyroseq.cli.main as m; m.keep_freed_memory = bool; cli(")
    assert mmapped(patched)[-1] == "True"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mmap_threshold": -1}, "mmap_threshold"),
        ({"mmap_threshold": MMAP_THRESHOLD + 1}, "mmap_threshold"),
        ({"mmap_threshold": 1.5}, "mmap_threshold"),
        ({"trim_threshold": 2**31}, "trim_threshold"),
        ({"trim_threshold": True}, "trim_threshold"),
    ],
)
def test_a_bad_threshold_is_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        keep_freed_memory(**kwargs)
