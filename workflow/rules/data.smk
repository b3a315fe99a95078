rule data:
    output:
        train=f"{EXP}/data/train.npz",
        test=f"{EXP}/data/test.npz",
        manifest=f"{EXP}/data/manifest.json",
    params:
        file=PARAMS,
        tracked=tracked("data"),
    threads: CFG.job_threads.data
    log:
        f"{EXP}/logs/data.log",
    shell:
        "python -m natinv data --params {params.file} --threads {threads} 2>&1 | tee {log}"
