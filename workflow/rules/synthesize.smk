# One job per shard: shards are the unit of parallelism (one GPU each on a cluster).
rule synthesize:
    input:
        teacher=f"{EXP}/teachers/{{teacher}}.safetensors",
    output:
        npz=f"{EXP}/synth/{{teacher}}/{{method}}/shard-{{shard}}.npz",
        json=f"{EXP}/synth/{{teacher}}/{{method}}/shard-{{shard}}.json",
        grid=f"{EXP}/synth/{{teacher}}/{{method}}/shard-{{shard}}.png",
    params:
        file=PARAMS,
        tracked=tracked("synthesize"),
    threads: CFG.job_threads.synthesize
    priority: 2  # the longest chain is shards -> their KD: start it before the jobs that only need the teacher
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/synthesize/{{teacher}}-{{method}}-{{shard}}.log",
    shell:
        "python -m natinv synthesize --params {params.file} --threads {threads} --teacher {wildcards.teacher}"
        " --method {wildcards.method} --shard {wildcards.shard} 2>&1 | tee {log}"
