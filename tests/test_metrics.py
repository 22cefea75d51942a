import numpy as np
import pytest

from maskgate.train.metrics import classification_metrics

pytestmark = pytest.mark.tf  # the metrics are scikit-learn's (train extra)

CLASSES = ["with_mask", "without_mask"]


def test_far_frr_and_confusion_on_a_hand_counted_case():
    # 4 masked (one rejected), 6 unmasked (two accepted)
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p_mask = [0.9, 0.8, 0.7, 0.2, 0.6, 0.55, 0.1, 0.2, 0.3, 0.4]
    probs = np.stack([p_mask, 1 - np.array(p_mask)], axis=1)
    m = classification_metrics(y, probs, CLASSES)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["far"] == pytest.approx(2 / 6) and m["false_accepts"] == 2
    assert m["frr"] == pytest.approx(1 / 4) and m["false_rejects"] == 1
    assert m["confusion"] == [[3, 1], [2, 4]]
    assert m["per_class"]["with_mask"]["precision"] == pytest.approx(3 / 5)
    assert m["per_class"]["without_mask"]["recall"] == pytest.approx(4 / 6)
    assert m["roc_auc"] == pytest.approx(0.8125)  # 19.5 of 24 masked/unmasked pairs ranked right


def test_threshold_moves_far_and_frr_not_accuracy():
    y = [0, 1, 1]
    probs = np.array([[0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    strict = classification_metrics(y, probs, CLASSES, threshold=0.58)
    loose = classification_metrics(y, probs, CLASSES, threshold=0.5)
    assert strict["accuracy"] == loose["accuracy"]
    assert strict["far"] == 0.0 and loose["far"] == 0.5


def test_three_classes_count_incorrect_masks_as_unmasked():
    names = ["with_mask", "without_mask", "mask_weared_incorrect"]
    y = [0, 1, 2, 2]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    m = classification_metrics(y, probs, names)
    assert m["far"] == pytest.approx(1 / 3) and m["frr"] == 0.0
    assert m["roc_auc"] is not None and len(m["confusion"]) == 3


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        classification_metrics([0, 1], np.zeros((3, 2)), CLASSES)


def test_macro_f1_ignores_classes_absent_from_the_data():
    names = ["with_mask", "without_mask", "mask_weared_incorrect"]
    y = [0, 1]
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    assert classification_metrics(y, probs, names)["macro_f1"] == 1.0


def test_threshold_moves_up_only_while_a_false_accept_costs_more_than_the_rejects_it_adds():
    from maskgate.train.metrics import choose_threshold

    p = np.array([0.95, 0.9, 0.6, 0.7, 0.1, 0.2])
    masked = np.array([True, True, True, False, False, False])
    # at 0.5 one unmasked face (0.7) is accepted; above it, one masked face (0.6) is rejected
    assert choose_threshold(p, masked, false_accept_cost=5) == 0.8  # midway between 0.7 and 0.9
    assert choose_threshold(p, masked, false_accept_cost=1) == 0.5  # a tie keeps the lower threshold
    assert choose_threshold(p, np.ones(6, bool), false_accept_cost=5) == 0.5  # one class: nothing to weigh
    high = np.array([0.99, 0.999])
    assert choose_threshold(high, np.array([True, False]), false_accept_cost=5) < 1.0
