"""The report's sections in the shape of the paper's tables (Table 1's Inception metrics, Table 3's components,
Table 4's FTP stages, Table 5's teacher -> student grid), the paper's values beside ours."""
from __future__ import annotations

from natinv import plan
from natinv.config import Config
from natinv.paper import TABLE1_CIFAR10, TABLE3_CIFAR100, TABLE4, table5_row, table8_fd
from natinv.report.cells import acc_cell, embeddings_of, md_table, reference_count
from natinv.report.identity import kd_accs, ni_switches, paper_key
from natinv.synthesis import registry

TABLE5_COLUMNS = {"dafl": "DAFL", "dfad": "DFAD", "deepinversion": "DI", "adi": "ADI", "naturalinversion": "NI (ours)",
                  "ni-adi": "NI+ADI (A-ours)"}


def pair_row(cfg: Config, teacher: str, student: str):
    """The paper's Table 5 row for this teacher -> student (by architecture), else its headline row."""
    return table5_row(cfg.data.dataset, cfg.models[teacher].arch, cfg.models[student].arch)


def paper_pair(row) -> str:
    return f"{row.dataset} {row.teacher} → {row.student}"


def table8_cell(cfg: Config, method: str, nets: list[str]) -> str:
    cells = []
    for n in nets:
        role = "teacher" if n == "teacher" else cfg.models[n.removeprefix("evaluator:")].arch
        if (hit := table8_fd(cfg.data.dataset, role, paper_key(cfg, method))) is not None:
            cells.append(f"{hit[0]} {hit[1]}")
    return ", ".join(cells) or "-"


def ftp_section(cfg: Config, summary: dict, manifest: dict) -> list[str]:
    """Paper Table 4: NI methods that differ in the FTP's stages, with the metrics and KD they reached."""
    from natinv.models import build_model

    rows = []
    for t in cfg.teacher.models:
        spec = cfg.models[t]
        stages = len(build_model(spec.arch, manifest["num_classes"], manifest["in_channels"], spec.width).stages)
        methods = cfg.synthesis.methods
        used = {m: s for m in plan.methods_of(cfg, t)
                if (s := registry.of(methods[m]).ftp_stages(methods[m], stages)) is not None}  # method -> its FTP's stages
        if len({tuple(u) for u in used.values()}) < 2:
            continue
        for m in sorted(used, key=lambda m: len(used[m])):
            top = used[m] == list(range(stages - len(used[m]) + 1, stages + 1))  # the top k stages, as in the paper
            paper = TABLE4["all" if len(used[m]) == stages else len(used[m])] if top else None
            mt = summary["metrics"].get(f"{t}/{m}", {})
            kd = kd_accs(summary, t, m)
            rows.append([f"{t}/{m}", ",".join(map(str, used[m])) + (" (all)" if len(used[m]) == stages else ""),
                         *(f"{mt[k]:.3f}" if k in mt else "-" for k in [f"{n}/fd" for n in embeddings_of(summary)]),
                         f"{summary['inception'][f'{t}/{m}']['fid']:.2f}" if f"{t}/{m}" in summary["inception"] else "-",
                         " / ".join(f"{a:.2f}" for a in kd) or "-",
                         f"{paper[0]}: {paper[1]} / {paper[2]}" if paper else "-"])
    if not rows:
        return []
    lines = ["### Which teacher stages the FTP uses (paper Table 4)", "",
             "NI with the Feature Transfer Pyramid built from the teacher's top stage, top two, ..., all (stage numbers "
             "from 1 = lowest). The paper's row is the one with the same number of top stages of its 4-stage ResNet-34.", ""]
    lines += md_table(["teacher/method", "FTP stages", *(f"{n} FD" for n in embeddings_of(summary)), "Inception FID", "KD acc %",
                     "paper: stages: 1st-stage FD / FID"], rows)
    return lines + [""]


def table5_shape(cfg: Config, summary: dict) -> list[str]:
    """The paper's Table 5 layout: one row per teacher -> student, one column per method, ours (paper's)."""
    columns = {key: next((m for m in cfg.synthesis.run if paper_key(cfg, m) == key), None) for key in TABLE5_COLUMNS}
    columns = {k: m for k, m in columns.items() if m is not None}
    if len(columns) < 2:
        return []
    # methods of ours beside the paper's (a meta-learned start, ni-fast): a column each, with no paper cell
    ours = [m for m in cfg.synthesis.run if registry.meta_of(cfg.synthesis.methods[m]) is not None]
    rows = []
    for t in cfg.teacher.models:
        for s in cfg.kd.students:
            row = pair_row(cfg, t, s)

            def cell(method: str, paper: float | None) -> str:
                got = summary["kd"].get(f"{t}/{method}/{s}")
                ours = "-" if got is None else acc_cell(summary, "kd", f"{t}/{method}/{s}", got) + ("†" if got.get("cotrained") else "")
                return f"{ours} ({paper:.2f})" if paper is not None else ours
            teacher_acc = summary["teachers"].get(t, {}).get("test_acc")
            rows.append([f"{t} → {s}", paper_pair(row), "-" if teacher_acc is None else f"{teacher_acc:.2f} ({row.teacher_acc:.2f})",
                         cell("real", row.student_real_acc), *(cell(m, row.kd.get(k)) for k, m in columns.items()),
                         *(cell(m, None) for m in ours)])
    return ["### In the shape of the paper's Table 5", "",
            "Ours in bold, the paper's cell in brackets, from its row of the same teacher → student architectures when "
            "it has one, else its headline row (the column \"paper's row\" says which). T. = the teacher; "
            "S. = ours: KD on as many real images, the paper's: the student trained on all real data. † = the student "
            "trained while the method synthesized (ADI, DAFL, DFAD), not distilled afterwards."
            + (" Not in the paper: " + ", ".join(ours) + " (NaturalInversion from a meta-learned start)." if ours else ""), "",
            *md_table(["teacher → student", "paper's row", "T.", "S.", *(f"{TABLE5_COLUMNS[k]}: {m}" for k, m in columns.items()),
                     *(f"{m} (not in the paper)" for m in ours)], rows)]


def components_section(cfg: Config, summary: dict) -> list[str]:
    """Paper Table 3: DI and NI with its components (one-to-one, FTP, ACS) switched on one at a time."""
    switches = {m: s for m in cfg.synthesis.run if (s := ni_switches(cfg, m)) is not None}
    if len(set(switches.values())) < 2:
        return []
    paper_rows = list(TABLE3_CIFAR100)  # the paper's row order; a switch set it does not have goes last
    order = [m for m in cfg.synthesis.run if paper_key(cfg, m) == "deepinversion"] + sorted(
        switches, key=lambda m: paper_rows.index(switches[m]) if switches[m] in paper_rows else len(paper_rows))
    nets = embeddings_of(summary)
    rows = []
    for t in cfg.teacher.models:
        for m in order:
            if f"{t}/{m}" not in summary["synthesis"]:
                continue
            flags = switches.get(m)
            paper = TABLE3_CIFAR100.get(flags if flags else "deepinversion")
            mt = summary["metrics"].get(f"{t}/{m}", {})
            kd = kd_accs(summary, t, m)
            inc = summary["inception"].get(f"{t}/{m}")
            marks = ["✓" if f else "" for f in flags] if flags else ["DI", "", ""]
            rows.append([f"{t}/{m}", *marks,
                         " / ".join(f"**{a:.2f}**" for a in kd) or "-",
                         *(" / ".join(f"{mt[f'{n}/{k}']:.3g}" if f"{n}/{k}" in mt else "-" for k in ("fd", "precision", "recall"))
                           for n in nets),
                         f"{inc['is']:.2f} / {inc['fid']:.1f}" if inc else "-",
                         " / ".join(map(str, paper)) if paper else "-"])
    lines = ["### Components of NaturalInversion (paper Table 3)", "",
             "DI, then NI's generator with its components switched on one at a time: one-to-one (O2O; off = one generator "
             "for all batches of a shard with a fresh z every iteration), the Feature Transfer Pyramid (FTP) and Adaptive "
             "Channel Scaling (ACS). Same budget for every row. Paper: CIFAR-100, ResNet-34 inverted, 50k images, KD to "
             "ResNet-18, IS/FID/P/R in Inception-v3; ours: this run's dataset, teacher, images and embeddings.", ""]
    lines += md_table(["teacher/method", "O2O", "FTP", "ACS", "KD acc %", *(f"{n} FD / P / R" for n in nets), "Inception IS / FID",
                     "paper KD % / IS / FID / P / R"], rows)
    return lines + [""]


def inception_section(cfg: Config, summary: dict) -> list[str]:
    """Table 1's metrics in Inception-v3's embedding (or the configured extractor's), the paper's values beside."""
    paper = TABLE1_CIFAR10
    ic = cfg.metrics.inception
    lines = ["### Inception metrics (paper Table 1)", ""]
    if not summary["inception"]:
        why = summary["inception_unavailable"] or "no metrics job has run"
        return lines + [f"Not computed: {why}. The paper's Table 1 (CIFAR-10, ResNet-34, 50k images): NI IS "
                        f"{paper['naturalinversion']['IS']}, FID {paper['naturalinversion']['FID']}, precision "
                        f"{paper['naturalinversion']['precision']}, recall {paper['naturalinversion']['recall']}; DI FID "
                        f"{paper['deepinversion']['FID']}.", ""]
    rows = []
    for key, v in summary["inception"].items():
        p = paper.get(paper_key(cfg, key.split("/")[1]), {})
        rows.append([key, f"**{v['is']:.2f}** ± {v['is_std']:.2f}", f"**{v['fid']:.2f}**", f"{v['precision']:.3f}",
                     f"{v['recall']:.3f}", " / ".join(str(p.get(k, "-")) for k in ("IS", "FID", "precision", "recall"))])
    lines += [f"IS of the images, FID and k-NN precision / recall against the same {reference_count(summary)} real "
              f"training images, in the embedding of `{ic.feature_extractor}` (uint8 renderings, torch-fidelity).", ""]
    lines += md_table(["teacher/images", "IS", "FID", "precision", "recall", "paper IS / FID / P / R (CIFAR-10)"], rows)
    return lines + ["Settings that differ from the paper's Table 1: its images are 50k CIFAR-10 images from a ResNet-34 "
                    "(2k iterations); ours are the dataset, teacher, image count and iterations of this run.", ""]
