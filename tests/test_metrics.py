"""Each metric on tiny hand-built rankings; expected values written as arithmetic."""

import numpy as np
import pytest

from hashing.codes.metrics import (average_precision, blocks_from_sorted, hamming_blocks, precision_at_k, radius_precision_recall)


def blocks(d, rel):
    return blocks_from_sorted(np.array([d]), np.array([rel]))


def test_no_ties_is_textbook_ap_and_precision():
    n, r = blocks([0, 1, 2, 3, 4], [1, 0, 1, 0, 0])
    assert precision_at_k(n, r, 1)[0] == pytest.approx(1 / 1)
    assert precision_at_k(n, r, 3)[0] == pytest.approx(2 / 3)
    assert average_precision(n, r)[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # AP@2 divides by min(R, 2) = 2 and only the hit at rank 1 is inside the cut.
    assert average_precision(n, r, 2)[0] == pytest.approx((1 / 1) / 2)


def test_tied_block_uses_expectation_over_random_order():
    # distances 0 | 1 1 | 2 ; relevant: yes | one of the two tied | no
    n, r = blocks([0, 1, 1, 2], [1, 0, 1, 0])
    # P@2: rank 2 is the relevant tied item with probability 1/2.
    assert precision_at_k(n, r, 2)[0] == pytest.approx((1 + 1 / 2) / 2)
    # AP: orders (rel at 2) -> (1 + 2/2)/2 ; (rel at 3) -> (1 + 2/3)/2 ; each with prob 1/2.
    assert average_precision(n, r)[0] == pytest.approx(0.5 * (1 + 2 / 2) / 2 + 0.5 * (1 + 2 / 3) / 2)


def test_tie_result_does_not_depend_on_order_inside_block():
    a = blocks([0, 1, 1, 1, 3], [0, 1, 0, 1, 1])
    b = blocks([0, 1, 1, 1, 3], [0, 0, 1, 1, 1])
    for k in (1, 2, 3, 4, 5):
        assert precision_at_k(*a, k) == pytest.approx(precision_at_k(*b, k))
    assert average_precision(*a) == pytest.approx(average_precision(*b))


def test_all_tied_ap_is_mean_over_all_orders():
    # 3 items at one distance, 2 relevant: orders by position of the irrelevant one:
    # last -> (1 + 1)/2 ; middle -> (1 + 2/3)/2 ; first -> (1/2 + 2/3)/2.
    n, r = blocks([4, 4, 4], [1, 1, 0])
    expected = ((1 + 1) / 2 + (1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 3
    assert average_precision(n, r)[0] == pytest.approx(expected)
    assert precision_at_k(n, r, 1)[0] == pytest.approx(2 / 3)


def test_hamming_blocks_equal_sorted_blocks():
    d = np.array([[3, 0, 1, 1, 3]])
    rel = np.array([[1, 1, 0, 1, 0]])
    order = np.argsort(d[0], kind="stable")
    a = blocks_from_sorted(d[:, order], rel[:, order])
    b = hamming_blocks(d, rel, bits=8)
    assert average_precision(*a) == pytest.approx(average_precision(*b))
    assert precision_at_k(*a, 3) == pytest.approx(precision_at_k(*b, 3))


def test_radius_precision_recall():
    # distances 0, 2, 2, 5 with relevance 1, 0, 1, 1; R = 3
    n, r = hamming_blocks(np.array([[0, 2, 2, 5]]), np.array([[1, 0, 1, 1]]), bits=8)
    p, rc = radius_precision_recall(n, r)
    assert p[0, 0] == pytest.approx(1 / 1) and rc[0, 0] == pytest.approx(1 / 3)
    assert p[0, 2] == pytest.approx(2 / 3) and rc[0, 2] == pytest.approx(2 / 3)
    assert p[0, 8] == pytest.approx(3 / 4) and rc[0, 8] == pytest.approx(3 / 3)


def test_nothing_retrieved_scores_zero_and_no_relevant_ap_zero():
    n, r = hamming_blocks(np.array([[3, 4]]), np.array([[1, 0]]), bits=8)
    p, _ = radius_precision_recall(n, r)
    assert p[0, 2] == 0.0
    n, r = blocks([0, 1], [0, 0])
    assert average_precision(n, r)[0] == 0.0


def test_matches_enumeration_of_all_tie_orders(rng):
    import itertools

    d = np.array([0, 1, 1, 1, 2, 2, 3])
    rel = np.array([1, 0, 1, 1, 0, 1, 0])
    aps, ap3, p3 = [], [], []
    for p1 in itertools.permutations([1, 2, 3]):
        for p2 in itertools.permutations([4, 5]):
            rr = rel[[0, *p1, *p2, 6]].astype(float)
            prec = np.cumsum(rr) / np.arange(1, 8)
            aps.append((rr * prec).sum() / rr.sum())
            ap3.append((rr[:3] * prec[:3]).sum() / min(rr.sum(), 3))
            p3.append(rr[:3].mean())
    n, r = blocks(d, rel)
    assert average_precision(n, r)[0] == pytest.approx(np.mean(aps))
    assert average_precision(n, r, 3)[0] == pytest.approx(np.mean(ap3))
    assert precision_at_k(n, r, 3)[0] == pytest.approx(np.mean(p3))
