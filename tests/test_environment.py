"""A project folder that is copied or moved keeps working: its environment (workflow/setup.sh's .venv) starts the
interpreter beside its scripts and imports the copy's own source, not the folder it was set up in."""
from __future__ import annotations

import os
import subprocess

import pytest

from pipeline import ROOT, copy_repo


def test_a_copied_project_runs_its_own_interpreter_and_source(tmp_path):
    venv = ROOT / ".venv"
    assert "relocatable = true" in (venv / "pyvenv.cfg").read_text(), "the environment was not made by workflow/setup.sh"
    project = copy_repo(tmp_path / "copy")
    if subprocess.run(["cp", "-al", str(venv), str(project / ".venv")], capture_output=True).returncode != 0:
        pytest.skip("the environment is on another file system than the test's folder: no hard-linked copy of it")
    init = project / "src/natinv/__init__.py"
    init.write_text(init.read_text() + '\nimport sys as _sys\nprint("natinv: the copy\'s source", file=_sys.stderr)\n')
    for script in ("snakemake", "natinv", "mlflow", "dvc"):
        assert str(ROOT) not in (project / ".venv/bin" / script).read_text(errors="replace")[:500], script
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([str(project / ".venv/bin/natinv"), "data", "--params", "params/default.yaml", "--params",
                           "params/tiny.yaml"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "natinv: the copy's source" in done.stderr  # the copy's code ran, under the copy's interpreter
    assert (project / "results/tiny/data/manifest.json").is_file()
    prefix = subprocess.run([str(project / ".venv/bin/python"), "-c", "import sys; print(sys.prefix)"], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert prefix == str(project / ".venv")
