"""benchmarks/harness.py on fake workloads and a fake clock; every timing script built on it."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import platform
from pathlib import Path

import pytest

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import DataError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RECIPE_RUNNERS: set[str] = (
    set()
)  # recipes are task=evaluate, not scripts (HOUSE_STYLE, convention 17)
# what a script gets from the harness instead: clock, medians, table files, options
OWN_MACHINERY = {"time", "statistics", "json", "argparse", "birdclef.core.io"}

_spec = importlib.util.spec_from_file_location("harness", BENCHMARKS / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


class FakeClock:
    """A clock that only moves when a fake workload says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def workload(self, durations: list[float], calls: list[str], name: str):
        steps = iter(durations)

        def run() -> None:
            calls.append(name)
            self.now += next(steps)

        return run


def test_interleave_calls_the_variants_round_robin_after_the_warmup():
    clock, calls = FakeClock(), []
    variants = {n: clock.workload([1.0] * 3, calls, n) for n in ("A", "B", "C")}
    times = harness.interleave(variants, repeats=2, warmup=1, clock=clock)
    assert calls == ["A", "B", "C"] * 3
    assert times == {"A": [1.0, 1.0], "B": [1.0, 1.0], "C": [1.0, 1.0]}


def test_medians_quartiles_and_ratios_from_known_durations():
    clock, calls = FakeClock(), []
    durations = {"A": [1.0, 3.0, 2.0], "B": [2.0, 6.0, 4.0], "C": [0.5, 10.0, 0.5]}
    variants = {n: clock.workload(d, calls, n) for n, d in durations.items()}
    times = harness.interleave(variants, repeats=3, warmup=0, clock=clock)
    assert times == durations  # each call timed alone although the clock never resets
    stats = harness.compare(times, "A")
    assert stats["A"] == {"median": 2.0, "q1": 1.5, "q3": 2.5, "min": 1.0, "max": 3.0,
                          "calls": 3, "ratio": 1.0}  # fmt: skip
    assert stats["B"]["ratio"] == 2.0
    assert stats["C"]["median"] == 0.5 and stats["C"]["ratio"] == 0.25
    per_item = harness.compare(times, "B", per={"A": 2, "B": 4, "C": 1})
    assert per_item["A"]["median"] == 1.0 and per_item["B"]["median"] == 1.0
    assert per_item["C"]["ratio"] == 0.5


def test_summary_of_one_call_and_time_call():
    assert harness.summary([0.3], per=3) == pytest.approx(
        {"median": 0.1, "q1": 0.1, "q3": 0.1, "min": 0.1, "max": 0.1, "calls": 1}
    )
    clock, calls = FakeClock(), []
    seconds, result = harness.time_call(clock.workload([2.5], calls, "x"), clock)
    assert (seconds, result, calls) == (2.5, None, ["x"])


def test_markdown_table_aligns_names_left_and_numbers_right():
    text = harness.markdown_table(["variant", "ms", "ratio"], [("a", "1.00", 1), ("b", "2.00", 2)])
    assert text.splitlines() == [
        "| variant | ms | ratio |",
        "|---|---:|---:|",
        "| a | 1.00 | 1 |",
        "| b | 2.00 | 2 |",
    ]


def test_report_writes_markdown_and_json_that_parse_back(tmp_path, capsys):
    table = harness.markdown_table(["variant", "ms"], [("a", "1.00")])
    out = tmp_path / "results" / "speed.json"  # either suffix names both files
    harness.report(out, table, {"ms": {"a": 1.0}, "repeats": 3})
    assert sorted(p.name for p in out.parent.iterdir()) == ["speed.json", "speed.md"]  # no temp
    md = (out.parent / "speed.md").read_text()
    assert md.startswith(table + "\n\nMeasured on: ")
    data = json.loads(out.read_text())
    assert data["ms"] == {"a": 1.0} and data["repeats"] == 3
    assert data["machine"]["cpus"] == available_cpus()
    assert data["machine"]["cores"] == os.cpu_count()
    assert data["machine"]["python"] == platform.python_version()
    assert md in capsys.readouterr().out


def test_parser_has_the_common_options_and_aliases():
    parser = harness.parser("doc", "benchmarks/x_speed.py", repeats=3, threads=1,
                            out_flags=("--out", "--json"))  # fmt: skip
    args = parser.parse_args([])
    assert (args.out, args.repeats, args.threads) == (harness.RESULTS / "x_speed.md", 3, 1)
    assert not hasattr(args, "warmup")
    assert parser.parse_args(["--json", "a.json"]).out == Path("a.json")
    results = harness.parser("doc", "eda.py", out_flags=("--results",))
    assert results.parse_args(["--results", "r.md"]).results == Path("r.md")


def test_run_ends_a_user_error_in_its_message_and_keeps_other_tracebacks():
    def bad_path():
        raise DataError("data.root=/nowhere does not exist")

    with pytest.raises(SystemExit, match="^error: data.root=/nowhere does not exist$"):
        harness.run(bad_path)
    with pytest.raises(ZeroDivisionError):
        harness.run(lambda: 1 / 0)


def test_cpu_share_sets_torch_and_blas_threads_and_restores_them(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with harness.cpu_share(1) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"  # read by spawned workers
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def test_every_timing_script_uses_the_harness_and_keeps_no_machinery_of_its_own():
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "harness.py")
    checked = [p for p in scripts if p.name not in RECIPE_RUNNERS]
    assert {p.name for p in checked} >= {"cache_speed.py", "eda_speed.py", "pcen_speed.py",
                                         "postprocess.py", "window_speed.py"}  # fmt: skip
    for path in checked:
        modules = imported_modules(path)
        assert "harness" in modules, f"{path.name} does not import the harness"
        assert not modules & OWN_MACHINERY, f"{path.name} imports {modules & OWN_MACHINERY}"
        assert "perf_counter" not in path.read_text(), f"{path.name} reads a clock itself"
