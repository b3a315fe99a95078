rule report:
    input:
        data=[rules.data.output.test, rules.data.output.manifest],
        teachers=expand(f"{EXP}/teachers/{{teacher}}.json", teacher=CFG.teacher.models),
        shards=[str(f) for t, m, s in plan.synthesis_jobs(CFG) for f in (paths.shard_npz(CFG.exp_dir, t, m, s), paths.shard_json(CFG.exp_dir, t, m, s))],
        kd=[str(paths.kd_json(CFG.exp_dir, *job)) for job in plan.kd_jobs(CFG)],
        metrics=[str(paths.metrics_json(CFG.exp_dir, *job)) for job in plan.metrics_jobs(CFG)],
        tsne=[str(paths.tsne_files(CFG.exp_dir, t)["json"]) for t in CFG.teacher.models],
        scratch=[str(paths.scratch_json(CFG.exp_dir, *job)) for job in plan.scratch_jobs(CFG)],
        prune=[str(paths.prune_json(CFG.exp_dir, *job)) for job in plan.prune_jobs(CFG)],
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
