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


# Table 5, ResNet-34 -> ResNet-18 rows; 256k synthesized images for KD. DAFL/DFAD/ADI/NI+ADI for later baselines.
TABLE5 = {
    "cifar10": KDRow("CIFAR-10", "ResNet-34", "ResNet-18", 95.57, 95.20,
                     {"dafl": 92.22, "dfad": 93.30, "deepinversion": 91.43, "adi": 93.26, "naturalinversion": 93.72, "ni-adi": 94.87}),
    "cifar100": KDRow("CIFAR-100", "ResNet-34", "ResNet-18", 78.02, 76.87,
                      {"dafl": 74.47, "dfad": 67.70, "deepinversion": 45.91, "adi": 64.38, "naturalinversion": 67.00, "ni-adi": 72.82}),
}

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


def table5_row(dataset: str) -> KDRow:
    """The row to put beside ours: the same dataset when the paper has it, else CIFAR-10 (the closest 10-class setting)."""
    return TABLE5.get(dataset, TABLE5["cifar10"])


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


# Table 9 (= Table 2 with test figures), CIFAR-100, ResNet-34 inverted, 256k images, 200 epochs from scratch:
# student -> method kind -> (train acc %, train loss, test acc %, test loss).
TABLE9_CIFAR100 = {
    "resnet18": {"deepinversion": (49.61, 0.019, 45.18, 0.021), "naturalinversion": (74.55, 0.008, 65.13, 0.012)},
    "vgg11": {"deepinversion": (39.46, 0.027, 36.35, 0.030), "naturalinversion": (67.31, 0.012, 58.98, 0.017)},
    "mobilenetv2": {"deepinversion": (34.86, 0.025, 33.30, 0.027), "naturalinversion": (64.34, 0.012, 59.19, 0.015)},
}

# Fig. 6 is a plot; its text gives: DAFL 58.34 % at a 90 % ratio on CIFAR-10, NI up to +11.21 points at 90 %.
FIG6_TEXT = ("Fig. 6 (ResNet-34, L1 filter pruning 50-90 %, fine-tuned 20 epochs with SGD lr 1e-3 on each method's "
             "images) is a plot; its text gives DAFL 58.34 % at a 90 % ratio on CIFAR-10 and NI's recovery up to "
             "11.21 points above the next method at 90 %.")
