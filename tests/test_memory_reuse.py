"""Memory reuse (glibc): freed large blocks come back without page faults; the command turns it
on for its own process only. Each check runs in a child process so this one keeps glibc's
defaults."""

import platform
import subprocess
import sys
import textwrap

import pytest

from mask2former.memory_reuse import memory_reuse_wanted

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Repeats a small workload of 40-64 MB blocks (what a forward pass does at large sizes) and
# prints the page faults of its last rounds: with glibc's defaults every round takes fresh pages
# (~61,000 faults); with reuse the heap settles after a few rounds. torch allocates with
# posix_memalign, whose padding keeps glibc from reusing a block of exactly the same size at
# once, hence the warm-up rounds.
CHILD = textwrap.dedent(
    """
    import resource, sys, torch
    import mask2former
    if sys.argv[1] == "on":
        assert mask2former.enable_memory_reuse() is True
        assert mask2former.enable_memory_reuse() is True  # a second call is harmless
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def work():
        a = torch.ones(10 * 2**20)
        b = torch.ones(16 * 2**20)
        a = a + 1
        c = torch.ones(12 * 2**20) + b[: 12 * 2**20]
        assert float(c[-1]) == 2.0 and float(a[0]) == 2.0
    for _ in range(8):
        work()
    before = faults()
    for _ in range(4):
        work()
    print(faults() - before)
    """
)


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt settings exist in glibc only")
def test_reuse_removes_page_faults_of_large_blocks():
    default = _faults("off")
    assert default > 100_000  # fresh pages every round
    assert _faults("on") * 5 < default  # mostly the same blocks again


def test_reuse_wanted_unless_switched_off():
    assert memory_reuse_wanted({}) is True
    assert memory_reuse_wanted({"MASK2FORMER_MEMORY_REUSE": "1"}) is True
    for off in ("0", "false", "No", " off "):
        assert memory_reuse_wanted({"MASK2FORMER_MEMORY_REUSE": off}) is False


def test_command_entry_turns_it_on_and_library_import_does_not():
    code = textwrap.dedent(
        """
        import sys
        import mask2former, mask2former.cli
        import mask2former.memory_reuse as m
        assert m._enabled is False  # importing the library changes nothing
        sys.argv = ["mask2former", "--version"]
        try:
            mask2former.cli.console_main()
        except SystemExit:
            pass
        print(m._enabled)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(GLIBC)
