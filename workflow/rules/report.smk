rule report:
    input:
        data=[rules.data.output.test, rules.data.output.manifest],
        teachers=expand(f"{EXP}/teachers/{{teacher}}.json", teacher=CFG.teacher.models),
        shards=[f for t in CFG.teacher.models for m in CFG.synthesis.run for ext in ("npz", "json") for f in shard_files(t, m, ext)],
        kd=expand(f"{EXP}/kd/{{teacher}}/{{method}}/{{student}}.json", teacher=CFG.teacher.models, method=CFG.methods_and_real(),
                  student=CFG.kd.students),
        metrics=expand(f"{EXP}/metrics/{{teacher}}/{{method}}.json", teacher=CFG.teacher.models,
                       method=CFG.methods_and_real()),
        tsne=expand(f"{EXP}/metrics/{{teacher}}/tsne.json", teacher=CFG.teacher.models),
        scratch=expand(f"{EXP}/scratch/{{teacher}}/{{method}}/{{student}}.json", teacher=CFG.teacher.models,
                       method=CFG.methods_and_real(), student=CFG.scratch.students),
        prune=expand(f"{EXP}/prune/{{teacher}}/{{method}}/ratio-{{ratio}}.json", teacher=CFG.teacher.models,
                     method=[*CFG.methods_and_real(), "none"], ratio=[f"{r:g}" for r in CFG.prune.ratios]),
    output:
        report=f"{EXP}/report/report.md",
        summary=f"{EXP}/report/summary.json",
        figures=directory(f"{EXP}/report/figures"),
        loss_plots=directory(f"{EXP}/report/plots/synthesis-loss"),
        bn_plots=directory(f"{EXP}/report/plots/synthesis-bn"),
        accuracy_plots=directory(f"{EXP}/report/plots/accuracy"),
    params:
        file=PARAMS,
        tracked=tracked("report"),
    threads: CFG.job_threads.report
    log:
        f"{EXP}/logs/report.log",
    shell:
        "python -m natinv report --params {params.file} --threads {threads} 2>&1 | tee {log}"
