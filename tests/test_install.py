"""`pip install .` gives an importable package and a `gapviz` command that works anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, timeout=300)
    (found,) = out.glob("gapviz-*.whl")
    return found


def test_the_wheel_holds_every_subpackage_and_the_console_command(wheel):
    import gapviz

    names = zipfile.ZipFile(wheel).namelist()
    for module in ("gapviz/__init__.py", "gapviz/cli/__init__.py", "gapviz/cli/embed.py",
                   "gapviz/methods/spectral.py", "gapviz/data/coco.py"):
        assert module in names
    assert not any(n.startswith(("pages/", "tests/", "bench/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gapviz = gapviz.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    assert f"gapviz-{gapviz.__version__}-" in wheel.name  # the version is written once


def _running_site_packages() -> list[str]:
    """The folders the running interpreter imports installed packages from (its own
    site-packages when pytest runs in a virtual environment, the system's otherwise; the user's
    too if enabled), never the checkout."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    folders = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    out: list[str] = []
    for folder in map(Path, folders):
        if folder.is_dir() and ROOT not in (folder.resolve(), *folder.resolve().parents) \
                and str(folder) not in out:
            out.append(str(folder))
    return out


def test_installed_command_runs_outside_the_repository(wheel, tmp_path):
    # A fresh environment holding only the wheel; its dependencies are borrowed from the
    # interpreter running the tests (a .pth after the environment's own site-packages), not
    # from the base interpreter a venv's system_site_packages would reach.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   timeout=300)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    deps = Path(purelib) / "_gapviz_test_deps.pth"
    deps.write_text("".join(f"{folder}\n" for folder in _running_site_packages()))
    result = subprocess.run([str(env_dir / "bin" / "gapviz"), "evaluate", "demo", "--n", "60",
                             "--dim", "16", "--format", "json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dataset"]["n_pairs"] == 60
    where = subprocess.run([str(py), "-c", "import gapviz; print(gapviz.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert str(env_dir) in where.stdout  # the installed copy, not the checkout


def test_top_level_names_never_shadow_a_submodule():
    import pkgutil

    import gapviz

    submodules = {m.name for m in pkgutil.iter_modules(gapviz.__path__)}
    assert not set(gapviz._EXPORTS) & submodules
    for name in gapviz.__all__:
        assert getattr(gapviz, name) is not None
