"""lib.leaderboard: the published Fashion-MNIST results are whole tables (by their stated rule), with their sources."""
from __future__ import annotations

import re

import pytest

from lib import leaderboard as lb


def test_the_sources_name_the_snapshot_and_say_what_is_verified():
    readme = lb.SOURCES["readme"]
    assert readme["repository"] == "https://github.com/zalandoresearch/fashion-mnist" and readme["file"] == "README.md"
    assert re.fullmatch(r"[0-9a-f]{40}", readme["commit"]) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", readme["date"])
    assert readme["commit"] in readme["url"]
    assert "not verified" in readme["label"] and "haven't yet tested" in readme["verified"]
    assert "Table 3" in lb.SOURCES["paper"]["citation"] and "5 times" in lb.SOURCES["paper"]["protocol"]


def test_the_tables_are_whole_by_their_rule():
    # Table 3: one row (the best setting) for each of its 13 classifiers; README: all 38 submitted rows.
    assert len(lb.PAPER) == 13 and len({r.classifier for r in lb.PAPER}) == 13
    assert len(lb.SUBMITTED) == 38
    assert all(r.source == "paper" for r in lb.PAPER) and all(r.source == "readme" for r in lb.SUBMITTED)
    assert all(0 < r.accuracy < 1 for r in lb.RESULTS)
    assert all(r.mnist_accuracy is None or 0 < r.mnist_accuracy < 1 for r in lb.RESULTS)


@pytest.mark.parametrize("classifier, accuracy", [
    ("2 Conv+pooling", 0.876), ("2 Conv+pooling", 0.916), ("2 Conv+pooling+BN", 0.934), ("HOG+SVM", 0.926),
    ("3 Conv+pooling+2 FC+dropout", 0.926), ("WRN40-4 8.9M params", 0.967), ("VGG16 26M parameters", 0.935),
])
def test_rows_a_selection_once_left_out_are_there(classifier, accuracy):
    assert any(r.classifier == classifier and r.accuracy == accuracy for r in lb.SUBMITTED)


def test_table3_best_settings():
    best = {r.classifier: r.accuracy for r in lb.PAPER}
    assert best["SVC"] == 0.897 and best["KNeighborsClassifier"] == 0.854 and best["GaussianNB"] == 0.511
    assert max(best, key=best.get) == "SVC"


def test_added_columns_agree_with_what_the_sources_print():
    for r in lb.SUBMITTED:
        text = r.setting.lower()
        says_augmented = any(w in text for w in ("flip", "shift", "translation", "rotation", "augmentation", "crop",
                                                 "erasing"))
        if r.augmentation is not None:
            assert r.augmentation == says_augmented, r.classifier
        if r.spatial_prior == "convolution":
            assert not r.classical
    humans = [r for r in lb.RESULTS if not r.is_method]
    assert [r.classifier for r in humans] == ["Human Performance"]
    assert [r.classifier for r in lb.SUBMITTED if r.classical] == ["HOG+SVM", "XgBoost"]
    assert [r.classifier for r in lb.SUBMITTED if r.extra_data] == ["Fastai"]


def test_frame_and_compare():
    table = lb.frame()
    assert len(table) == 51 and set(table["source"]) == {"paper", "readme"}
    assert table["source_label"].str.contains("not verified").sum() == 38
    where = lb.compare(0.90, 0.92)
    assert sum(map(len, where.values())) == 50, "the human row is not a method"
    assert all(r.accuracy > 0.92 for r in where["above"]) and all(r.accuracy < 0.90 for r in where["below"])
    assert any(r.classifier == "HOG+SVM" for r in where["above"])
    with pytest.raises(ValueError, match="low <= high"):
        lb.compare(0.9, 0.8)
