"""`python -m natinv bench synth`: one JSON line with the timing and every setting; bad input is one line."""
import json

import pytest

from natinv.cli import main


@pytest.mark.parametrize("method", ["ni", "di"])
def test_bench_synth_prints_one_json_line(method, capsys):
    argv = ["bench", "synth", "--method", method, "--arch", "resnet8", "--num-classes", "10", "--batch-size", "8",
            "--iterations", "2", "--warmup", "1", "--threads", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["method"] == method and result["arch"] == "resnet8" and result["batch_size"] == 8
    assert result["iterations"] == 2 and result["settings"]["iterations"] == 3  # warm-up + timed
    assert result["s_per_iter"] > 0 and result["images_per_s"] == pytest.approx(8 / result["s_per_iter"])
    assert result["peak_memory_mb"] > 0 and result["device"] == "cpu" and result["threads"] == 1


def test_bench_bad_input_is_one_line(capsys):
    assert main(["bench", "synth", "--method", "ni", "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["natinv bench: error: --batch-size = 0: expected an integer >= 1"]
