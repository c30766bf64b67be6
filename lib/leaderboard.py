"""Published Fashion-MNIST test accuracies as data, every row with its source, so that a chapter can set its own
networks beside them by a stated rule instead of a hand-picked few.

Two tables, both scored on the 10,000 Fashion-MNIST test images:

``PAPER`` -- the authors' own scikit-learn benchmark, Xiao, Rasul & Vollgraf (2017), arXiv:1708.07747v2,
    Table 3 ("Benchmark on Fashion-MNIST (Fashion) and MNIST"; section 3: "All algorithms are repeated 5
    times by shuffling the training data and the average accuracy on the test set is reported"). Table 3
    lists every parameter setting the authors tried, best first within each classifier; kept here is the
    **first (best) setting of each of its 13 classifiers**. The settings were ranked by their test accuracy
    (the paper names no validation split), so each row is the best of several tries on the test set.

``SUBMITTED`` -- **all 38 rows** of the table of submitted results in the README of the dataset's repository
    (``SOURCES["readme"]``: repository, file, commit and date of the snapshot). The README says of them:
    "Note that **we haven't yet tested these results**" -- they are **not verified**, and they differ in
    preprocessing, augmentation, training length and even in the data used (one fine-tunes a pretrained
    ResNet-50; the human row labelled 1,000 sampled test images).

Each row records, besides what its source prints, three columns this module adds (documented in
:class:`Result`): ``family``, ``classical`` and ``spatial_prior`` (what, if anything, the method assumes about
the 2-D layout of the pixels), and ``augmentation`` read from the README's "Preprocessing" column.

    from lib import leaderboard
    board = leaderboard.frame()              # one DataFrame, both tables, with a "source" column
    leaderboard.SOURCES["readme"]["commit"]  # which snapshot of the README the rows are from
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

SOURCES: dict[str, dict[str, str]] = {
    "paper": {
        "label": "Xiao et al. 2017, Table 3 (the authors' scikit-learn benchmark)",
        "citation": "Xiao, H., Rasul, K. & Vollgraf, R. (2017). Fashion-MNIST: a Novel Image Dataset for "
                    "Benchmarking Machine Learning Algorithms. arXiv:1708.07747v2 (15 Sep 2017), Table 3.",
        "url": "https://arxiv.org/abs/1708.07747v2",
        "protocol": "All algorithms are repeated 5 times by shuffling the training data and the average accuracy "
                    "on the test set is reported.",
        "rule": "the first (best) parameter setting of each of the 13 classifiers in Table 3",
        "verified": "measured by the dataset's authors",
    },
    "readme": {
        "label": "fashion-mnist README, submitted (not verified)",
        "repository": "https://github.com/zalandoresearch/fashion-mnist",
        "file": "README.md",
        "commit": "789103ddf3ef47449683debad30061320a3acddf",
        "date": "2022-03-14",
        "snapshot_head": "b2617bb6d3ffa2e429640350f613e3291e10b141 (2022-03-21; README.md unchanged since 789103d)",
        "url": "https://github.com/zalandoresearch/fashion-mnist/blob/789103ddf3ef47449683debad30061320a3acddf/README.md#benchmark",
        "rule": "all 38 rows of the README's table of submitted benchmarks",
        "verified": "not verified: the README says 'we haven't yet tested these results'",
    },
}


@dataclass(frozen=True)
class Result:
    """One published row.

    ``accuracy`` (Fashion-MNIST test) and ``mnist_accuracy`` (``None`` where the source has "-") are as printed.
    ``setting``: Table 3's parameter column, or the README's "Preprocessing" column. ``submitter``: the README's.
    Added here: ``family`` (kind of model), ``classical`` (not a neural network), ``spatial_prior`` ("none":
    the method treats the image as an unordered vector, so one fixed shuffle of the pixels of every image
    would not change it; "convolution"; "hand-made features (HOG)"; "rows as a sequence"; ``None``: not
    stated), ``augmentation`` (``True``/``False`` from the Preprocessing column, ``None`` where it does not
    say), ``extra_data`` (trained on more than Fashion-MNIST's training set: a pretrained backbone).
    """
    classifier: str
    accuracy: float
    source: str
    setting: str
    family: str
    classical: bool
    spatial_prior: str | None
    augmentation: bool | None
    mnist_accuracy: float | None = None
    submitter: str = ""
    extra_data: bool = False
    is_method: bool = True   # False only for the README's human-performance row


def _paper(classifier: str, setting: str, fashion: float, mnist: float, family: str, *,
           classical: bool = True) -> Result:
    return Result(classifier, fashion, "paper", setting, family, classical, "none", False, mnist,
                  "Xiao, Rasul & Vollgraf")


# arXiv:1708.07747v2, Table 3: each classifier's first (best) row, in the table's order of classifiers.
PAPER: tuple[Result, ...] = (
    _paper("DecisionTreeClassifier", "criterion=entropy max_depth=10 splitter=best", 0.798, 0.873, "decision tree"),
    _paper("ExtraTreeClassifier", "criterion=gini max_depth=10 splitter=best", 0.775, 0.806, "decision tree"),
    _paper("GaussianNB", "priors=[0.1, ..., 0.1]", 0.511, 0.524, "naive Bayes"),
    _paper("GradientBoostingClassifier", "n_estimators=100 loss=deviance max_depth=10", 0.880, 0.969, "boosted trees"),
    _paper("KNeighborsClassifier", "weights=distance n_neighbors=5 p=1", 0.854, 0.959, "nearest neighbours"),
    _paper("LinearSVC", "loss=hinge C=1 multi_class=ovr penalty=l2", 0.836, 0.917, "linear"),
    _paper("LogisticRegression", "C=1 multi_class=ovr penalty=l1", 0.842, 0.917, "linear"),
    _paper("MLPClassifier", "activation=relu hidden_layer_sizes=[100]", 0.871, 0.972, "MLP", classical=False),
    _paper("PassiveAggressiveClassifier", "C=1", 0.776, 0.877, "linear"),
    _paper("Perceptron", "penalty=l1", 0.782, 0.887, "linear"),
    _paper("RandomForestClassifier", "n_estimators=100 criterion=entropy max_depth=100", 0.873, 0.970,
           "random forest"),
    _paper("SGDClassifier", "loss=hinge penalty=l2", 0.819, 0.914, "linear"),
    _paper("SVC", "C=10 kernel=rbf", 0.897, 0.973, "kernel SVM"),
)

_CNN = dict(family="CNN", classical=False, spatial_prior="convolution")
_AUG_CROP_FLIP = ("standard preprocessing (mean/std subtraction/division) and augmentation "
                  "(random crops/horizontal flips)")
_KEFTH = "Normalization, random horizontal flip, random vertical flip, random translation, random rotation."


def _readme(classifier: str, preprocessing: str, fashion: float, mnist: float | None, submitter: str, *,
            augmentation: bool | None, family: str = "CNN", classical: bool = False,
            spatial_prior: str | None = "convolution", extra_data: bool = False, is_method: bool = True) -> Result:
    return Result(classifier, fashion, "readme", preprocessing, family, classical, spatial_prior, augmentation,
                  mnist, submitter, extra_data, is_method)


# README.md at commit 789103d, section "Benchmark": every row of the submitted table, in the README's order.
SUBMITTED: tuple[Result, ...] = (
    _readme("2 Conv+pooling", "None", 0.876, None, "Kashif Rasul", augmentation=False),
    _readme("2 Conv+pooling", "None", 0.916, None, "Tensorflow's doc", augmentation=False),
    _readme("2 Conv+pooling+ELU activation (PyTorch)", "None", 0.903, None, "@AbhirajHinge", augmentation=False),
    _readme("2 Conv", _KEFTH, 0.919, 0.971, "Kyriakos Efthymiadis", augmentation=True),
    _readme("2 Conv <100K parameters", "None", 0.925, 0.992, "@hardmaru", augmentation=False),
    _readme("2 Conv ~113K parameters", "Normalization", 0.922, 0.993, "Abel G.", augmentation=False),
    _readme("2 Conv+3 FC ~1.8M parameters", "Normalization", 0.932, 0.994, "@Xfan1025", augmentation=False),
    _readme("2 Conv+3 FC ~500K parameters", "Augmentation, batch normalization", 0.934, 0.994, "@cmasch",
            augmentation=True),
    _readme("2 Conv+pooling+BN", "None", 0.934, None, "@khanguyen1207", augmentation=False),
    _readme("2 Conv+2 FC", "Random Horizontal Flips", 0.939, None, "@ashmeet13", augmentation=True),
    _readme("3 Conv+2 FC", "None", 0.907, None, "@Cenk Bircanoğlu", augmentation=False),
    _readme("3 Conv+pooling+BN", "None", 0.903, 0.994, "@meghanabhange", augmentation=False),
    _readme("3 Conv+pooling+2 FC+dropout", "None", 0.926, None, "@Umberto Griffo", augmentation=False),
    _readme("3 Conv+BN+pooling", "None", 0.921, 0.992, "@gchhablani", augmentation=False),
    _readme("5 Conv+BN+pooling", "None", 0.931, None, "@Noumanmufc1", augmentation=False),
    _readme("CNN with optional shortcuts, dense-like connectivity", "standardization+augmentation+random erasing",
            0.947, None, "@kennivich", augmentation=True),
    _readme("GRU+SVM", "None", 0.888, 0.965, "@AFAgarap", augmentation=False, family="RNN",
            spatial_prior="rows as a sequence"),
    _readme("GRU+SVM with dropout", "None", 0.897, 0.988, "@AFAgarap", augmentation=False, family="RNN",
            spatial_prior="rows as a sequence"),
    _readme("WRN40-4 8.9M params", _AUG_CROP_FLIP, 0.967, None, "@ajbrock", augmentation=True),
    _readme("DenseNet-BC 768K params", _AUG_CROP_FLIP, 0.954, None, "@ajbrock", augmentation=True),
    _readme("MobileNet", "augmentation (horizontal flips)", 0.950, None, "@苏剑林", augmentation=True),
    _readme("ResNet18", _KEFTH, 0.949, 0.979, "Kyriakos Efthymiadis", augmentation=True),
    _readme("GoogleNet with cross-entropy loss", "None", 0.937, None, "@Cenk Bircanoğlu", augmentation=False),
    _readme("AlexNet with Triplet loss", "None", 0.899, None, "@Cenk Bircanoğlu", augmentation=False),
    _readme("SqueezeNet with cyclical learning rate 200 epochs", "None", 0.900, None, "@snakers4",
            augmentation=False),
    _readme("Dual path network with wide resnet 28-10", _AUG_CROP_FLIP, 0.957, None, "@Queequeg",
            augmentation=True),
    _readme("MLP 256-128-100", "None", 0.8833, None, "@heitorrapela", augmentation=False, family="MLP",
            spatial_prior="none"),
    _readme("VGG16 26M parameters", "None", 0.935, None, "@QuantumLiu", augmentation=False),
    _readme("WRN-28-10", _AUG_CROP_FLIP, 0.959, None, "@zhunzhong07", augmentation=True),
    _readme("WRN-28-10 + Random Erasing", _AUG_CROP_FLIP, 0.963, None, "@zhunzhong07", augmentation=True),
    _readme("Human Performance", "Crowd-sourced evaluation of human (with no fashion expertise) performance. "
            "1000 randomly sampled test images, 3 labels per image, majority labelling.", 0.835, None, "Leo",
            augmentation=None, family="human", spatial_prior=None, is_method=False),
    _readme("Capsule Network 8M parameters", "Normalization and shift at most 2 pixel and horizontal flip", 0.936,
            None, "@XifengGuo", augmentation=True, family="capsule network"),
    _readme("HOG+SVM", "HOG", 0.926, None, "@subalde", augmentation=False, family="HOG features + SVM",
            classical=True, spatial_prior="hand-made features (HOG)"),
    _readme("XgBoost", "scaling the pixel values to mean=0.0 and var=1.0", 0.898, 0.958, "@anktplwl91",
            augmentation=False, family="boosted trees", classical=True, spatial_prior="none"),
    _readme("DENSER", "-", 0.953, 0.997, "@fillassuncao", augmentation=None, family="CNN (evolved)"),
    _readme("Dyra-Net", "Rescale to unit interval", 0.906, None, "@Dirk Schäfer", augmentation=False,
            family="dyad ranking network", spatial_prior=None),
    _readme("Google AutoML", "24 compute hours (higher quality)", 0.939, None, "@Sebastian Heinz",
            augmentation=None, family="AutoML (model not disclosed)", spatial_prior=None),
    _readme("Fastai", "Resnet50+Fine-tuning+Softmax on last layer's activations", 0.9312, None, "@Sayak",
            augmentation=None, extra_data=True),
)

RESULTS: tuple[Result, ...] = PAPER + SUBMITTED


def frame(results: tuple[Result, ...] = RESULTS):
    """The rows as a pandas DataFrame, one per result, with ``source_label`` (the source's name) added."""
    import pandas as pd

    table = pd.DataFrame([asdict(r) for r in results])
    table["source_label"] = table["source"].map(lambda s: SOURCES[s]["label"])
    return table


def compare(accuracy_low: float, accuracy_high: float, results: tuple[Result, ...] = RESULTS) -> dict[str, list[Result]]:
    """Sort the published methods (the human row left out) by where they fall against an interval of one's own
    accuracy: ``"above"`` its upper end, ``"within"`` it, or ``"below"`` its lower end."""
    if not accuracy_low <= accuracy_high:
        raise ValueError(f"the interval must have low <= high, got [{accuracy_low}, {accuracy_high}]")
    out: dict[str, list[Result]] = {"above": [], "within": [], "below": []}
    for r in results:
        if r.is_method:
            key = "above" if r.accuracy > accuracy_high else "below" if r.accuracy < accuracy_low else "within"
            out[key].append(r)
    return out
