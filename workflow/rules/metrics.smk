# How real the images are: independent evaluator networks trained on real data, then per teacher the metrics
# of every synthesized method (metrics) and of held-out real images, the floor (metrics_real), and a t-SNE of the
# teacher's features for real and all methods' images together (tsne).
rule evaluator:
    input:
        rules.data.output,
    output:
        weights=f"{EXP}/evaluators/{{evaluator}}.safetensors",
        json=f"{EXP}/evaluators/{{evaluator}}.json",
    params:
        file=PARAMS,
        tracked=tracked("evaluator"),
    threads: CFG.job_threads.evaluator
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/evaluator/{{evaluator}}.log",
    shell:
        "python -m natinv evaluator --params {params.file} --threads {threads} --evaluator {wildcards.evaluator} 2>&1 | tee {log}"


rule metrics:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
        evaluators=evaluator_files(),
        shards=lambda w: shard_files(w.teacher, w.method),
    output:
        json=f"{EXP}/metrics/{{teacher}}/{{method}}.json",
    wildcard_constraints:
        method="(?!(real|tsne)\\.json)[^/]+",  # not `real` or `tsne` (the lookahead sees the `.json` that follows)
    params:
        file=PARAMS,
        tracked=tracked("metrics"),
    threads: CFG.job_threads.metrics
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/metrics/{{teacher}}-{{method}}.log",
    shell:
        "python -m natinv metrics --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method {wildcards.method} 2>&1 | tee {log}"


rule metrics_real:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
        evaluators=evaluator_files(),
    output:
        json=f"{EXP}/metrics/{{teacher}}/real.json",
    params:
        file=PARAMS,
        tracked=tracked("metrics_real"),
    threads: CFG.job_threads.metrics
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/metrics/{{teacher}}-real.log",
    shell:
        "python -m natinv metrics --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method real 2>&1 | tee {log}"


rule tsne:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
        shards=lambda w: [f for m in plan.tsne_methods(CFG, w.teacher) for f in shard_files(w.teacher, m)],
    output:
        json=f"{EXP}/metrics/{{teacher}}/tsne.json",
        npz=f"{EXP}/metrics/{{teacher}}/tsne.npz",
        png=f"{EXP}/metrics/{{teacher}}/tsne.png",
    params:
        file=PARAMS,
        tracked=tracked("tsne"),
    threads: CFG.job_threads.metrics
    log:
        f"{EXP}/logs/metrics/{{teacher}}-tsne.log",
    shell:
        "python -m natinv tsne --params {params.file} --threads {threads} --teacher {wildcards.teacher} 2>&1 | tee {log}"
