"""One set of parameters per experiment folder at a time: a second run with other parameters is refused with one
line and leaves the first run's params.yaml as it was; runs with the same parameters share the folder."""
import subprocess
import sys
from pathlib import Path

import pytest

from natinv import run_lock
from natinv.config import load_config, resolved_text

from pipeline import ROOT, TINY, copy_repo, tool

HOLDER = """
import sys
from pathlib import Path
from natinv import run_lock
from natinv.config import load_config
cfg = load_config([Path(p) for p in sys.argv[2:]])
lock = run_lock.hold(cfg, Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()  # held until the test closes stdin
"""


def _config(tmp_path: Path, name: str, lines: str):
    overlay = tmp_path / f"{name}.yaml"
    overlay.write_text(f"results: {tmp_path / 'results'}\n{lines}")
    files = [ROOT / "params/default.yaml", ROOT / "params/tiny.yaml", overlay]
    return load_config(files), files


def _holder(params: Path, files: list[Path]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(params), *map(str, files)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"  # waits for the event, not for a time
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait() == 0


def test_other_parameters_wait_for_the_run_that_holds_the_folder(tmp_path):
    cfg_a, files_a = _config(tmp_path, "a", "")
    cfg_b, _ = _config(tmp_path, "b", "kd: {lr: 0.123}\n")
    params = Path(cfg_a.exp_dir) / "params.yaml"
    holder = _holder(params, files_a)
    try:
        assert params.read_bytes() == resolved_text(cfg_a)
        with pytest.raises(run_lock.ExperimentBusy, match="another run on .* is running with other parameters"):
            run_lock.hold(cfg_b, params)
        assert params.read_bytes() == resolved_text(cfg_a)  # the holder's parameters stay
        same = run_lock.hold(cfg_a, params)  # the same parameters may join
        assert same is not None
        same.close()
    finally:
        _release(holder)
    lock = run_lock.hold(cfg_b, params)  # free again: the new parameters are written
    assert params.read_bytes() == resolved_text(cfg_b)
    lock.close()


def test_snakemake_refuses_a_second_run_with_other_parameters_in_one_line(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    overlay = repo / "other.yaml"
    overlay.write_text("kd: {lr: 0.123}\n")
    cfg = load_config([repo / "params/default.yaml", repo / "params/tiny.yaml"])
    params = repo / cfg.exp_dir / "params.yaml"
    holder = _holder(params, [repo / "params/default.yaml", repo / "params/tiny.yaml"])
    try:
        before = params.read_bytes()
        proc = tool(repo, "snakemake", "--cores", "1", *TINY, "other.yaml", check=False)
        assert proc.returncode != 0
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "natinv: error:" in line]
        assert len(errors) == 1 and "running with other parameters" in errors[0], proc.stderr[-2000:]
        assert params.read_bytes() == before
        assert not (repo / cfg.exp_dir / "data").exists()  # no job ran
    finally:
        _release(holder)
