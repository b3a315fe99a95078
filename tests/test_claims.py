"""The claims matrix's tools: the digits exporter feeds the user-data path, and the matrix reads the report's verdicts."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from natinv.config import DataConfig, load_config
from natinv.user_data import load_custom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import claims_matrix  # noqa: E402


def test_the_digits_folder_is_read_by_the_user_data_path_as_the_claims_overlay_sets_it(tmp_path):
    folder = tmp_path / "digits"
    run = [sys.executable, str(ROOT / "benchmarks/digits_folder.py"), str(folder)]
    first = subprocess.run(run, capture_output=True, text=True, check=True)
    assert "1438 train and 359 test images of 10 classes (1797 written)" in first.stdout
    again = subprocess.run(run, capture_output=True, text=True, check=True)
    assert "(0 written)" in again.stdout
    cfg = load_config([ROOT / "params/default.yaml", ROOT / "params/claims.yaml", ROOT / "params/claims-digits.yaml"])
    assert (cfg.data.dataset, cfg.data.image_size, cfg.experiment) == ("custom", 32, "claims-digits")
    x, y, xt, yt, classes, _ = load_custom(DataConfig(dataset="custom", path=str(folder), image_size=32))
    assert x.shape == (1438, 1, 32, 32) and xt.shape == (359, 1, 32, 32) and x.dtype == np.uint8
    assert classes == 10 and sorted(np.unique(y)) == list(range(10)) and np.bincount(yt).min() >= 35
    assert x.max() == 255 and x.min() == 0


def _results(folder: Path, kd: dict[str, list[float]], fd: dict[str, list[float]]) -> Path:
    """A run's job JSONs as the stages write them: kd/T/M[-seedK]/S.json and metrics/T/M[-seedK].json."""
    t, s = "resnet8-w16", "resnet8-w8"
    for method, values in kd.items():
        for seed, v in enumerate(values):
            path = folder / "kd" / t / (method if seed == 0 else f"{method}-seed{seed}") / f"{s}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"test_acc": v}))
    for method, values in fd.items():
        for seed, v in enumerate(values):
            path = folder / "metrics" / t / f"{method if seed == 0 else f'{method}-seed{seed}'}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"embeddings": {"teacher": {"fd": v, "precision": 0.5, "recall": 0.5}}}))
    return folder


def test_the_matrix_says_holds_within_noise_reversed_and_not_run(tmp_path):
    _results(tmp_path / "ahead", {"ni": [80, 81, 82], "di": [70, 71, 72]}, {"ni": [5.0, 5.1, 5.2], "di": [3.0, 3.1, 3.2]})
    _results(tmp_path / "noise", {"ni": [70, 75, 80], "di": [71, 72, 73]}, {"ni": [3.0, 3.5, 4.0], "di": [3.2, 3.3, 3.4]})
    out = tmp_path / "matrix.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/claims_matrix.py"), f"a={tmp_path / 'ahead'}",
                           f"b={tmp_path / 'noise'}", "--out", str(out)], capture_output=True, text=True, check=True)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in out.read_text().splitlines()[2:]}
    assert proc.stdout == out.read_text()
    assert rows["KD accuracy (Table 5)"][0].startswith("**holds**: 81.0 ± 1.0 vs 71.0 ± 1.0 (n=3)")
    assert rows["KD accuracy (Table 5)"][1].startswith("within noise")
    assert rows["FD, teacher embedding (Tables 1, 8)"][0].startswith("**reversed**")  # NI's FD higher: worse
    assert rows["from scratch, real test accuracy (Tables 2, 9)"] == ["not run", "not run |"]


def test_a_column_can_name_the_methods_that_stand_for_ni_and_di(tmp_path):
    _results(tmp_path, {"ni": [1, 2, 3], "di": [1, 2, 3], "ni-paper": [10, 10.5, 11], "di-paper": [50, 51, 52]}, {})
    cells = claims_matrix.cells(tmp_path, ("ni-paper", "di-paper"))
    kd = next(c for c in cells if c["claim"] == "KD accuracy (Table 5)")
    assert (kd["a"], kd["b"], kd["verdict"]) == ("ni-paper", "di-paper", "di-paper ahead")
    assert (kd["a_mean"], kd["b_mean"]) == (10.5, 51)
    assert not any(c["claim"].startswith("Table 3") for c in cells)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/claims_matrix.py"), f"x={tmp_path}",
                           f"y={tmp_path}:ni-paper,di-paper"], capture_output=True, text=True, check=True)
    table_3 = next(line for line in proc.stdout.splitlines() if line.startswith("| Table 3: + ACS"))
    assert table_3.endswith("| not run | — |")  # the first column could run it; the second makes no such claim


def test_the_header_names_the_pair_when_every_column_compares_the_same_one(tmp_path):
    _results(tmp_path, {"ni": [1, 2, 3], "di": [1, 2, 3], "di-lr01": [4, 5, 6]}, {})
    def header(*columns):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/claims_matrix.py"), *columns],
                              capture_output=True, text=True, check=True)
        return proc.stdout.splitlines()[0]
    assert header(f"x={tmp_path}:di-lr01,di", f"y={tmp_path}:di-lr01,di").startswith("| claim: di-lr01 vs di unless")
    assert header(f"x={tmp_path}", f"y={tmp_path}:di-lr01,di").startswith("| claim: NI vs DI unless named")
    assert header(f"x={tmp_path}").startswith("| claim: NI vs DI unless named")


def test_table_4_compares_the_top_stages_whatever_the_teachers_depth(tmp_path):
    """ni-ftp3 / ni-ftp23 / ni on a three-stage teacher, ni-ftp4 / ni-ftp34 / ni-ftp234 / ni on a four-stage one."""
    kd = {"ni": [1, 2, 3]}
    _results(tmp_path / "three", kd, {"ni-ftp3": [6.0, 6.1, 6.2], "ni-ftp23": [5.0, 5.1, 5.2], "ni": [4.0, 5.0, 6.0]})
    _results(tmp_path / "four", kd, {"ni-ftp4": [9.0, 9.1, 9.2], "ni-ftp34": [8.0, 8.1, 8.2],
                                     "ni-ftp234": [7.0, 7.1, 7.2], "ni-ftp2": [1.0, 1.0, 1.0], "ni": [8.0, 8.1, 8.2]})
    def table_4(folder):
        return {c["claim"].split(": FTP from the ")[1].split(" (")[0]: c for c in claims_matrix.cells(folder)
                if c["claim"].startswith("Table 4")}
    three, four = table_4(tmp_path / "three"), table_4(tmp_path / "four")
    assert [(c["a"], c["b"], c["verdict"]) for c in three.values() if c["verdict"] != "n/a"] == [
        ("ni-ftp23", "ni-ftp3", "ni-ftp23 ahead"), ("ni", "ni-ftp23", "within noise")]
    assert claims_matrix.text(three["top four stages vs the top three"]) == "n/a (3-stage teacher)"
    assert [(c["a"], c["b"], c["verdict"]) for c in four.values()] == [  # ni-ftp2 is not a top-k variant
        ("ni-ftp34", "ni-ftp4", "ni-ftp34 ahead"), ("ni-ftp234", "ni-ftp34", "ni-ftp234 ahead"),
        ("ni", "ni-ftp234", "ni-ftp234 ahead")]
    assert claims_matrix.text(four["top four stages vs the top three"]).startswith("**reversed**")
    assert not any(c["named"] for c in three.values())


def test_a_sweep_grid_reads_1e_2_as_a_number():
    """YAML 1.1 reads "1e-2" (no dot) as a string; a sweep's lr must reach the optimizer as a float."""
    from sweep_synthesis import grid_value

    assert [grid_value(v) for v in ("1e-2", "3", "0.4", "true", "clean")] == [0.01, 3, 0.4, True, "clean"]
    assert isinstance(grid_value("1e-2"), float)
