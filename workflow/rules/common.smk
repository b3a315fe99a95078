# Helpers shared by the rules. Paths follow the file contract of natinv.paths.


def tracked(stage):
    """`params:` entry: the values of every parameter the job depends on, so that a change re-runs exactly that job."""
    return lambda w: stage_params(CFG, stage, **dict(w.items()))


def evaluator_files():
    return expand(f"{EXP}/evaluators/{{evaluator}}.safetensors", evaluator=CFG.metrics.evaluators)


def shard_files(teacher, method, ext="npz"):
    return expand(f"{EXP}/synth/{teacher}/{method}/shard-{{shard}}.{ext}", shard=range(CFG.shards_of(method)))
