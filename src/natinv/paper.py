"""The paper's published numbers that our tables are compared with (NaturalInversion, AAAI 2022)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KDRow:
    """One row of Table 5: teacher (T.) and student trained on the full real training set (S.), then KD accuracy per method."""

    dataset: str
    teacher: str
    student: str
    teacher_acc: float
    student_real_acc: float
    kd: dict[str, float]  # method kind -> accuracy


# Table 5: every teacher -> student row; 256k synthesized images for KD. The paper marks its re-implementations (*)
# of the baselines; the values are as printed. Columns: T., S., then DAFL, DFAD, DI, ADI, NI, NI+ADI.
_KD_COLUMNS = ("dafl", "dfad", "deepinversion", "adi", "naturalinversion", "ni-adi")
_TABLE5_ROWS = {
    "cifar10": [
        ("resnet34", "resnet18", 95.57, 95.20, (92.22, 93.30, 91.43, 93.26, 93.72, 94.87)),
        ("resnet34", "vgg11", 95.57, 92.44, (44.30, 88.66, 83.49, 75.53, 89.41, 88.46)),
        ("resnet34", "mobilenetv2", 95.57, 94.69, (72.16, 92.71, 91.00, 93.64, 92.96, 94.06)),
        ("vgg11", "resnet18", 92.44, 95.20, (84.19, 89.35, 83.82, 90.36, 90.10, 91.84)),
        ("vgg11", "vgg11", 92.44, 92.44, (82.18, 91.34, 84.16, 90.78, 89.79, 91.07)),
        ("vgg11", "mobilenetv2", 92.44, 94.69, (54.79, 84.96, 87.77, 88.97, 89.59, 90.62)),
    ],
    "cifar100": [
        ("resnet34", "resnet18", 78.02, 76.87, (74.47, 67.70, 45.91, 64.38, 67.00, 72.82)),
        ("resnet34", "vgg11", 78.02, 68.64, (48.43, 20.61, 36.04, 51.06, 61.96, 65.37)),
        ("resnet34", "mobilenetv2", 78.02, 68.02, (59.46, 57.30, 44.30, 58.88, 66.42, 71.26)),
        ("vgg16", "resnet18", 73.75, 76.87, (24.91, 53.41, 50.32, 56.36, 66.32, 69.84)),
        ("vgg16", "vgg11", 73.75, 68.64, (23.96, 44.34, 46.24, 45.14, 61.68, 64.37)),
        ("vgg16", "mobilenetv2", 73.75, 68.02, (9.00, 41.61, 37.76, 54.38, 64.04, 66.95)),
    ],
}
ARCH_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "vgg11": "VGG-11", "vgg16": "VGG-16",
              "mobilenetv2": "MobileNetV2"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
TABLE5 = {(dataset, t, s): KDRow(DATASET_NAMES[dataset], ARCH_NAMES[t], ARCH_NAMES[s], t_acc, s_acc, dict(zip(_KD_COLUMNS, kd)))
          for dataset, rows in _TABLE5_ROWS.items() for t, s, t_acc, s_acc, kd in rows}

# Settings of the Table 5 experiments (paper section 4 and appendix), for the "what differs" table.
KD_SETTINGS = {
    "synthesis iterations": "2,000 (CIFAR-10) / 4,000 (CIFAR-100)",
    "synthesis batch size": "256",
    "images for KD": "256,000",
    "NI generator width": "128 (Table 6)",
    "NI λ_BN": "10 (CIFAR-10) / 3 (CIFAR-100)",
    "NI lr generator / FTP / α": "1e-3 / 5e-4 / 5e-2",
    "NI α init": "N(5, 1)",
    "KD epochs, temperature": "not stated in the paper",
    "ADI competition weight, co-trained student": "not stated in the paper (NVlabs' CIFAR script: 0 unless set)",
    "DAFL / DFAD generator steps x batch": "not stated in the paper (their code: 240,000 x 1,024 / 25,000 x 256)",
}


def table5_row(dataset: str, teacher_arch: str | None = None, student_arch: str | None = None) -> KDRow:
    """The Table 5 row to put beside ours: the same dataset (else CIFAR-10, the closest 10-class setting) and the same
    teacher -> student architectures when the paper has them, else its ResNet-34 -> ResNet-18 row."""
    dataset = dataset if dataset in _TABLE5_ROWS else "cifar10"
    return TABLE5.get((dataset, teacher_arch, student_arch), TABLE5[(dataset, "resnet34", "resnet18")])


def teacher_acc(dataset: str, teacher_arch: str) -> tuple[str, float] | None:
    """(the paper's teacher name, its test accuracy) for a teacher of this architecture on this dataset, if it has one."""
    row = next((r for (d, t, _), r in TABLE5.items() if d == dataset and t == teacher_arch), None)
    return None if row is None else (f"{row.teacher} on {row.dataset}", row.teacher_acc)


# Table 1 (CIFAR-10, ResNet-34 teacher, 50k images, Inception-v3 embedding): the values the paper gives.
TABLE1_CIFAR10 = {
    "naturalinversion": {"IS": 5.15, "FID": 76.04, "precision": 0.680, "recall": 0.279},
    "deepinversion": {"FID": 197.33},
}


# Table 8, the rows whose embedding network was trained on the dataset itself (ImageNet rows need weights we do not
# fetch): FD of the Table 1 images (50k, ResNet-34 teacher). The teacher's own embedding is the ResNet-34 row.
TABLE8 = {
    "cifar10": {"teacher": ("ResNet-34", {"naturalinversion": 0.27, "deepinversion": 0.65, "wgan-gp": 0.94}),
                "vgg11": ("VGG-11", {"naturalinversion": 2.53, "deepinversion": 12.70, "wgan-gp": 5.75})},
    "cifar100": {"teacher": ("ResNet-34", {"naturalinversion": 2.89, "deepinversion": 10.18, "wgan-gp": 12.76}),
                 "vgg16": ("VGG-16", {"naturalinversion": 9.64, "deepinversion": 18.08, "wgan-gp": 16.81})},
}


def table8_dataset(dataset: str) -> str:
    return "CIFAR-100" if dataset == "cifar100" else "CIFAR-10"


def table8_fd(dataset: str, net: str, kind: str) -> tuple[str, float] | None:
    """(the paper's embedding network, its FD for method `kind`) for our embedding `net` ('teacher' or an evaluator's
    arch), on the same dataset when the paper has it, else CIFAR-10; None when the paper has no such cell."""
    row = TABLE8.get(dataset, TABLE8["cifar10"]).get(net)
    if row is None or kind not in row[1]:
        return None
    return row[0], row[1][kind]


# Table 4 (CIFAR-10, ResNet-34, 10k images): the FTP from the top k stages; "1'st stage" and "final stage" FD as given.
TABLE4 = {1: ("f4", 0.6892, 77.90), 2: ("f3,f4", 0.6845, 75.84), 3: ("f2,f3,f4", 0.6736, 75.52), "all": ("all (ours)", 0.6634, 73.72)}


# Table 3 (CIFAR-100, ResNet-34 inverted, 50k images, KD to ResNet-18; IS/FID/P/R in Inception-v3): the component
# study. The text extraction lost the table's check marks; the rows are keyed by (o2o, ftp, acs) as the paper's text
# describes them: a generator alone (one-to-many), + one-to-one, + FTP ("best FID and precision"), + ACS, all.
# -> (KD acc %, IS, FID, precision, recall).
TABLE3_CIFAR100 = {
    "deepinversion": (42.22, 4.04, 151.52, 0.4051, 0.0119),
    (False, False, False): (19.96, 4.29, 87.09, 0.7483, 0.0118),
    (True, False, False): (56.69, 5.51, 65.12, 0.7732, 0.1529),
    (True, True, False): (58.61, 5.41, 63.36, 0.7829, 0.1617),
    (True, False, True): (59.42, 6.31, 65.34, 0.6589, 0.2845),
    (True, True, True): (60.57, 6.44, 63.54, 0.6692, 0.2960),
}


# Table 9 (Table 2 is its CIFAR-100 train column): students trained from scratch for 200 epochs on 256k images of
# DAFL, DI and NI. (dataset, inverted teacher, student) -> method kind -> (train acc %, train loss, test acc %, test
# loss). The paper labels its CIFAR-100 second teacher VGG-11 in Table 9 and VGG-16 in Table 2 (same numbers); the
# CIFAR-100 teacher of Table 5 is VGG-16.
_TABLE9_ROWS = {
    "cifar10": [
        ("resnet34", "resnet18", (31.45, .029, 31.59, .029), (73.46, .008, 72.05, .009), (90.84, .003, 87.98, .004)),
        ("resnet34", "vgg11", (21.04, .027, 21.52, .027), (67.18, .010, 65.30, .011), (86.76, .005, 85.74, .005)),
        ("resnet34", "mobilenetv2", (42.50, .021, 42.29, .022), (69.57, .010, 66.38, .010), (86.52, .004, 84.83, .005)),
        ("vgg11", "resnet18", (46.98, .018, 46.08, .018), (80.21, .007, 78.16, .008), (88.13, .004, 85.53, .005)),
        ("vgg11", "vgg11", (32.38, .021, 32.52, .021), (78.94, .007, 76.31, .008), (86.76, .004, 83.92, .006)),
        ("vgg11", "mobilenetv2", (44.17, .017, 43.52, .017), (73.82, .008, 72.02, .009), (84.03, .005, 81.40, .006)),
    ],
    "cifar100": [
        ("resnet34", "resnet18", (32.40, .028, 30.85, .030), (49.61, .019, 45.18, .021), (74.55, .008, 65.13, .012)),
        ("resnet34", "vgg11", (15.85, .036, 15.68, .036), (39.46, .027, 36.35, .030), (67.31, .012, 58.98, .017)),
        ("resnet34", "mobilenetv2", (33.49, .031, 30.84, .033), (34.86, .025, 33.30, .027), (64.34, .012, 59.19, .015)),
        ("vgg16", "resnet18", (1.96, .162, 2.08, .163), (46.90, .018, 43.48, .020), (72.38, .009, 63.21, .013)),
        ("vgg16", "vgg11", (1.90, .049, 1.89, .050), (41.94, .024, 38.02, .027), (67.95, .012, 59.26, .018)),
        ("vgg16", "mobilenetv2", (2.11, .043, 2.49, .043), (31.32, .026, 29.86, .028), (62.86, .012, 56.66, .016)),
    ],
}
TABLE9 = {(dataset, t, s): {"dafl": dafl, "deepinversion": di, "naturalinversion": ni}
          for dataset, rows in _TABLE9_ROWS.items() for t, s, dafl, di, ni in rows}


def table9_row(dataset: str, teacher_arch: str, student_arch: str) -> tuple[str, dict[str, tuple]]:
    """(what the cells are, method kind -> (train acc, train loss, test acc, test loss)): the same dataset, teacher and
    student when the paper has them, else its CIFAR-100 ResNet-34 -> ResNet-18 row (Table 2's headline)."""
    key = (dataset, teacher_arch, student_arch)
    if key not in TABLE9:
        key = ("cifar100", "resnet34", "resnet18")
    return f"{DATASET_NAMES[key[0]]}, {ARCH_NAMES[key[1]]} → {ARCH_NAMES[key[2]]}", TABLE9[key]


# Fig. 6 is a plot; its text gives: DAFL 58.34 % at a 90 % ratio on CIFAR-10, NI up to +11.21 points at 90 %.
FIG6_TEXT = ("Fig. 6 (ResNet-34, L1 filter pruning 50-90 %, fine-tuned 20 epochs with SGD lr 1e-3 on each method's "
             "images) is a plot; its text gives DAFL 58.34 % at a 90 % ratio on CIFAR-10 and NI's recovery up to "
             "11.21 points above the next method at 90 %.")
