from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from natinv.checkpoint import ModelMeta, save_model
from natinv.models import build_model
from pipeline import TINY, copy_repo, tool

ROOT = Path(__file__).resolve().parents[1]

# The suite's expectations (byte-identical re-runs, SLURM equal to local) are the CPU's: every stage it starts, directly
# or through Snakemake and DVC, runs on the CPU, also on a host with a GPU. The GPU tier (test_gpu.py) sets its own.
os.environ["NATINV_DEVICE"] = "cpu"


# The suite runs on two workers (pytest-xdist, `-n 2 --dist loadgroup` in pyproject.toml). A session fixture is made
# once per worker, so the tests that share a pipeline run made once per session (or the one local SLURM, or Chromium,
# which apt may install) form one group that a single worker runs; the GPU tier stays in one process too.
SHARED_ONCE = {"tiny_run", "smoke_run", "slurm", "chromium"}


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    """Fails a test whose session fixture `name` is being made a second time in this session, by another worker: the
    tests that share it are no longer one group (pytest-xdist's loadgroup has split groups silently before)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    session = tmp_path_factory.getbasetemp()
    record = (session.parent if worker else session) / f"{name}.made-by"  # the workers' folders share the parent
    try:
        with open(record, "x") as fh:
            fh.write(worker or "main")
    except FileExistsError:
        pytest.fail(f"{name} is made again, by {worker}, after {record.read_text()} made it: the tests that use it are "
                    f"not one xdist group (tests/conftest.py, SHARED_ONCE)")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SHARED_ONCE & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("shared-runs"))
        elif item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.xdist_group("gpu"))


@pytest.fixture(scope="session", autouse=True)
def _tests_folder_counts_as_installed():
    """The suite's stand-in feature extractor (test_metrics:TinyExtractor) is named by params as an installed module
    would be: for the suite, tests/ is one of the installed locations natinv.imports allows (a folder a test plants a
    module in is still refused)."""
    from natinv import imports

    real = imports.installed_roots
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imports, "installed_roots", lambda: [*real(), Path(__file__).resolve().parent])
        yield


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tiny_teacher(arch: str = "resnet8", width: int = 4, num_classes: int = 10, in_channels: int = 3, seed: int = 0):
    """A small net whose BN running statistics are those of a random data distribution (not the 0/1 init)."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, in_channels, width)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(32, in_channels, 32, 32) * 0.7 + 0.2)
    return model.eval()


@pytest.fixture
def teacher_file(tmp_path: Path) -> tuple[Path, ModelMeta]:
    model = tiny_teacher()
    meta = ModelMeta("resnet8", 10, 3, 32, 4, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    path = tmp_path / "teacher.safetensors"
    save_model(path, model, meta)
    return path, meta


@pytest.fixture
def repo_params(tmp_path: Path) -> Path:
    """A copy of params/ so tests can add files beside it."""
    dst = tmp_path / "params"
    shutil.copytree(ROOT / "params", dst)
    return dst


# ------------------------------------------------------------------ whole pipeline runs, shared by the workflow tests


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny profile run end to end by Snakemake (--cores 2) in a committed copy of the repository, with MLflow.
    Tests must not change it: copy it first (the SLURM test compares its outputs)."""
    made_once(tmp_path_factory, "tiny_run")
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo", commit=True)
    proc = tool(repo, "snakemake", "--cores", "2", *TINY)
    return repo, proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """smoke_run(profile): a paper profile with params/smoke.yaml run end to end by Snakemake (--cores 2) in a
    committed copy of the repository, once per session; MLflow off (the SLURM and tiny runs check tracking)."""
    runs: dict[str, tuple] = {}

    def run(profile: str):
        if profile not in runs:
            made_once(tmp_path_factory, f"smoke_run-{profile}")
            repo = copy_repo(tmp_path_factory.mktemp(f"smoke-{profile}") / "repo", commit=True)
            proc = tool(repo, "snakemake", "--cores", "2", "--configfile", "params/default.yaml", f"params/{profile}.yaml",
                        "params/smoke.yaml", env={"NATINV_TRACKING": "off"})
            runs[profile] = (repo, proc)
        return runs[profile]

    return run


@pytest.fixture(scope="session")
def chromium():
    """chromium(path): the DOM of a local HTML file after headless Chromium ran its scripts (Debian's chromium,
    installed here when missing and this is root with apt-get)."""
    import os
    import subprocess

    exe = shutil.which("chromium")
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium", shell=True,
                       check=True, capture_output=True)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("no chromium, and no root with apt-get to install Debian's")

    def render(page: Path) -> str:
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    return render


def jitter_flip(x: torch.Tensor, draws) -> torch.Tensor:
    """The definition of a batch's jitter (the reference GroupJitter is checked against): x rolled by the next (dy, dx)
    of `draws` (a natinv.synthesis.priors.JitterDraws) and, when its draw says so, flipped horizontally."""
    dy, dx, flipped = draws.next()
    if draws.jitter:
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flipped:
        x = torch.flip(x, dims=(3,))
    return x
