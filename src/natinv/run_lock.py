"""One set of parameters per experiment folder at a time.

Every stage command of a Snakemake run reads `results/{experiment}/params.yaml`, which the run writes when it
starts. A second run on the same folder with other parameters (another overlay, another `--config`) would rewrite
that file under the first run's pending jobs, which would then run with the second run's settings while Snakemake
records the first's. So a run holds a shared lock on `results/{experiment}/.run.lock` for its lifetime, and may
write different parameters only while no other run holds it. Runs with equal parameters share the folder as
Snakemake allows (its own lock keeps their outputs apart).
"""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from natinv.config import Config, resolved_text, write_resolved
from natinv.errors import NatinvError

LOCK_NAME = ".run.lock"


class ExperimentBusy(NatinvError):
    """Another run on this experiment folder uses other parameters."""


def _same(cfg: Config, params: Path) -> bool:
    return params.is_file() and params.read_bytes() == resolved_text(cfg)


def hold(cfg: Config, params: Path) -> IO | None:
    """Write `params` (the resolved parameters of `cfg`) unless another live run on its folder uses other ones, and
    hold the folder's lock until the returned file is closed (or the process ends). None where the file system
    has no locks (the parameters are then written unguarded)."""
    params.parent.mkdir(parents=True, exist_ok=True)
    lock = open(params.parent / LOCK_NAME, "a")
    try:
        if _same(cfg, params):
            fcntl.flock(lock, fcntl.LOCK_SH)  # waits only while another run is writing its parameters
            if _same(cfg, params):
                return lock
            fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExperimentBusy(
                f"{params}: another run on {params.parent} is running with other parameters; wait for it to end, "
                f"or give this run its own `experiment:`") from None
        write_resolved(cfg, params)
        fcntl.flock(lock, fcntl.LOCK_SH)  # other runs with these parameters may now join
        return lock
    except ExperimentBusy:
        lock.close()
        raise
    except OSError:  # no locks on this file system
        lock.close()
        write_resolved(cfg, params)
        return None
