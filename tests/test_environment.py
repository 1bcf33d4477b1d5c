"""environment.yml (conda, for clusters) installs what pyproject.toml declares, with the same pins."""

import re

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CONDA_ONLY = {"python", "pip"}  # all else comes from PyPI, as with `pip install`


def pins(lines: list[str]) -> dict[str, str]:
    """{canonical name: "extras;specifier;marker"} of requirement strings."""
    found = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in found, f"{req.name} is listed twice"
        found[name] = f"{sorted(req.extras)};{req.specifier};{req.marker or ''}"
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def environment() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip requirements) of environment.yml."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [line for d in env["dependencies"] if isinstance(d, dict) for line in d["pip"]]
    return conda, pip


def drift(pip: list[str], wanted: list[str]) -> list[str]:
    """What differs between environment.yml's pip list and pyproject.toml's requirements."""
    got, expected = pins(pip), pins(wanted)
    problems = [f"{n}: in pyproject.toml, not in environment.yml" for n in expected if n not in got]
    problems += [
        f"{n}: in environment.yml, not in pyproject.toml" for n in got if n not in expected
    ]
    problems += [
        f"{n}: {got[n]} in environment.yml, {expected[n]} in pyproject.toml"
        for n in got
        if n in expected and got[n] != expected[n]
    ]
    return problems


def test_environment_pins_equal_pyproject():
    wanted = list(project()["dependencies"])
    for extra in project()["optional-dependencies"].values():
        wanted += extra
    conda, pip = environment()
    assert drift(pip, wanted) == []
    assert {re.split(r"[=<>!~ ]", d)[0] for d in conda} == CONDA_ONLY


def test_environment_python_meets_requires_python():
    conda, _ = environment()
    (python,) = [d for d in conda if re.split(r"[=<>!~ ]", d)[0] == "python"]
    version = python.removeprefix("python").lstrip("=")
    assert SpecifierSet(project()["requires-python"]).contains(version), python


@pytest.mark.parametrize(
    ("pip", "problem"),
    [
        (["numpy>=1.26"], "torch: in pyproject.toml, not in environment.yml"),
        (
            ["numpy>=1.26", "torch>=2.5,<2.15", "rich"],
            "rich: in environment.yml, not in pyproject.toml",
        ),
        (
            ["numpy>=1.25", "torch<2.15,>=2.5"],
            "numpy: [];>=1.25; in environment.yml, [];>=1.26; in pyproject.toml",
        ),
        (["NumPy >= 1.26", "torch<2.15,>=2.5"], None),  # names and spacing are normalised
    ],
)
def test_a_dependency_out_of_step_fails(pip, problem):
    assert drift(pip, ["numpy>=1.26", "torch>=2.5,<2.15"]) == ([problem] if problem else [])
