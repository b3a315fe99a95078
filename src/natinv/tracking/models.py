"""A stage's output weights in MLflow: a network (a teacher, an evaluator, a distilled student) as a logged model with
its signature and an input example, so it appears in the run's Models column and loads with
`mlflow.pytorch.load_model` (where natinv is installed); other tensors (ni-fast's meta-parameters) as artifacts."""
from __future__ import annotations

import os
from pathlib import Path

from natinv.config import Config
from natinv.tracking.store import retry, tracking_uri


def log_weights(cfg: Config, client, run_id: str, path: Path) -> None:
    """`path` (a safetensors file the stage wrote) on run `run_id`: a network as a logged model named after the file,
    with the file itself among the model's files; anything else under `weights/`."""
    from natinv.checkpoint import is_network

    if not is_network(path):
        retry(client.log_artifact, run_id, str(path), "weights")
        return
    retry(_log_network, cfg, run_id, path)


def _log_network(cfg: Config, run_id: str, path: Path) -> None:
    import logging

    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from natinv.checkpoint import load_model

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its notes on pip versions and conda environments
    model, meta = load_model(path, "cpu")
    model.eval()
    example = np.zeros((1, meta.in_channels, meta.image_size, meta.image_size), dtype=np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    # MLflow's fluent API needs its global tracking URI, and setting that also sets MLFLOW_TRACKING_URI for the process
    # (a later stage in the same process would take it for a user's server): both are put back afterwards
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        with mlflow.start_run(run_id=run_id):  # resumed only to attach the model; the caller sets the run's status after
            mlflow.pytorch.log_model(model, name=path.stem, signature=infer_signature(example, logits),
                                     input_example=example, serialization_format="pickle",
                                     pip_requirements=[f"torch=={torch.__version__}"], extra_files=[str(path)],
                                     metadata={"arch": meta.arch, "classes": meta.num_classes,
                                               "input": "normalized images (mean/std in the checkpoint)"})
    finally:
        mlflow.set_tracking_uri(previous)
