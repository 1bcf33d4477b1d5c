"""Every `python run.py ...` command in the README and the guide composes with today's config names.

Commands are read from fenced code blocks and inline code of README.md and docs/ (the
changelog quotes history and is left out). Each is checked as Hydra would take it: no old
name (`birdclef.runs.renamed`), every group option and key exists, every value of a sweep
composes, and `experiment=`/`-cd -cn` files are found. Placeholders (`<run>`, `DIR`, `$R`)
are plain string values, so they compose.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from birdclef.runs.renamed import new_name
from tests.conftest import CONF, ROOT

PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "changelog.md"),
]
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
INLINE = re.compile(r"`(python run\.py[^`]*)`")
OPTIONAL = re.compile(r"\[([^\[\]]*=[^\[\]]*)\]")  # `[data.root=...]`: an optional override
PLACEHOLDER = re.compile(r"<[^<>]*>")  # `<run>`, `<SavedModel>`: the reader fills them in
NEEDS_EMBEDDINGS = {"model=birdnet"}  # nets that read BirdNET's front end, not log-mel frames


def commands(text: str) -> list[str]:
    found = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)  # shell line continuations
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            line = re.sub(r"^(\w+=\S+\s+)+", "", line)  # environment variables before the command
            if line.startswith("python run.py"):
                found.append(line)
    return found + [c for c in INLINE.findall(text)]


def overrides_of(command: str) -> tuple[list[str], dict[str, str]]:
    """(overrides, flags) of one command line, comments and placeholders like `...` dropped."""
    command = OPTIONAL.sub(r"\1", command.split("  #")[0].split(" # ")[0])
    command = PLACEHOLDER.sub("X", command)
    words = shlex.split(command)[2:]
    flags, overrides, i = {}, [], 0
    while i < len(words):
        word = words[i]
        if word in ("-cd", "-cn", "--config-dir", "--config-name"):
            flags[word[:3]] = words[i + 1]
            i += 2
            continue
        if word.startswith("-"):
            flags[word] = ""
        elif "=" in word:
            overrides.append(word)
        i += 1
    return overrides, flags


def expanded(overrides: list[str]) -> list[list[str]]:
    """One override list per value of each sweep (`a=1,2`), taken one sweep at a time."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    runs = [base]
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            runs += [[*base, f"{key}={v}"] for v in o.sweep_string_iterator()]
    return runs


ALL = [(page, c) for page in PAGES for c in commands(page.read_text())]


def test_the_pages_hold_commands():
    assert len(ALL) > 50 and {p.name for p, _ in ALL} >= {"README.md", "usage.md", "submission.md"}


@pytest.mark.parametrize(("page", "command"), ALL, ids=[f"{p.name}:{c[14:60]}" for p, c in ALL])
def test_every_documented_command_composes(page, command, tmp_path):
    overrides, flags = overrides_of(command)
    old = [(o, new_name(o)) for o in overrides if new_name(o)]
    assert old == [], f"{page.name}: {command}"
    if any(o in NEEDS_EMBEDDINGS for o in overrides):
        assert "frontend=birdnet" in overrides, f"{page.name}: model=birdnet needs frontend=birdnet"
    # -cd: the sweep file is the primary config and run.py's conf/ stays on the search path
    config_dir, extra = CONF, []
    if "-cd" in flags:
        config_dir, extra = ROOT / flags["-cd"], [f"hydra.searchpath=[file://{CONF}]"]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for run in expanded(overrides):
            compose(
                flags.get("-cn", "config"),
                overrides=[
                    *run,
                    *extra,
                    f"paths.data_dir={tmp_path}",
                    f"paths.output_dir={tmp_path}",
                ],
                return_hydra_config="-m" in flags or any(o.startswith("hydra.") for o in run),
            )
