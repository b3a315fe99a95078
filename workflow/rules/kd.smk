# Each student distilled from every synthesized method (kd) and from as many real images (kd_real, the reference).
rule kd:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
        shards=lambda w: shard_files(w.teacher, w.method),
    output:
        json=f"{EXP}/kd/{{teacher}}/{{method}}/{{student}}.json",
        weights=f"{EXP}/kd/{{teacher}}/{{method}}/{{student}}.safetensors",
    wildcard_constraints:
        method="(?!real/)[^/]+",  # not `real` (the lookahead sees the slash that follows the method)
    params:
        file=PARAMS,
        tracked=tracked("kd"),
    threads: CFG.job_threads.kd
    priority: 1
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/kd/{{teacher}}-{{method}}-{{student}}.log",
    shell:
        "python -m natinv kd --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method {wildcards.method} --student {wildcards.student} 2>&1 | tee {log}"


rule kd_real:
    input:
        data=rules.data.output,
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
    output:
        json=f"{EXP}/kd/{{teacher}}/real/{{student}}.json",
        weights=f"{EXP}/kd/{{teacher}}/real/{{student}}.safetensors",
    params:
        file=PARAMS,
        tracked=tracked("kd_real"),
    threads: CFG.job_threads.kd
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/kd/{{teacher}}-real-{{student}}.log",
    shell:
        "python -m natinv kd --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method real --student {wildcards.student} 2>&1 | tee {log}"
