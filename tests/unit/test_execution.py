"""Running untrusted commands: real processes, scratch folders and process groups, no mocks.

Every test sends the scratch folders into its own tmp_path (tempfile's folder), so that the
fixture can check that each call removed its own."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_roadmap.checks.execution import (
    SCRATCH_PREFIX,
    CommandNotFound,
    run_untrusted,
)
from pytest_roadmap.errors import RoadmapError
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process groups, and /proc to find processes"
)

TOKEN = "tok-3f9a1c77e2b54d10"


@pytest.fixture(autouse=True)
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tempfile's folder for this test; empty again at its end."""
    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert list(root.iterdir()) == []


@pytest.fixture(params=["pidfd", "polling"])
def exit_wait(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the call learns that the command exited: a pidfd (Linux), or polling (elsewhere)."""
    if request.param == "polling":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open on this system")
    return str(request.param)


def reaped(pid: int) -> bool:
    """Whether `pid` is gone entirely: a child not waited for stays a zombie in /proc."""
    return not Path(f"/proc/{pid}").exists()


def python(code: str, *args: str) -> list[str]:
    return ["python", "-c", code, *args]


def processes_with(marker: str) -> list[int]:
    """The pids whose command line holds `marker` (a zombie's reads empty: it is dead)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:  # ended since the listing
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- runs


def test_exit_code_and_output_in_the_order_they_came(exit_wait: str) -> None:
    code = (
        "import sys\n"
        "print('out 1', flush=True)\n"
        "print('err', file=sys.stderr, flush=True)\n"
        "print('out 2', flush=True)\n"
    )
    run = run_untrusted(python(code), {}, timeout=30)
    assert run.exit_code == 0 and not run.timed_out and not run.truncated
    assert run.output == "out 1\nerr\nout 2\n"
    assert 0 < run.seconds < 30

    code = "import os, sys; print(os.getpid()); sys.exit(3)"
    failed = run_untrusted(python(code), {}, timeout=30)
    assert (failed.exit_code, failed.timed_out) == (3, False)
    assert reaped(int(failed.output))


def test_files_are_written_in_a_fresh_scratch_folder_that_is_the_cwd(
    scratch_root: Path,
) -> None:
    code = (
        "import json, os\n"
        "files = {}\n"
        "for root, _, names in os.walk('.'):\n"
        "    for name in names:\n"
        "        path = os.path.relpath(os.path.join(root, name))\n"
        "        files[path] = open(path, 'rb').read().hex()\n"
        "print(json.dumps({'cwd': os.getcwd(), 'files': files}))\n"
    )
    files: dict[str, str | bytes] = {
        "main.py": "print('é')\n",
        "pkg/__init__.py": "",
        "pkg/deep/data.bin": b"\x00\xff",
    }
    run = run_untrusted(python(code), files, timeout=30)
    assert run.exit_code == 0, run.output
    seen = json.loads(run.output)
    assert seen["files"] == {
        "main.py": "print('é')\n".encode().hex(),
        "pkg/__init__.py": "",
        "pkg/deep/data.bin": "00ff",
    }
    cwd = Path(seen["cwd"])
    assert cwd.parent == scratch_root and cwd.name.startswith(SCRATCH_PREFIX)
    assert cwd != Path.cwd()
    assert not cwd.exists()


def test_the_scratch_folder_goes_even_when_the_command_locked_it(scratch_root: Path) -> None:
    code = (
        "import os\n"
        "os.makedirs('locked/deep')\n"
        "open('locked/deep/data.txt', 'w').close()\n"
        "os.chmod('locked/deep/data.txt', 0o400)\n"
        "os.chmod('locked/deep', 0o500)\n"
        "os.chmod('locked', 0o500)\n"
        "os.chmod('.', 0o500)\n"
        "print(os.getcwd())\n"
    )
    run = run_untrusted(python(code), {"given.txt": "x"}, timeout=30)
    assert run.exit_code == 0, run.output
    assert not Path(run.output.strip()).exists()


# The command of the next test locks folders, unlists one, and links to a file and a folder
# outside the scratch folder (argv[1]); the cleanup must remove it all without changing them.
LOCKING = """
import os, sys
outside = sys.argv[1]
os.makedirs("locked/deep")
with open("locked/deep/data.txt", "w") as handle:
    handle.write("x")
os.chmod("locked/deep/data.txt", 0o400)
os.symlink(os.path.join(outside, "file"), "locked/file-link")
os.symlink(os.path.join(outside, "folder"), "locked/folder-link")
os.chmod("locked/deep", 0o500)
os.chmod("locked", 0o500)
os.makedirs("unlisted/inner")
os.chmod("unlisted", 0o000)
print(os.getcwd())
"""

# Run in a process of its own that is subject to permission checks.
SCENARIO = """
import json, os, sys
from pytest_roadmap.checks.execution import run_untrusted
run = run_untrusted(["python", "-c", sys.argv[1], sys.argv[2]], {}, timeout=30)
folder = run.output.strip()
print(json.dumps({"exit": run.exit_code, "folder": folder, "gone": not os.path.lexists(folder)}))
"""


def test_the_cleanup_opens_locked_folders_and_never_follows_a_symlink(
    tmp_path: Path, scratch_root: Path
) -> None:
    command = [sys.executable, "-c", SCENARIO, LOCKING, str(tmp_path / "outside")]
    if os.geteuid() == 0:
        # root passes every permission check: take away the capabilities that do it.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop the DAC capabilities")
        caps = "-dac_override,-dac_read_search,-fowner"
        command = [setpriv, f"--bounding-set={caps}", *command]
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "file").write_text("mine", encoding="utf-8")
    (outside / "file").chmod(0o640)
    (outside / "folder").chmod(0o750)
    env = {**os.environ, "TMPDIR": str(scratch_root)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["exit"] == 0
    assert Path(result["folder"]).parent == scratch_root
    assert result["gone"]
    assert stat.S_IMODE((outside / "file").stat().st_mode) == 0o640
    assert stat.S_IMODE((outside / "folder").stat().st_mode) == 0o750
    assert (outside / "file").read_text(encoding="utf-8") == "mine"


def test_stdin_is_dev_null_and_the_command_leads_its_own_session() -> None:
    code = (
        "import os, sys\n"
        "print(repr(sys.stdin.read()), os.readlink('/proc/self/fd/0'))\n"
        "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n"
    )
    run = run_untrusted(python(code), {}, timeout=30)
    assert run.output == "'' /dev/null\nTrue True\n"


# --------------------------------------------------------------------------- process groups

# argv: marker, then "wait" (sleep after starting the grandchild) or "exit", then "pipe" (the
# grandchild keeps the output pipe), "devnull" (it does not) or "escape" (pipe, and it leaves
# the process group with a session of its own). Both processes carry the marker in argv.
FAMILY = """
import os, subprocess, sys, time
marker, then, grandchild_output = sys.argv[1:4]
print("leader", os.getpid(), flush=True)
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)", marker],
    stdout=subprocess.DEVNULL if grandchild_output == "devnull" else None,
    start_new_session=grandchild_output == "escape",
)
print("grandchild", grandchild.pid, flush=True)
if then == "wait":
    time.sleep(600)
"""


def family(then: str, grandchild_output: str) -> tuple[list[str], str]:
    marker = f"roadmap-test-{uuid.uuid4().hex}"
    return python(FAMILY, marker, then, grandchild_output), marker


def pids_of(output: str) -> tuple[int, int]:
    """The leader's pid and the grandchild's, as FAMILY printed them."""
    words = output.split()
    assert words[0::2] == ["leader", "grandchild"], output
    return int(words[1]), int(words[3])


def test_at_the_timeout_the_whole_group_is_killed(exit_wait: str) -> None:
    command, marker = family("wait", "pipe")
    start = time.monotonic()
    run = run_untrusted(command, {}, timeout=1.0)
    elapsed = time.monotonic() - start
    assert run.timed_out and run.exit_code is None
    leader, _ = pids_of(run.output)  # the grandchild was running when the timeout came
    assert reaped(leader)
    assert 1.0 <= run.seconds < 5 and elapsed < 5
    # No polling: the call read its output pipe to the end, and the kernel releases a
    # process's memory (its cmdline) before it closes its files.
    assert processes_with(marker) == []


@pytest.mark.parametrize("grandchild_output", ["pipe", "devnull"])
def test_a_child_left_behind_after_a_normal_exit_is_killed(
    grandchild_output: str, exit_wait: str
) -> None:
    command, marker = family("exit", grandchild_output)
    run = run_untrusted(command, {}, timeout=30)
    assert (run.exit_code, run.timed_out) == (0, False)
    leader, _ = pids_of(run.output)
    assert reaped(leader)
    assert run.seconds < 10
    # A grandchild without the pipe may still be dying: the kernel gets a moment.
    wait_for(lambda: processes_with(marker) == [])


def test_a_process_that_left_the_group_cannot_hang_the_call() -> None:
    command, marker = family("exit", "escape")
    start = time.monotonic()
    run = run_untrusted(command, {}, timeout=30)
    _, escaped = pids_of(run.output)
    try:
        assert run.exit_code == 0
        assert time.monotonic() - start < 10  # it still holds the pipe: the drain gave up
        # The documented limit: a process with a session of its own is not killed.
        assert processes_with(marker) == [escaped]
    finally:
        os.kill(escaped, signal.SIGKILL)
    wait_for(lambda: processes_with(marker) == [])


# --------------------------------------------------------------------------- environment


def test_no_secret_reaches_the_command_nor_pytest_s_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BEAST_MODE_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)
    monkeypatch.setenv("BEAST_MODE_API", "http://127.0.0.1:9/api")
    monkeypatch.setenv("SOME_SERVICE_URL", f"https://robot:{TOKEN}@api.example/")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_x.py::test_y (call)")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-x")
    monkeypatch.setenv("UNRELATED_SETTING", "kept")
    run = run_untrusted(
        python("import os; print(dict(os.environ))"),
        {},
        timeout=30,
        secrets=["", TOKEN],  # an empty secret must not take every variable away
        drop={"BEAST_MODE_TOKEN", "OPENAI_API_KEY", "BEAST_MODE_API"},
    )
    assert run.exit_code == 0, run.output
    assert TOKEN not in run.output
    env = ast.literal_eval(run.output)
    assert not {"BEAST_MODE_TOKEN", "OPENAI_API_KEY", "BEAST_MODE_API", "SOME_SERVICE_URL"} & set(
        env
    )
    assert not [name for name in env if name.startswith("PYTEST_")]
    assert env["PATH"] == os.environ["PATH"]
    assert env["HOME"] == os.environ["HOME"]
    assert env["UNRELATED_SETTING"] == "kept"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_a_nested_pytest_run_is_no_xdist_worker_and_ignores_the_outer_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setenv("PYTEST_ADDOPTS", "--no-such-option")
    test = "import os\ndef test_answer():\n    assert 'PYTEST_XDIST_WORKER' not in os.environ\n"
    run = run_untrusted(
        ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        {"test_answer.py": test},
        timeout=60,
    )
    assert run.exit_code == 0, run.output
    assert "1 passed" in run.output


# --------------------------------------------------------------------------- output


def test_output_past_the_cap_is_drained_and_dropped(exit_wait: str) -> None:
    code = "import sys; sys.stdout.buffer.write(b'x' * (1 << 20)); print('end', file=sys.stderr)"
    run = run_untrusted(python(code), {}, timeout=30)
    # Had the call stopped reading, the command would block on the full pipe and time out.
    assert (run.exit_code, run.timed_out) == (0, False)
    assert run.truncated
    assert run.output == "x" * (64 * 1024)


@pytest.mark.parametrize(
    ("written", "cap", "output", "truncated"),
    [
        (b"a" * 1000, 1000, "a" * 1000, False),
        (b"a" * 1001, 1000, "a" * 1000, True),
        (b"", 0, "", False),
        (b"a", 0, "", True),
        ("é".encode() * 10, 5, "éé", True),  # a character cut at the cap is left out
        (b"ok \xff\n", 100, "ok \ufffd\n", False),  # not UTF-8: replaced, not raised
    ],
)
def test_the_cap_in_bytes(written: bytes, cap: int, output: str, truncated: bool) -> None:
    code = f"import sys; sys.stdout.buffer.write({written!r})"
    run = run_untrusted(python(code), {}, timeout=30, max_output=cap)
    assert (run.exit_code, run.output, run.truncated) == (0, output, truncated)


# --------------------------------------------------------------------------- programs


@pytest.mark.parametrize("name", ["python", "python3"])
def test_python_is_the_python_running_pytest(name: str) -> None:
    run = run_untrusted([name, "-c", "import sys; print(sys.executable)"], {}, timeout=30)
    assert run.output.strip() == sys.executable


def test_a_missing_program_is_command_not_found() -> None:
    program = f"roadmap-no-such-program-{uuid.uuid4().hex}"
    with pytest.raises(CommandNotFound, match=program) as caught:
        run_untrusted([program, "--help"], {}, timeout=30)
    assert isinstance(caught.value, RoadmapError)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_executable_is_command_not_found() -> None:
    # A relative program is found in the scratch folder, where files are not executable.
    with pytest.raises(CommandNotFound, match=r"'\./run\.sh'.*Permission denied"):
        run_untrusted(["./run.sh"], {"run.sh": "#!/bin/sh\necho hi\n"}, timeout=30)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/..", "", ".", "a\0b"])
def test_a_file_name_outside_the_scratch_folder_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="relative path inside the scratch folder"):
        run_untrusted(python("pass"), {name: "x"}, timeout=30)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"a.py": "", "./a.py": ""}, "given twice"),
        ({"a": "x", "a/b": "y"}, "cannot write file 'a/b'"),
    ],
)
def test_files_that_collide_are_refused(files: dict[str, str | bytes], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        run_untrusted(python("pass"), files, timeout=30)


@pytest.mark.parametrize(
    ("command", "timeout", "max_output", "words"),
    [
        ("python -c pass", 30.0, 1, "non-empty list of arguments"),
        ([], 30.0, 1, "non-empty list of arguments"),
        (["python"], 0.0, 1, "timeout must be a number of seconds > 0"),
        (["python"], float("nan"), 1, "timeout must be"),
        (["python"], 30.0, -1, "max_output must be a whole number of bytes >= 0"),
        (["python"], 30.0, 1.5, "max_output must be"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    command: list[str], timeout: float, max_output: int, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        run_untrusted(command, {}, timeout=timeout, max_output=max_output)
