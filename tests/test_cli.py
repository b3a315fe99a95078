"""The stages through the CLI: a tiny teacher -> synthesize -> kd chain, and one-line errors for bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from natinv.cli import main
from pipeline import tiny_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny profile's data and teacher."""
    tmp = tmp_path_factory.mktemp("e2e")
    params = tiny_params(tmp)
    proc = subprocess.run([sys.executable, "-m", "natinv", "data", *params, "--threads", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert main(["teacher", *params, "--teacher", "resnet8-w16"]) == 0
    return tmp, params


@pytest.fixture(scope="module")
def chain(prepared):
    """On top: 2 shards x {ni, di}, the evaluator, kd / scratch / prune from ni and the reference rows, the metrics."""
    tmp, params = prepared
    for method in ("ni", "di"):
        for shard in (0, 1):
            assert main(["synthesize", *params, "--teacher", "resnet8-w16", "--method", method, "--shard", str(shard)]) == 0
    assert main(["evaluator", *params, "--evaluator", "vgg11-w8"]) == 0
    for method in ("ni", "real"):
        assert main(["kd", *params, "--teacher", "resnet8-w16", "--method", method, "--student", "resnet8-w8"]) == 0
    for method in ("ni", "real"):
        assert main(["scratch", *params, "--teacher", "resnet8-w16", "--method", method, "--student", "resnet8-w8"]) == 0
    for method in ("ni", "none"):
        assert main(["prune", *params, "--teacher", "resnet8-w16", "--method", method, "--ratio", "0.5"]) == 0
    # Inception metrics: ni through a registered stand-in extractor, real as on an offline machine without weights
    extractor = ["--set", "metrics.inception.feature_extractor=test_metrics:TinyExtractor"]
    assert main(["metrics", *params, *extractor, "--teacher", "resnet8-w16", "--method", "ni"]) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "get_dir", lambda: str(tmp / "empty-hub"))
        assert main(["metrics", *params, "--teacher", "resnet8-w16", "--method", "real"]) == 0
    return tmp / "results" / "tiny", params


def _accuracy(exp: Path, weights: Path) -> float:
    """A stored network's accuracy on the experiment's test set, recomputed here."""
    from natinv.checkpoint import load_model
    from natinv.data import load, test_set
    from natinv.train import evaluate

    model, _ = load_model(weights)
    return evaluate(model, *test_set(load(exp / "data")), torch.device("cpu"))["acc"]


@pytest.mark.slow
def test_chain_writes_the_declared_outputs(chain):
    exp, _ = chain
    manifest = json.loads((exp / "data/manifest.json").read_text())
    assert manifest["train_images"] == 2000 and manifest["image_size"] == 32
    teacher = json.loads((exp / "teachers/resnet8-w16.json").read_text())
    assert teacher["test_acc"] == pytest.approx(_accuracy(exp, exp / "teachers/resnet8-w16.safetensors"))
    total = 0
    for shard in (0, 1):
        with np.load(exp / f"synth/resnet8-w16/ni/shard-{shard}.npz") as z:
            assert z["images"].dtype == np.float16 and z["labels"].dtype == np.int64
            assert z["images_uint8"].shape == z["images"].shape
            total += len(z["labels"])
        summary = json.loads((exp / f"synth/resnet8-w16/ni/shard-{shard}.json").read_text())
        assert summary["iterations"] == 10 and "agreement_uint8" in summary
        assert summary["engine"] == {"channels_last": True, "autocast": None, "compile": False, "batches_per_step": 1,
                                     "capture": False}
    assert total == 48
    for method in ("ni", "real"):
        kd = json.loads((exp / f"kd/resnet8-w16/{method}/resnet8-w8.json").read_text())
        assert kd["images"] == 48 and len(kd["epochs"]) == 1
        assert kd["test_acc"] == pytest.approx(_accuracy(exp, exp / f"kd/resnet8-w16/{method}/resnet8-w8.safetensors"))
    ni_json, real_json = (json.loads((exp / f"metrics/resnet8-w16/{m}.json").read_text()) for m in ("ni", "real"))
    assert ni_json["inception"]["available"] and ni_json["inception"]["fid"] > 0
    assert {"is", "fid", "precision", "recall", "f_score"} <= set(ni_json["inception"])
    assert not real_json["inception"]["available"] and "no Inception-v3 weights" in real_json["inception"]["reason"]
    assert list((exp.parent / "feature-cache").glob("fashion-mnist-real-*.safetensors"))  # the real side's features, cached once
    ni, real = ni_json["embeddings"], real_json["embeddings"]
    assert set(ni) == set(real) == {"teacher", "evaluator:vgg11-w8"}
    for net in ni:  # held-out real images are closer to the training images than 10-iteration NI, in every embedding
        assert real[net]["fd"] < ni[net]["fd"]
    assert json.loads((exp / "evaluators/vgg11-w8.json").read_text())["evaluator"] == "vgg11-w8"
    for method in ("ni", "real"):  # from scratch: beats chance (10 %) on its own training images, measured on real data too
        sc = json.loads((exp / f"scratch/resnet8-w16/{method}/resnet8-w8.json").read_text())
        assert sc["images"] == 48 and sc["own_acc"] > 20 and len(sc["epochs"]) == 15
        assert sc["train_images"] == 2000 and sc["train_loss"] > 0 and sc["test_loss"] > 0  # scored on every training image
    tuned, none = (json.loads((exp / f"prune/resnet8-w16/{m}/ratio-0.5.json").read_text()) for m in ("ni", "none"))
    assert tuned["params_after"] < tuned["params_before"] / 2 and tuned["fine_tuned"] and len(tuned["epochs"]) == 1
    assert not none["fine_tuned"] and none["epochs"] == []
    assert not list(exp.rglob("*.tmp"))  # nothing half-written left behind


def _one_line_error(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_bad_input_exits_with_one_line(prepared, capsys, tmp_path):
    tmp, params = prepared
    _one_line_error(["synthesize", *params, "--teacher", "resnet8-w16", "--method", "gan", "--shard", "0"],
                    "method = 'gan': expected one of ni, ni-ftp3, ni-ftp23, ni-ftp4, ni-ftp34, ni-ftp234, ni-o2m, ni-o2o, ni-o2o-ftp, ni-o2o-acs, di", capsys)
    _one_line_error(["synthesize", *params, "--teacher", "resnet8-w16", "--method", "ni", "--shard", "5"],
                    "shard = 5: method ni has 2 shard(s), 0..1 (synthesis.shards = 2)", capsys)
    _one_line_error(["synthesize", *params, "--teacher", "resnet8-w16", "--method", "adi", "--shard", "1"],
                    "shard = 1: method adi has 1 shard(s), 0..0 (it trains a student while it synthesizes)", capsys)
    _one_line_error(["synthesize", *params, "--teacher", "nobody", "--method", "ni", "--shard", "0"],
                    "--teacher = 'nobody': expected one of the keys of `models`", capsys)
    _one_line_error(["kd", *params, "--teacher", "resnet8-w16", "--method", "ni", "--student", "giant"],
                    "student = 'giant': expected one of", capsys)
    _one_line_error(["teacher", *params, "--set", "models.resnet8-w16.arch=resnet9", "--teacher", "resnet8-w16"],
                    "command line: models.resnet8-w16.arch: got 'resnet9'", capsys)


def test_a_diverged_shard_is_refused_and_nothing_is_written(prepared, capsys, monkeypatch):
    """A shard whose images hold NaN (an optimization that diverged everywhere, e.g. DAFL against a diverged teacher)
    is not stored: every later stage would read NaN (agreement 'argmax of NaN', FD failing)."""
    from natinv.synthesis import dafl

    tmp, params = prepared
    exp = tmp / "results" / "tiny"
    real = dafl.run_shard

    def diverged(job):  # past the method's own retries: what the shard would store
        out = real(job)
        out.images[:5] = np.nan
        return out

    monkeypatch.setattr(dafl, "run_shard", diverged)
    argv = ["synthesize", *params, "--teacher", "resnet8-w16", "--method", "dafl"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("natinv synthesize: error: resnet8-w16/dafl shard 0: 5 of 48 images hold NaN or infinite values")
    assert not (exp / "synth/resnet8-w16/dafl").exists()


def test_cli_process_exit_code_for_missing_data(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"results: {tmp_path}\ndata: {{dataset: custom, path: {tmp_path / 'missing.npz'}}}\n")
    proc = subprocess.run([sys.executable, "-m", "natinv", "data", "--params", str(ROOT / "params/default.yaml"),
                           "--params", str(overlay)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.npz: not found" in proc.stderr


def test_import_checkpoint_through_the_cli(prepared, tmp_path, capsys):
    import torch

    from natinv.checkpoint import load_model
    from natinv.models import build_model

    tmp, params = prepared
    exp = tmp / "results" / "tiny"
    model = build_model("resnet8", 10, 1, 8)
    torch.save(model.state_dict(), tmp_path / "mine.pt")
    extra = ["--set", "models.mine={arch: resnet8, width: 8}"]
    assert main(["import-checkpoint", *params, *extra, "--teacher", "mine", "--checkpoint", str(tmp_path / "mine.pt")]) == 0
    loaded, meta = load_model(exp / "teachers/mine.safetensors")
    assert meta.in_channels == 1 and meta.num_classes == 10
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    capsys.readouterr()
    torch.save(build_model("vgg11", 10, 1, 8).state_dict(), tmp_path / "vgg.pt")
    _one_line_error(["import-checkpoint", *params, *extra, "--teacher", "mine", "--checkpoint", str(tmp_path / "vgg.pt")],
                    "vgg.pt: does not fit architecture resnet8", capsys)


@pytest.mark.slow
def test_cotrained_methods_through_the_stages(chain):
    """ADI, DAFL and DFAD: one synthesize call (one shard); the kd job of their co-trained student adopts it, another
    student distils from their images; metrics, scratch and prune take their images like any method's."""
    import torch

    from natinv.checkpoint import load_model
    from natinv.data import load, normalize
    from natinv.train import evaluate

    exp, params = chain
    t = ["--teacher", "resnet8-w16"]
    for method in ("adi", "dafl", "dfad"):
        assert main(["synthesize", *params, *t, "--method", method]) == 0
        summary = json.loads((exp / f"synth/resnet8-w16/{method}/shard-0.json").read_text())
        assert summary["images"] == 48 and summary["cotrain"]["student"] == "resnet8-w8"
        assert not (exp / f"synth/resnet8-w16/{method}/shard-1.npz").exists()
        assert main(["kd", *params, *t, "--method", method, "--student", "resnet8-w8"]) == 0
        kd = json.loads((exp / f"kd/resnet8-w16/{method}/resnet8-w8.json").read_text())
        assert kd["epochs"] == [] and kd["cotrained"]["steps"] == summary["cotrain"]["steps"]
        student, _ = load_model(exp / f"kd/resnet8-w16/{method}/resnet8-w8.safetensors")
        with np.load(exp / f"synth/resnet8-w16/{method}/shard-0.npz") as z:
            stored = {k[8:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("student/")}
        assert all(torch.equal(stored[k], v) for k, v in student.state_dict().items())  # adopted as trained
        ds = load(exp / "data")
        assert evaluate(student, normalize(ds.test_x, ds.mean, ds.std), ds.test_y, torch.device("cpu"))["acc"] == kd["test_acc"]
    assert main(["kd", *params, *t, "--method", "dafl", "--student", "vgg11-w8"]) == 0  # not its co-student: plain KD
    assert len(json.loads((exp / "kd/resnet8-w16/dafl/vgg11-w8.json").read_text())["epochs"]) == 1
    assert main(["metrics", *params, *t, "--method", "dfad"]) == 0
    assert main(["scratch", *params, *t, "--method", "dafl", "--student", "resnet8-w8"]) == 0
    assert main(["prune", *params, *t, "--method", "adi", "--ratio", "0.5"]) == 0
    assert main(["report", *params, "--set", "synthesis.run=[ni, adi, dafl, dfad]"]) == 0
    report = (exp / "report/report.md").read_text()
    assert "### In the shape of the paper's Table 5" in report
    for cell in ("DAFL: dafl", "DFAD: dfad", "ADI: adi", "NI (ours): ni", "92.22", "93.30", "93.26"):  # paper CIFAR-10 cells
        assert cell in report, cell
    assert report.count("†") >= 4  # three co-trained students in the layout, and the legend
    summary = json.loads((exp / "report/summary.json").read_text())
    assert summary["synthesis"]["resnet8-w16/dafl"]["final_ce"] is None and summary["kd"]["resnet8-w16/adi/resnet8-w8"]["cotrained"]


def test_every_shard_in_turn_keeps_the_shards_already_made_from_these_settings(prepared, capsys):
    """`synthesize` without --shard (a DVC stage, whose folder persists): shards made from the same parameters and code
    are kept, so an interrupted run loses none; a changed setting makes them again; shards beyond the count go."""
    tmp, params = prepared
    job = ["synthesize", *params, "--teacher", "resnet8-w16", "--method", "di", "--set", "synthesis.methods.di.iterations=3"]
    folder = tmp / "results/tiny/synth/resnet8-w16/di"
    assert main(job) == 0
    first = {p.name: p.read_bytes() for p in folder.glob("shard-*.[np][pn]*")}  # arrays and grids (JSONs hold times)
    (folder / "shard-1.npz").unlink()  # as a run killed after shard 0
    stamp = (folder / "shard-0.npz").stat().st_mtime_ns
    capsys.readouterr()
    assert main(job) == 0
    assert "resnet8-w16/di: kept shard 0 (made from these parameters and this code)" in capsys.readouterr().err
    assert (folder / "shard-0.npz").stat().st_mtime_ns == stamp
    assert {p.name: p.read_bytes() for p in folder.glob("shard-*.[np][pn]*")} == first  # shard 1 again, the same bytes
    assert main([*job, "--set", "synthesis.methods.di.lambda_bn=2.0"]) == 0
    assert "kept shard" not in capsys.readouterr().err and (folder / "shard-0.npz").stat().st_mtime_ns != stamp
    assert main([*job, "--set", "synthesis.shards=1", "--set", "synthesis.num_images=32"]) == 0
    assert sorted(p.name for p in folder.glob("shard-*")) == ["shard-0.json", "shard-0.npz", "shard-0.png"]


def test_outputs_follow_the_umask(prepared, tmp_path):
    """Files are written under a temporary name and renamed, with the mode a new file gets from the umask."""
    import os

    from natinv.io import atomic_write_bytes

    old = os.umask(0o002)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o664


def test_a_missing_input_names_the_stage_and_command_that_make_it(tmp_path, capsys):
    params = tiny_params(tmp_path)
    assert main(["synthesize", *params, "--teacher", "resnet8-w16", "--method", "ni", "--shard", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("natinv synthesize: error: ") and "teachers/resnet8-w16.safetensors is missing: " in err
    assert f"stage teacher makes it (`python -m natinv teacher {' '.join(params)} --teacher resnet8-w16`" in err


def test_synthesis_logs_every_batch_with_the_time_left(prepared, capsys):
    tmp, params = prepared
    assert main(["synthesize", *params, "--teacher", "resnet8-w16", "--method", "ni", "--shard", "1",  # 2 of the 3 batches
                 "--set", "synthesis.methods.ni.iterations=2"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if " batch " in line]
    assert len(lines) == 2 and "; ETA " in lines[0] and lines[0].endswith(" for the shard") and "ETA" not in lines[1], lines


def test_a_meta_learned_method_warms_up_once_and_its_shards_stay_independent(prepared, capsys):
    """ni-fast: the `meta` stage writes the meta-parameters every shard starts from; a shard made alone and the same
    shard made after another (whose batches moved that shard's meta-parameters) hold the same bytes, and a shard
    without the warm-up's file says which stage makes it."""

    tmp, params = prepared
    exp = tmp / "results/tiny-meta"  # an experiment of its own: the other tests' shards stay out of its report
    params = [*params, "--set", "experiment=tiny-meta"]
    assert main(["data", *params]) == 0  # its own data; the teacher adopted from the other experiment, as README says
    assert main(["import-checkpoint", *params, "--teacher", "resnet8-w16", "--checkpoint",
                 str(tmp / "results/tiny/teachers/resnet8-w16.safetensors")]) == 0
    job = ["--teacher", "resnet8-w16", "--method", "ni-fast", "--set", "synthesis.run=[ni-fast]"]
    assert main(["synthesize", *params, *job, "--shard", "0"]) == 2
    assert "meta/resnet8-w16/ni-fast.safetensors is missing: stage meta makes it (`python -m natinv meta" in capsys.readouterr().err
    assert main(["meta", *params, *job]) == 0
    warm = json.loads((exp / "meta/resnet8-w16/ni-fast.json").read_text())
    assert warm["batches"] == warm["updates"] == 2 and warm["iterations"] == 5
    with safe_open(str(exp / "meta/resnet8-w16/ni-fast.safetensors"), framework="pt") as f:  # alpha's mean, one channel
        assert f.get_tensor("alpha_mean").tolist() == warm["alpha_mean"] and len(warm["alpha_mean"]) == 1
    assert f"alpha's mean {warm['alpha_mean'][0]:.2f} (alpha_mean " in capsys.readouterr().err  # its last log line
    folder = exp / "synth/resnet8-w16/ni-fast"
    assert main(["synthesize", *params, *job, "--shard", "1"]) == 0
    alone = (folder / "shard-1.npz").read_bytes()
    assert main(["synthesize", *params, *job, "--shard", "0"]) == 0
    assert main(["synthesize", *params, *job, "--shard", "1"]) == 0
    assert (folder / "shard-1.npz").read_bytes() == alone
    summary = json.loads((folder / "shard-1.json").read_text())
    assert summary["iterations"] == 3 and summary["cpu_seconds"] > 0
    # like any method: a KD student, and its rows in the report (its own Table 5 column, the warm-up in the CPU time)
    assert main(["kd", *params, *job, "--student", "resnet8-w8"]) == 0
    assert main(["report", *params, "--set", "synthesis.run=[ni, di, ni-fast]"]) == 0
    report = (exp / "report/report.md").read_text()
    assert "| ni-fast (not in the paper) |" in report and "| meta resnet8-w16/ni-fast | 1 |" in report
    totals = json.loads((exp / "report/summary.json").read_text())["synthesis"]["resnet8-w16/ni-fast"]
    assert totals["warmup_cpu_seconds"] == warm["cpu_seconds"] > 0
    assert totals["total_cpu_seconds"] == pytest.approx(totals["cpu_seconds"] + warm["cpu_seconds"])
    assert "resnet8-w16/ni-fast/resnet8-w8" in json.loads((exp / "report/summary.json").read_text())["kd"]
    # a damaged warm-up file: one line naming it, no shard written
    (exp / "meta/resnet8-w16/ni-fast.safetensors").write_bytes(b"not a tensor file")
    before = (folder / "shard-0.npz").read_bytes()
    capsys.readouterr()
    assert main(["synthesize", *params, *job, "--shard", "0"]) == 2
    assert "meta/resnet8-w16/ni-fast.safetensors: corrupt safetensors file" in capsys.readouterr().err
    assert (folder / "shard-0.npz").read_bytes() == before


def test_a_centered_render_reaches_the_warm_up_and_the_shards(prepared):
    """acs_center: range through the stages: the warm-up and a shard are given the data's valid range (without it
    each stops with one line) and render with it: the same shard's images differ from the paper's render."""
    tmp, params = prepared
    exp = tmp / "results/tiny-center"
    params = [*params, "--set", "experiment=tiny-center"]
    assert main(["data", *params]) == 0
    assert main(["import-checkpoint", *params, "--teacher", "resnet8-w16", "--checkpoint",
                 str(tmp / "results/tiny/teachers/resnet8-w16.safetensors")]) == 0
    shards = {}
    for mode in ("zero", "range"):
        job = ["--teacher", "resnet8-w16", "--method", "ni-fast", "--set", "synthesis.run=[ni-fast]",
               "--set", f"synthesis.methods.ni-fast.acs_center={mode}"]
        assert main(["meta", *params, *job]) == 0
        assert main(["synthesize", *params, *job, "--shard", "0"]) == 0
        shards[mode] = (exp / "synth/resnet8-w16/ni-fast/shard-0.npz").read_bytes()
    assert shards["range"] != shards["zero"]


def test_a_method_with_too_many_curve_points_logs_one_point_per_batch_and_its_curves_as_one_artifact(prepared):
    """Above tracking.live_curve_points (a method's batches x iterations), a shard's run holds `batch/{term}` at each
    batch's step and curves.npz (the arrays the shard stores), not a metric per batch and iteration; below, the live
    per-iteration curves."""
    from mlflow import MlflowClient

    tmp, params = prepared
    job = ["synthesize", *params, "--teacher", "resnet8-w16", "--method", "ni", "--shard", "1"]
    client = MlflowClient(f"sqlite:///{tmp / 'results' / 'mlflow.db'}")

    def latest_run():
        exp = client.get_experiment_by_name("natinv-tiny").experiment_id
        return client.search_runs([exp], "tags.stage = 'synthesize' and tags.method = 'ni' and tags.shard = '1'",
                                  order_by=["attributes.start_time DESC"], max_results=1)[0]

    assert main([*job, "--set", "tracking.live_curve_points=29"]) == 0  # 3 batches x 10 iterations = 30 points
    compact = latest_run()
    with np.load(tmp / "results/tiny/synth/resnet8-w16/ni/shard-1.npz") as z:
        stored = {k: z[k] for k in ("loss_curves", "batch_index", "best_iteration")}
    assert not [k for k in compact.data.metrics if k.startswith("batch-")]
    ce = client.get_metric_history(compact.info.run_id, "batch/ce")
    assert [m.step for m in ce] == list(range(1, len(stored["batch_index"]) + 1))  # numbered within the shard
    at_best = stored["loss_curves"][np.arange(len(stored["best_iteration"])), stored["best_iteration"]]
    assert np.allclose([m.value for m in ce], at_best[:, 1])
    artifact = Path(client.download_artifacts(compact.info.run_id, "curves.npz", str(tmp)))
    with np.load(artifact) as z:
        assert all(np.array_equal(z[k], v) for k, v in stored.items())

    assert main(job) == 0
    live = latest_run()
    assert stored["batch_index"][0] > 0  # shard 1's first batch is not the run's first: its metrics are its own
    assert {f"batch-{k}/{t}" for k in range(len(stored["batch_index"])) for t in ("ce", "bn")} <= set(live.data.metrics)
    assert len(client.get_metric_history(live.info.run_id, "batch-0/ce")) == 10
    assert "grid.png" in [a.path for a in client.list_artifacts(live.info.run_id)]  # one name in every shard's run
    assert "curves.npz" not in [a.path for a in client.list_artifacts(live.info.run_id)]
