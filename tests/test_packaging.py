"""Packaging truths: one import package, one version, the light half installs and imports without the heavy
half's dependencies, and cache_schema.md names only things that exist."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LIGHT = ("mtvad.store", "mtvad.students", "mtvad.scoring", "mtvad.cli")
# what importing the light half must never load. torchvision (detection models included), PIL and
# huggingface_hub are not in this list: segmentation_models_pytorch imports them itself, through timm.
HEAVY_MODULES = ("mtvad.precompute", "dask", "distributed", "cv2", "transformers", "ai_edge_litert")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def provided(requirements: list[str]) -> set[str]:
    """Distribution names the requirements install directly, with the extras they ask for (dask[distributed])."""
    names = set()
    for text in requirements:
        req = Requirement(text)
        names.add(norm(req.name))
        for extra in req.extras:
            for sub in requires(req.name) or []:
                r = Requirement(sub)
                if r.marker is not None and "extra" in str(r.marker) and r.marker.evaluate({"extra": extra}):
                    names.add(norm(r.name))
    return names


def external_imports(packages: tuple[str, ...]) -> set[str]:
    """Top-level external modules imported anywhere in these packages (imports inside functions too)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("mtvad", include_external_packages=True)
    modules = set()
    for package in packages:
        modules |= {package} | graph.find_descendants(package)
    imported = {m for module in modules for m in graph.find_modules_directly_imported_by(module)}
    return {m for m in imported if not m.startswith("mtvad") and m not in sys.stdlib_module_names}


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    known = packages_distributions()
    return {m: {norm(d) for d in known.get(m, [])} for m in modules}


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
def test_importing_the_light_half_and_its_commands_loads_nothing_of_the_heavy_half():
    code = f"""
import json, sys
import mtvad.students.train, mtvad.scoring.score, mtvad.scoring.evaluate, mtvad.scoring.report
import mtvad.store.verify, mtvad.store.diff, mtvad.store.pack, mtvad.store.summary, mtvad.store.show
from mtvad.cli.main import app
try:
    app(["--help"], prog_name="vad")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {list(HEAVY_MODULES)!r}
                        or m.startswith("mtvad.precompute"))))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the light half imported {loaded}"


def test_the_light_half_needs_only_the_base_dependencies():
    base = provided(PYPROJECT["project"]["dependencies"])
    missing = {m: d for m, d in distributions_of(external_imports(LIGHT)).items() if not d & base}
    assert not missing, f"imported by the light half but not a base dependency: {missing}"


def test_the_heavy_half_needs_only_the_base_and_its_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    allowed = provided(PYPROJECT["project"]["dependencies"] + extras["precompute"] + extras["tflite"])
    missing = {m: d for m, d in distributions_of(external_imports(("mtvad.precompute",))).items()
               if not d & allowed}
    assert not missing, f"imported by mtvad.precompute but in no dependency list: {missing}"


def test_the_import_contract_forbids_every_module_of_the_heavy_extras():
    config = PYPROJECT["tool"]["importlinter"]
    assert config["root_package"] == "mtvad" and config["include_external_packages"] is True
    light = next(c for c in config["contracts"]
                 if c["type"] == "forbidden" and set(c["source_modules"]) == {"mtvad.students", "mtvad.scoring"}
                 and "mtvad.precompute" in c["forbidden_modules"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    heavy = provided(extras["precompute"] + extras["tflite"])
    modules = {m for m, dists in packages_distributions().items() if {norm(d) for d in dists} & heavy}
    assert modules, "none of the precompute extra is installed"
    assert modules <= set(light["forbidden_modules"]), modules - set(light["forbidden_modules"])


def test_only_mtvad_is_importable_the_old_top_level_packages_are_gone():
    result = run_python("import importlib.util as u; print([n for n in ('vad', 'pipeline') if u.find_spec(n)])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert not (ROOT / "vad").exists() and not (ROOT / "pipeline").exists()


def test_one_version_the_pyproject_one():
    import mtvad

    number = PYPROJECT["project"]["version"]
    assert mtvad.__version__ == version("mtvad") == number
    copies = [p for p in (ROOT / "src").rglob("*.py") if re.search(rf"""["']{re.escape(number)}["']""", p.read_text())]
    assert not copies, f"the version written out again in {copies}"


def test_python_dash_m_mtvad_prints_the_version():
    result = subprocess.run([sys.executable, "-m", "mtvad", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    if result.returncode != 0 and "No such option" in result.stdout + result.stderr:
        pytest.skip("`vad --version` is not there yet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert PYPROJECT["project"]["version"] in result.stdout


SCHEMA_DOC = (ROOT / "cache_schema.md").read_text()


def test_cache_schema_names_only_paths_that_exist():
    paths = set(re.findall(r"`((?:src|tests|docs|benchmarks)/[\w./-]+)`", SCHEMA_DOC))
    assert paths, "cache_schema.md names no file of this repository?"
    assert not [p for p in paths if not (ROOT / p).exists()]


def test_cache_schema_names_only_python_objects_that_exist():
    names = set(re.findall(r"`(mtvad(?:\.\w+)+)", SCHEMA_DOC))
    assert names
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"{name}: no such module")
    assert "pipeline precompute" not in SCHEMA_DOC and "`pipeline`" not in SCHEMA_DOC


def test_cache_schema_root_attributes_are_the_code_ones():
    from mtvad.store.schema import PROVENANCE, SCHEMA_VERSION

    table = SCHEMA_DOC.split("## Root attributes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`(\w+)`", cells[0]):
                rows[name] = cells[1]
    assert rows["schema_version"] == str(SCHEMA_VERSION)
    assert set(PROVENANCE) <= set(rows)
