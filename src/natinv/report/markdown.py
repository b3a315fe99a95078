"""report.md: every table beside the paper's values, with the settings that differ, from summary.json (the paper's
table shapes: natinv.report.paper_tables; cells: natinv.report.cells)."""
from __future__ import annotations

import time

from natinv import plan
from natinv.config import Config
from natinv.paper import FIG6_TEXT, KD_SETTINGS, table5_row, table8_dataset, table9_row, teacher_acc
from natinv.report.cells import acc_cell, embeddings_of, md_table, mean_of, model_words, reference_count, sum_max, verdict_words
from natinv.report.identity import paper_key
from natinv.report.paper_tables import (
    components_section,
    ftp_section,
    inception_section,
    pair_row,
    paper_pair,
    table5_shape,
    table8_cell,
)
from natinv.synthesis import registry


def _settings_rows(cfg: Config, summary: dict) -> list[list]:
    syn = cfg.synthesis
    ran = {k: syn.methods[k] for k in syn.run}
    ni = list(registry.of_kind(ran, "naturalinversion").values())  # the paper's settings table lists NI's own settings
    iters = ", ".join(f"{k}: {c.iterations}" for k, c in ran.items() if not registry.of(c).generative)

    def each(fmt) -> str:  # one entry per distinct value over the NI methods run
        return ", ".join(dict.fromkeys(fmt(m) for m in ni)) or "-"

    adi = {k: c for k, c in ran.items() if registry.of(c).competition(c)}
    gens = {k: c for k, c in ran.items() if registry.of(c).generative}
    kd_images = sorted({v["images"] for v in summary["kd"].values()})
    ours = {
        "synthesis iterations": iters,
        "synthesis batch size": str(syn.batch_size),
        "images for KD": ", ".join(f"{n:,}" for n in kd_images) or "-",
        "NI generator width": each(lambda m: str(m.generator_width)),
        "NI λ_BN": each(lambda m: f"{m.lambda_bn:g}"),
        "NI lr generator / FTP / α": each(lambda m: f"{m.lr_generator:g} / {m.lr_ftp:g} / {m.lr_alpha:g}"),
        "NI α init": each(lambda m: f"N({m.alpha_mean:g}, {m.alpha_std:g})"),
        "KD epochs, temperature": f"{cfg.kd.epochs}, T = {cfg.kd.temperature:g}",
        "ADI competition weight, co-trained student": ", ".join(
            f"{k}: {m.competition:g}, {m.cotrain.student} ({m.cotrain.steps} KD steps per batch)" for k, m in adi.items()) or "-",
        "DAFL / DFAD generator steps x batch": ", ".join(
            f"{k}: {m.iterations:,} x {m.batch_size}" for k, m in gens.items()) or "-",
    }
    return [[k, KD_SETTINGS[k], v] for k, v in ours.items()]


def render(cfg: Config, summary: dict, manifest: dict, made: dict[str, str]) -> str:
    row = table5_row(cfg.data.dataset)
    lines = [f"# Report: experiment `{cfg.experiment}`", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from the stage outputs under `{cfg.exp_dir}`. "
             f"Dataset **{manifest['dataset']}** ({manifest['train_images']:,} train / {manifest['test_images']:,} test images, "
             f"{manifest['in_channels']}×{manifest['image_size']}×{manifest['image_size']}, {manifest['num_classes']} classes).", ""]
    if manifest.get("standin"):
        lines += [f"**Stand-in data.** This run's images are an offline stand-in with {manifest['dataset']}'s shape and "
                  "class count (random class patterns, `data.standin`), not the dataset: it shows that every job runs, "
                  "and none of its numbers says anything about the method.", ""]

    lines += ["## Teacher", ""]
    lines += md_table(["teacher", "model", "epochs", "test acc %", "paper (the same architecture, else its headline teacher)"],
                    [[t, model_words(cfg, t), v["epochs"], f"**{v['test_acc']:.2f}**",
                      "{}: {}".format(*(teacher_acc(cfg.data.dataset, cfg.models[t].arch)
                                        or (f"{row.teacher} on {row.dataset}", row.teacher_acc)))]
                     for t, v in summary["teachers"].items()])

    if summary["evaluators"]:
        lines += ["Evaluators (trained on real data with the teacher's recipe and their own seed; never inverted): " + ", ".join(
            f"{e} {v['test_acc']:.2f} %" for e, v in summary["evaluators"].items()) + ".", ""]
    lines += ["## Knowledge distillation (paper Table 5)", "",
              f"Student test accuracy after distilling the teacher on each method's images. The paper's cell is its "
              f"Table 5 row of the same teacher → student architectures when it has one (else {paper_pair(row)}), 256k "
              f"images; its real-data reference (S.) is the student trained on the whole real training set, while ours "
              f"is KD on the *same number* of real images as the synthesized sets.", ""]
    kd_rows = []
    for key, v in summary["kd"].items():
        t, m, s = key.split("/")
        kind, pair = paper_key(cfg, m), pair_row(cfg, t, s)
        paper = pair.student_real_acc if kind == "real" else pair.kd.get(kind)
        paper = "-" if paper is None else f"{paper:.2f}"
        how = f"trained while synthesizing, {v['cotrained']:,} steps" if v.get("cotrained") else f"KD, {v['epochs']} epochs"
        kd_rows.append([t, s, m, f"{v['images']:,}", how, acc_cell(summary, "kd", key, v), paper, paper_pair(pair)])
    lines += md_table(["teacher", "student", "images from", "images", "how", "test acc %", "paper", "paper's row"], kd_rows)
    lines += table5_shape(cfg, summary)
    for t in cfg.teacher.models:
        for s in cfg.kd.students:
            real = summary["kd"].get(f"{t}/real/{s}")
            for m in cfg.synthesis.run:
                got = summary["kd"].get(f"{t}/{m}/{s}")
                if real and got:
                    a, b = mean_of(summary, "kd", f"{t}/{m}/{s}", got), mean_of(summary, "kd", f"{t}/real/{s}", real)
                    lines.append(f"- {t} → {s}: {m} is **{a - b:+.2f}** points from real images ({a:.2f} vs {b:.2f} %; "
                                 f"{verdict_words(summary, 'kd', f'{t}/{m}/{s}', m, 'real')}).")
    lines += ["", "Settings that differ from the paper's Table 5 experiments:", ""]
    lines += md_table(["setting", "paper", "this run"],
                    [["dataset", row.dataset, manifest["dataset"]],
                     ["teacher → student", f"{row.teacher} → {row.student}",
                      ", ".join(model_words(cfg, t) for t in cfg.teacher.models) + " → "
                      + ", ".join(model_words(cfg, s) for s in cfg.kd.students)],
                     *_settings_rows(cfg, summary)])

    lines += ["## How real are the images (paper Tables 1 and 8)", "",
              f"Fréchet distance (FD, lower is closer) and k-NN precision / recall (k = {cfg.metrics.neighborhood}) against "
              f"{reference_count(summary)} real training images, in the embedding of the teacher (the network that was "
              "inverted) and of each evaluator (trained on real data, not inverted). `real` = held-out test images: the floor.", ""]
    nets = embeddings_of(summary)
    lines += md_table(["teacher/images", *(f"{n}: FD / P / R" for n in nets), "paper Table 8 FD"],
                    [[k, *(f"{acc_cell(summary, 'metrics', k, v, f'{n}/fd', 3)} / {v[f'{n}/precision']:.3f} / {v[f'{n}/recall']:.3f}"
                           for n in nets),
                      table8_cell(cfg, k.split("/")[1], nets)] for k, v in summary["metrics"].items()])
    lines += [f"Paper Table 8 (FD of 50k images from a ResNet-34 teacher, {table8_dataset(cfg.data.dataset)}): the "
              "embedding networks trained on the dataset itself, beside ours of the same role (the teacher; an evaluator "
              "of the same architecture). Our images, teacher, data and counts differ, so compare the order of the "
              "methods, not the values.", ""]
    lines += _sureness_section(cfg, summary)
    lines += inception_section(cfg, summary)
    lines += components_section(cfg, summary)
    lines += ftp_section(cfg, summary, manifest)
    lines += _tsne_section(cfg, summary, made)

    lines += _scratch_section(cfg, summary, manifest)
    lines += _prune_section(cfg, summary, made)

    lines += ["## Synthesis", "",
              "Per method: the budget (equal for all methods), speed, the loss terms at the kept (lowest-loss) iteration "
              "averaged over batches, and how often the teacher predicts the synthesis label on the stored float16 tensors "
              "and on the uint8 renderings.", ""]
    if any(v["warmup_seconds"] is not None for v in summary["synthesis"].values()):
        lines += ["A method with a meta-learned start (`meta`, e.g. ni-fast) first runs its warm-up stage; \"CPU s\" "
                  "counts it (after the +) beside the shards' synthesis loops.", ""]
    lines += md_table(["teacher/method", "images", "batch", "iterations", "s/iteration", "seconds", "CPU s", "CE", "BN term",
                     "agreement f16 %", "agreement uint8 %"],
                    [[k, f"{v['images']:,}", v["batch_size"], v["iterations"], f"{v['s_per_iter']:.3f}", f"{v['seconds']:.0f}",
                      f"{v['cpu_seconds']:.0f}" + ("" if v["warmup_cpu_seconds"] is None else f" + {v['warmup_cpu_seconds']:.0f}"),
                      *("-" if v[k] is None else f"{v[k]:.3f}" for k in ("final_ce", "final_bn")),
                      f"{v['agreement_float16']:.1f}", f"{v['agreement_uint8']:.1f}"]
                     for k, v in summary["synthesis"].items()])

    lines += ["## Images", "", "Real test images and each method's images side by side, one row per class (named on the "
              "left), the first images of each method's first shard.", ""]
    lines += [f"**{k.removeprefix('grids/')}**\n\n![{k}]({p})\n" for k, p in made.items() if k.startswith("grids/")]
    lines += ["## Loss curves", "", "CE and BN-statistics terms per iteration for every batch (thin) and their mean (bold); log scale.", ""]
    lines += [f"![{k}]({p})\n" for k, p in made.items() if k.startswith("loss/")]
    if fig5 := [f"![{k}]({p})\n" for k, p in made.items() if k.startswith("fig5/")]:
        lines += ["### DI, one-to-many and NI (paper Fig. 5)", "",
                  "The paper's Fig. 5 on this run: CE and BN terms per iteration for DI, NI's generator without the "
                  "one-to-one approach (nor FTP and ACS), and NI. Paper: CIFAR-10, ResNet-34, 2k iterations; there DI "
                  "converges slowest and ends highest on both terms, and NI converges fastest.", "", *fig5]
    lines += ["## KD accuracy per epoch", ""]
    lines += [f"![{k}]({p})\n" for k, p in made.items() if k.startswith("kd/")]

    n_seeds = len(summary["seeds"]["seeds"])
    lines += ["## Wall time per stage", "",
              "Compute seconds each stage's jobs reported (process start-up excluded)"
              + (f", over all {n_seeds} seeds (a seed replica's synthesis in its method's row)" if n_seeds > 1 else "")
              + ". Under Snakemake, shards and students run side by side, so the pipeline's wall time is less than the sum.", ""]
    timing = [[row, v["jobs"], *sum_max(v["seconds"])] for row, v in summary["compute"].items()]
    lines += md_table(["stage", "jobs", "seconds (sum)", "longest job"], timing)
    return "\n".join(lines)


def _sureness_section(cfg: Config, summary: dict) -> list[str]:
    """Every comparison of a method with DI and with real images, with the gap, the spread and the verdict."""
    rows = [[c["section"], c["row"], c["value"], f"{c['a']} vs {c['b']}", f"{c['gap']:+.3f}",
             "-" if c["spread"] is None else f"±{c['spread']:.3f}", "×".join(map(str, c["n"])),
             f"**{c['verdict']}**"] for c in summary.get("comparisons", [])]
    if not rows:
        return []
    n = len(summary["seeds"]["seeds"])
    lines = ["## How sure are the comparisons", "",
             (f"Each result above is the mean ± sample std over the run's {n} seeds ({', '.join(map(str, summary['seeds']['seeds']))}: "
              "synthesis, student initialization and data order all change with the seed; the teacher does not). "
              if n > 1 else "This run has one seed (`seed`), so no comparison can say whether its gap exceeds the "
              "spread: list several in `seeds` (e.g. `seeds: [0, 1, 2]`) to know. ")
             + "A gap is *within noise* when it is no larger than the two standard deviations added. FD: lower is "
               "better; accuracies: higher.", ""]
    return lines + md_table(["application", "row", "value", "comparison", "gap", "spread", "seeds", "verdict"], rows)


def _scratch_section(cfg: Config, summary: dict, manifest: dict) -> list[str]:
    if not summary["scratch"]:
        return []
    lines = ["## Training from scratch (paper Tables 2 and 9)", "",
             f"A randomly initialised student trained only on each method's images and their synthesis labels "
             f"({cfg.scratch.epochs} epochs, SGD lr {cfg.scratch.lr}, batch {cfg.scratch.batch_size}), then evaluated on "
             + _train_eval_words(cfg, manifest) + " and the test set; `real` = trained on as many real training images. The "
             "paper's cells (Table 9: 256k images, 200 epochs) are from its row of the same dataset, inverted teacher and "
             "student architectures when it has one, else CIFAR-100 ResNet-34 → ResNet-18.", ""]
    rows = []
    for key, v in summary["scratch"].items():
        t, m, s = key.split("/")
        where, cells = table9_row(cfg.data.dataset, cfg.models[t].arch, cfg.models[s].arch)
        paper = cells.get(paper_key(cfg, m))
        rows.append([t, s, m, f"{v['images']:,}", f"{v['own_acc']:.2f}", f"**{v['train_acc']:.2f}** ({v['train_loss']:.3f})",
                     f"{acc_cell(summary, 'scratch', key, v)} ({v['test_loss']:.3f})",
                     f"{paper[0]} ({paper[1]}) / {paper[2]} ({paper[3]})" if paper else "-", where])
    lines += md_table(["teacher", "student", "images from", "images", "acc on its own images %", "real train acc % (loss)",
                     "test acc % (loss)", "paper train / test acc % (loss)", "paper's row"], rows)
    return lines + ["The paper's losses are as printed in its Table 9 (their scale is not stated); ours are mean "
                    "cross-entropy per image.", ""]


def _train_eval_words(cfg: Config, manifest: dict) -> str:
    n = cfg.scratch.train_eval_images
    if n is None or n >= manifest["train_images"]:
        return "the whole real training set"
    return f"the first {n:,} of the {manifest['train_images']:,} real training images (`scratch.train_eval_images`; the paper: all)"


def _prune_section(cfg: Config, summary: dict, made: dict[str, str]) -> list[str]:
    if not summary["prune"]:
        return []
    pc = cfg.prune
    lines = ["## Pruning (paper Fig. 6)", "",
             f"The teacher with the given fraction of filters removed from every convolution (smallest L1 norm, "
             f"Torch-Pruning; channels physically removed), then fine-tuned {pc.epochs} epochs with SGD lr {pc.lr} on "
             f"each method's images with "
             + ("the unpruned teacher's soft targets (KD, T = " + f"{pc.temperature:g})" if pc.targets == "teacher"
                else "their synthesis labels") + "; `real` = fine-tuned on as many real training images, `none` = "
             "not fine-tuned. Test accuracy %:", ""]
    teachers = sorted({k.split("/")[0] for k in summary["prune"]})
    methods = [m for m in dict.fromkeys(m for _, m, _ in plan.prune_jobs(cfg)) if any(k.split("/")[1] == m for k in summary["prune"])]
    rows = []
    for t in teachers:
        for r in pc.ratios:
            cells = [summary["prune"].get(f"{t}/{m}/{r:g}") for m in methods]
            first = next((c for c in cells if c), None)
            if first is None:
                continue
            rows.append([t, f"{r:.0%}", f"{first['params_before']:,} → {first['params_after']:,}",
                         f"{first['macs_before'] / 1e6:.1f}M → {first['macs_after'] / 1e6:.1f}M",
                         *(acc_cell(summary, "prune", f"{t}/{m}/{r:g}", c) if c else "-" for m, c in zip(methods, cells))])
    lines += md_table(["teacher", "ratio", "parameters", "MACs", *methods], rows)
    lines += [FIG6_TEXT, ""]
    return lines + [f"![{k}]({p})\n" for k, p in made.items() if k.startswith("prune/")]


def _tsne_section(cfg: Config, summary: dict, made: dict[str, str]) -> list[str]:
    if not summary["tsne"]:
        return []
    n = cfg.metrics.tsne.images
    lines = ["### t-SNE of the teacher's features (paper Figs. 4 and 7)", "",
             f"Up to {n:,} images per set (paper: 10k), embedded jointly at each layer: `stageK` is the K-th stage's "
             "output average-pooled to 4×4, `embedding` the penultimate features. Colours as in the paper: real green, "
             "NI orange, DI purple. Points of a method that sit among the real ones mean the teacher sees those images "
             "as it sees real data at that layer.", ""]
    return lines + [f"![{k}]({p})\n" for k, p in made.items() if k.startswith("tsne/")]
