# The paper's other two applications of the images: a student trained from scratch on them (scratch; scratch_real on
# as many real images) and the teacher L1-pruned and fine-tuned on them (prune; prune_real on real images,
# prune_none without fine-tuning), per pruning ratio.
rule scratch:
    input:
        data=rules.data.output,
        shards=lambda w: shard_files(w.teacher, w.method),
    output:
        json=f"{EXP}/scratch/{{teacher}}/{{method}}/{{student}}.json",
    wildcard_constraints:
        method="(?!real/)[^/]+",  # not `real` (the lookahead sees the slash that follows the method)
    params:
        file=PARAMS,
        tracked=tracked("scratch"),
    threads: CFG.job_threads.scratch
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/scratch/{{teacher}}-{{method}}-{{student}}.log",
    shell:
        "python -m natinv scratch --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method {wildcards.method} --student {wildcards.student} 2>&1 | tee {log}"


rule scratch_real:
    input:
        data=rules.data.output,
    output:
        json=f"{EXP}/scratch/{{teacher}}/real/{{student}}.json",
    params:
        file=PARAMS,
        tracked=tracked("scratch_real"),
    threads: CFG.job_threads.scratch
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/scratch/{{teacher}}-real-{{student}}.log",
    shell:
        "python -m natinv scratch --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method real --student {wildcards.student} 2>&1 | tee {log}"


rule prune:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
        shards=lambda w: shard_files(w.teacher, w.method),
    output:
        json=f"{EXP}/prune/{{teacher}}/{{method}}/ratio-{{ratio}}.json",
    wildcard_constraints:
        method="(?!(real|none)/)[^/]+",
    params:
        file=PARAMS,
        tracked=tracked("prune"),
    threads: CFG.job_threads.prune
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/prune/{{teacher}}-{{method}}-{{ratio}}.log",
    shell:
        "python -m natinv prune --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method {wildcards.method} --ratio {wildcards.ratio} 2>&1 | tee {log}"


rule prune_real:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
    output:
        json=f"{EXP}/prune/{{teacher}}/real/ratio-{{ratio}}.json",
    params:
        file=PARAMS,
        tracked=tracked("prune_real"),
    threads: CFG.job_threads.prune
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/prune/{{teacher}}-real-{{ratio}}.log",
    shell:
        "python -m natinv prune --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method real --ratio {wildcards.ratio} 2>&1 | tee {log}"


rule prune_none:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
    output:
        json=f"{EXP}/prune/{{teacher}}/none/ratio-{{ratio}}.json",
    params:
        file=PARAMS,
        tracked=tracked("prune_none"),
    threads: CFG.job_threads.prune
    log:
        f"{EXP}/logs/prune/{{teacher}}-none-{{ratio}}.log",
    shell:
        "python -m natinv prune --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method none --ratio {wildcards.ratio} 2>&1 | tee {log}"
