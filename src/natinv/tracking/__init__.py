"""MLflow tracking: one run per stage invocation, nested under one parent run per pipeline run.

The files under results/ are the truth; tracking only mirrors them. Every tracking call is wrapped so that a failure
(no MLflow, a locked database, a server that is down) is one warning line, never a failed stage. A run whose process
was killed is marked KILLED by the next pipeline start. The parent run's id travels in `NATINV_MLFLOW_PARENT_RUN`.

- `store`: where the store is, turns at it, retries, warnings;
- `stage`: a stage's run (`StageRun`) and the curves it emits while it runs (`emit`);
- `inputs`: a stage's input files as MLflow datasets;
- `parent`: a pipeline's parent run and its headline results (imported by the Snakefile, not by the stages, so a
  stage's code digest does not hold the report's code that the parent run reads).
"""
from natinv.tracking.inputs import datasets_of
from natinv.tracking.stage import Outcome, StageRun, emit, emit_epoch, live_curves, neutral_params, thin
from natinv.tracking.store import PARENT_ENV, PROBE_S, flatten

__all__ = ["PARENT_ENV", "PROBE_S", "Outcome", "StageRun", "datasets_of", "emit", "emit_epoch", "flatten", "live_curves",
           "neutral_params", "thin"]
