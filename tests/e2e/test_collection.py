"""Task files become pytest items: naming, order, keywords, selection and bad files."""

from __future__ import annotations

import pytest

from tests.support.project import Roadmap, task_toml


@pytest.mark.parametrize("named_by", ["default", "ini", "option"])
def test_without_roadmap_no_task_is_collected_or_sent(roadmap: Roadmap, named_by: str) -> None:
    # Without --roadmap the entry point places the default folder itself and reads the
    # settings only when an option or ini key names another: both must leave it alone.
    folder = "roadmap_tasks" if named_by == "default" else "elsewhere"
    if named_by == "ini":
        roadmap.pytester.makeini("[pytest]\nroadmap_tasks = elsewhere\n")
    tasks = roadmap.pytester.mkdir(folder) if folder != "roadmap_tasks" else None
    roadmap.tasks("month1", task_toml("monitoring"))
    if tasks is not None:
        (roadmap.pytester.path / "roadmap_tasks" / "month1.toml").rename(tasks / "month1.toml")
    roadmap.pytester.makepyfile(test_plain="def test_ordinary():\n    assert True\n")
    (roadmap.pytester.path / folder / "test_python_task.py").write_text(
        "def test_uses_api(roadmap_client):\n    roadmap_client.chat('x')\n"
    )
    option = ["--roadmap-tasks", folder] if named_by == "option" else []
    result = roadmap.pytester.runpytest(*roadmap.plugins, *option)
    result.assert_outcomes(passed=1)
    assert "monitoring" not in result.stdout.str()
    assert roadmap.sandbox.log() == []


def test_collect_only_lists_tasks_by_id_in_roadmap_order(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("zeta", 1, 2),
        task_toml("alpha", 1, 2, priority=2),
        task_toml("beta", 1, 1),
    )
    roadmap.tasks("month3", task_toml("later", 3, 1))
    result = roadmap.run("--co", "-q")
    result.stdout.fnmatch_lines(
        [
            "roadmap_tasks/month1.toml::beta",
            "roadmap_tasks/month1.toml::alpha",
            "roadmap_tasks/month1.toml::zeta",
            "roadmap_tasks/month3.toml::later",
            "4 tests collected*",
        ]
    )
    assert roadmap.sandbox.log() == []


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ("monitoring or cache", {"monitoring", "cache"}),
        ("month1", {"monitoring", "cache", "errors"}),
        ("week2", {"cache"}),
        ("p1", {"monitoring", "latency"}),
        ("improvement and not cache", {"monitoring", "errors", "latency"}),
        ("optimization", {"cache"}),
    ],
)
def test_keyword_selection(roadmap: Roadmap, expression: str, selected: set[str]) -> None:
    roadmap.tasks(
        "month1",
        task_toml("monitoring", 1, 1, priority=1, dogfooding="improvement"),
        task_toml("errors", 1, 1, dogfooding="improvement"),
        task_toml("cache", 1, 2, dogfooding="optimization"),
    )
    roadmap.tasks("month3", task_toml("latency", 3, 1, priority=1, dogfooding="improvement"))
    result = roadmap.run("--co", "-q", "-k", expression)
    listed = {line.split("::")[1] for line in result.outlines if "::" in line}
    assert listed == selected


def test_explicit_path_is_collected(roadmap: Roadmap) -> None:
    other = roadmap.pytester.path / "elsewhere"
    other.mkdir()
    (other / "extra.toml").write_text(task_toml("outside"))
    result = roadmap.run("--co", "-q", "elsewhere")
    result.stdout.fnmatch_lines(["elsewhere/extra.toml::outside", "1 test collected*"])


def test_missing_tasks_folder_is_a_usage_error(roadmap: Roadmap) -> None:
    result = roadmap.run("--roadmap-tasks", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tasks folder*nowhere does not exist*"])


BAD_FILES = [
    ("syntax", '[[tasks]]\nid = "a"\ntitle = \n', "*bad.toml: invalid TOML*"),
    (
        "missing",
        '[[tasks]]\nid = "a"\ntitle = "t"\nmonth = 1\nweek = 1\n',
        "*bad.toml: task 1 (id 'a'): 'prompt' is required*",
    ),
    (
        "wrong type",
        '[[tasks]]\nid = "a"\ntitle = "t"\nprompt = "p"\nmonth = "one"\nweek = 1\n',
        "*bad.toml: task 1 (id 'a'): 'month' must be an integer*got 'one'*",
    ),
    (
        "week range",
        '[[tasks]]\nid = "a"\ntitle = "t"\nprompt = "p"\nmonth = 1\nweek = 6\n',
        "*'week' must be an integer from 1 to 5, got 6*",
    ),
    (
        "unknown field",
        '[[tasks]]\nid = "a"\ntitle = "t"\nprompt = "p"\nmonth = 1\nweek = 1\ncolour = 2\n',
        "*bad.toml: task 1 (id 'a'): unknown field 'colour'*",
    ),
    (
        "bad id",
        '[[tasks]]\nid = "../a"\ntitle = "t"\nprompt = "p"\nmonth = 1\nweek = 1\n',
        "*bad.toml: task 1: 'id' is required and must match [[]a-z0-9_-[]]+, got '../a'*",
    ),
    (
        "category",
        '[[tasks]]\nid = "a"\ntitle = "t"\nprompt = "p"\nmonth = 1\nweek = 1\ndogfooding = "fun"\n',
        "*'dogfooding' must be one of improvement, test, optimization, doc, got 'fun'*",
    ),
    (
        "empty prompt",
        '[[tasks]]\nid = "a"\ntitle = "t"\nprompt = "  "\nmonth = 1\nweek = 1\n',
        "*'prompt' is required and must be a non-empty string*",
    ),
    (
        "duplicate in file",
        task_toml("a") + task_toml("a"),
        "*bad.toml: duplicate task id 'a' (tasks 1 and 2)*",
    ),
    ("not a table array", 'tasks = "x"\n', "*'tasks' must be an array of tables*"),
]


@pytest.mark.parametrize(("case", "text", "line"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_malformed_task_file_is_one_clear_collection_error(
    roadmap: Roadmap, case: str, text: str, line: str
) -> None:
    roadmap.raw("bad.toml", text)
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str()
    assert roadmap.sandbox.log() == []


def test_non_utf8_task_file(roadmap: Roadmap) -> None:
    (roadmap.pytester.path / "roadmap_tasks" / "bad.toml").write_bytes(b'id = "\xff"\n')
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*bad.toml: not valid UTF-8 at byte 6*"])


def test_duplicate_id_across_files_names_both(roadmap: Roadmap) -> None:
    roadmap.tasks("a", task_toml("same"))
    roadmap.tasks("b", task_toml("same", 2))
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*roadmap_tasks/b.toml: duplicate task id 'same', also in roadmap_tasks/a.toml*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_shipped_tasks_keep_the_original_prompts_targets() -> None:
    """The original system's prompts named the targets; the shipped tasks ask for them too."""
    from pathlib import Path

    from pytest_roadmap.tasks import load_tasks

    root = Path(__file__).resolve().parents[2]
    prompts = {t.id: " ".join(t.prompt.lower().split()) for t in load_tasks(root / "roadmap_tasks")}
    wanted = {
        "testing": ["90%+ test coverage"],
        "dashboard": ["cache hit rate", "cost savings"],
        "baseline": ["error rate", "cache hit rate", "selection accuracy"],
        "costtracking": ["per user"],
    }
    for task_id, phrases in wanted.items():
        for phrase in phrases:
            assert phrase in prompts[task_id], (task_id, phrase)
