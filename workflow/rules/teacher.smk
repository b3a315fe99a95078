rule teacher:
    input:
        rules.data.output,
    output:
        weights=f"{EXP}/teachers/{{teacher}}.safetensors",
        json=f"{EXP}/teachers/{{teacher}}.json",
    params:
        file=PARAMS,
        tracked=tracked("teacher"),
    threads: CFG.job_threads.teacher
    priority: 3  # every other job waits for a teacher
    resources:
        gpu=CFG.job_gpus,
    log:
        f"{EXP}/logs/teacher/{{teacher}}.log",
    shell:
        "python -m natinv teacher --params {params.file} --threads {threads} --teacher {wildcards.teacher} 2>&1 | tee {log}"
