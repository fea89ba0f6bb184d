"""Draft trees: the paper's template, pruned templates, masks and the acceptance rule,
each against a reference computed here from parent pointers."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from tokensieve.speculate.tree import (
    Draft,
    Template,
    accepted_path,
    attention_mask,
    paper_template,
    pruned_template,
)

# The authors' "2.2.2" template as their repository lists it (Luowaterbi/TokenRecycling,
# model/recycling/tree_template_.py at 0beafeaf), path by path: the data the children
# counts of `PAPER_TREE_CHILDREN` must rebuild.
AUTHORS_2_2_2 = (
    "0 1 2 3 4 5 6 7 "
    "00 01 02 03 04 05 06 07 10 11 12 13 20 21 22 30 31 40 50 60 70 "
    "000 001 002 003 004 005 006 007 010 011 012 020 021 030 040 050 060 070 100 101 110 "
    "200 300 400 500 "
    "0000 0001 0002 0003 0004 0010 0011 0020 0030 0040 0100 0200 1000 2000 3000 "
    "00000 00001 00002 00010 00020 00100 01000 10000 "
    "000000 000001 000100"
)


def test_the_template_is_the_authors_path_by_path():
    authors = sorted(tuple(int(c) for c in word) for word in AUTHORS_2_2_2.split())
    assert len(authors) == 80
    assert sorted(paper_template()) == authors


def test_the_papers_template_has_its_shape():
    paths = paper_template()
    assert len(paths) == 80
    assert Counter(len(p) for p in paths) == {1: 8, 2: 21, 3: 25, 4: 15, 5: 8, 6: 3}
    leaves = [p for p in paths if not any(q[:-1] == p for q in paths)]
    assert len(leaves) == 40
    assert all(p[:-1] in set(paths) | {()} for p in paths)
    # a parent's children take ranks 0, 1, ... with no gap
    for p in paths:
        assert p[-1] == 0 or (*p[:-1], p[-1] - 1) in paths


def test_pruned_templates_are_trees_and_keep_the_likeliest_nodes():
    # the 7-node tree the algorithm note measured, from per-rank rates 0.6, 0.15, 0.07, ...
    assert set(pruned_template(7)) == {(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0),
                                       (0, 0, 0, 0)}  # fmt: skip
    for n in range(1, 81):
        paths = pruned_template(n)
        assert len(paths) == n and len(set(paths)) == n
        assert all(p[:-1] in set(paths) | {()} for p in paths), n
    assert pruned_template(80) == paper_template()
    with pytest.raises(ValueError):
        pruned_template(81)


def test_template_compiles_parents_ranks_and_depths():
    template = Template.from_paths(pruned_template(15))
    paths = [()] + sorted(pruned_template(15), key=lambda p: (len(p), p))
    for i, path in enumerate(paths[1:], start=1):
        assert paths[template.parents[i]] == path[:-1]
        assert template.ranks[i] == path[-1]
        assert template.depths[i] == len(path)
        assert template.parents[i] < i
    assert list(template.depths) == sorted(template.depths)  # breadth-first order


def _random_draft(rng: random.Random, n: int) -> Draft:
    parents = [-1] + [rng.randrange(i) for i in range(1, n)]
    return Draft([rng.randrange(50) for _ in range(n)], parents)


def test_ancestor_mask_and_depths_follow_parent_pointers():
    rng = random.Random(0)
    for _ in range(20):
        draft = _random_draft(rng, rng.randrange(1, 30))
        mask, depths = draft.ancestors(), draft.depths()
        for i in range(len(draft)):
            line, node = {i}, i
            while draft.parents[node] != -1:
                node = draft.parents[node]
                line.add(node)
            assert set(torch.nonzero(mask[i]).flatten().tolist()) == line
            assert depths[i] == len(line) - 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_attention_mask_is_additive_in_the_models_dtype(dtype):
    draft = Draft([5, 6, 7, 8, 9], [-1, 0, 0, 1, 2])
    mask = attention_mask(draft, past=3, dtype=dtype, device="cpu")
    assert mask.shape == (1, 1, 5, 8) and mask.dtype == dtype
    assert (mask[0, 0, :, :3] == 0).all()
    visible = mask[0, 0, :, 3:] == 0
    assert torch.equal(visible, draft.ancestors())
    assert (mask[0, 0, :, 3:][~visible] == torch.finfo(dtype).min).all()


def _running_product_rule(draft: Draft, predictions: list[int]) -> int:
    """The authors' rule: over every root-to-leaf path, the accepted length is the sum of
    the running product of tok[path[1:]] == pred[path[:-1]]; the longest wins."""
    leaves = [i for i in range(len(draft)) if i not in draft.parents]
    best = 0
    for leaf in leaves:
        path = [leaf]
        while draft.parents[path[-1]] != -1:
            path.append(draft.parents[path[-1]])
        path.reverse()
        run, length = 1, 0
        for parent, child in zip(path, path[1:], strict=False):
            run *= int(draft.tokens[child] == predictions[parent])
            length += run
        best = max(best, length)
    return best


def test_acceptance_on_synthetic_predictions():
    draft = Draft([1, 2, 3, 4, 5, 6], [-1, 0, 0, 1, 1, 3])  # 2 -> {4, 5}, 4 -> {6}
    assert accepted_path(draft, [9] * 6) == [0]  # nothing accepted
    full = {0: 2, 1: 4, 3: 6, 5: 7}
    assert accepted_path(draft, [full.get(i, 0) for i in range(6)]) == [0, 1, 3, 5]
    partial = {0: 3, 2: 8}
    assert accepted_path(draft, [partial.get(i, 0) for i in range(6)]) == [0, 2]
    # duplicate sibling tokens: either is right, the first is taken
    twins = Draft([1, 2, 2], [-1, 0, 0])
    assert accepted_path(twins, [2, 2, 2]) == [0, 1]


def test_acceptance_matches_the_authors_all_paths_rule():
    rng = random.Random(1)
    for _ in range(300):
        n = rng.randrange(1, 20)
        parents = [-1] + [rng.randrange(i) for i in range(1, n)]
        tokens = [0] * n
        for i in range(1, n):  # distinct tokens among siblings, as top-k candidates are
            used = {tokens[j] for j in range(1, i) if parents[j] == parents[i]}
            tokens[i] = rng.choice([t for t in range(30) if t not in used][:6])
        draft = Draft(tokens, parents)
        predictions = [rng.randrange(6) for _ in range(n)]
        path = accepted_path(draft, predictions)
        assert len(path) - 1 == _running_product_rule(draft, predictions)
        assert path == sorted(path)  # kept cache rows stay in order
        for parent, child in zip(path, path[1:], strict=False):
            assert draft.parents[child] == parent
            assert draft.tokens[child] == predictions[parent]


def test_a_draft_refuses_bad_parents():
    with pytest.raises(ValueError):
        Draft([1, 2], [-1, 1])
    with pytest.raises(ValueError):
        Draft([1, 2], [0, 0])
    assert Draft.chain(4, [5, 6]).parents == [-1, 0, 1]
