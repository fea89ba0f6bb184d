"""Lookahead Decoding's window: the mask and positions of the lookahead branch against the
rule of the authors' mask figure, the n-gram harvest, the window's moves, the pool."""

from __future__ import annotations

import pytest
import torch

from tokensieve.models import tiny_model
from tokensieve.speculate.lookahead import LookaheadDecoding
from tokensieve.speculate.tree import attention_mask


@pytest.fixture(scope="module")
def tiny64_sdpa():
    model, tokenizer = tiny_model(seed=0, layers=3)
    return model.double(), tokenizer


def _steady(level=4, window=3):
    drafter = LookaheadDecoding(level=level, window=window, guesses=2)
    # level 0 after the root: W-1 tokens; levels 1..N-2: W tokens each
    drafter.levels = [[11, 12], [20, 21, 22], [30, 31, 32]]
    return drafter


def test_the_lookahead_branch_sees_what_the_papers_mask_shows():
    drafter = _steady()
    side = drafter._side(root=10)
    # the cells as (level, column), root = (0, 0), in the order they are read
    cells = [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert side.tokens == [11, 12, 20, 21, 22, 30, 31, 32]
    assert side.offsets == [level + column for level, column in cells]
    everything = [(0, 0), *cells]
    for i, (level, column) in enumerate(cells):
        for k, (other_level, other_column) in enumerate(everything):
            # Fu et al. Fig. 2b: level 0 up to one's column, one's column at levels 1..l
            expected = (other_level == 0 and other_column <= column) or (
                1 <= other_level <= level and other_column == column
            )
            assert bool(side.sees[i, k]) == expected, ((level, column), (other_level, other_column))


def test_the_tree_and_the_side_never_see_each_other_in_the_mask():
    drafter = _steady()
    drafter.pool = {10: [(40, 41), (40, 42)]}
    draft = drafter.draft([1, 2, 10])
    assert draft.tokens == [10, 40, 42, 41] and draft.parents == [-1, 0, 1, 1]  # merged
    mask = attention_mask(draft, past=5, dtype=torch.float32, device="cpu")[0, 0]
    visible = mask == 0
    n, q = len(draft.tokens), draft.query_tokens
    assert visible.shape == (q, 5 + q) and visible[:, :5].all()
    assert not visible[:n, 5 + n :].any()  # tree rows: no side token
    assert not visible[n:, 5 + 1 : 5 + n].any()  # side rows: no draft node...
    assert visible[n:, 5].all()  # ...but the root


def test_a_full_window_harvests_one_ngram_per_column_and_moves_one_level():
    drafter = _steady()
    draft = drafter.draft([1, 2, 10])  # empty pool: the tree is the root alone
    assert draft.tokens == [10]
    vocab = 100
    logits = torch.zeros(draft.query_tokens, vocab)
    newest = [50, 51, 52]  # predictions at level 2's cells (the last three rows)
    for row, token in zip(range(draft.query_tokens - 3, draft.query_tokens), newest, strict=True):
        logits[row, token] = 1.0
    drafter.observe(draft, logits)
    # columns: (root 10, 20, 30 -> 50), (11, 21, 31 -> 51), (12, 22, 32 -> 52)
    assert drafter.pool == {10: [(20, 30, 50)], 11: [(21, 31, 51)], 12: [(22, 32, 52)]}
    assert drafter.levels == [[21, 22], [30, 31, 32], newest]


def test_warm_up_builds_the_window_level_by_level():
    drafter = LookaheadDecoding(level=4, window=3, guesses=2, seed=1)
    drafter.start([5, 6, 7, 8], None)
    assert len(drafter.levels) == 1 and len(drafter.levels[0]) == 3 + 4 - 3
    for expected in ([3, 4], [2, 3, 3]):
        draft = drafter.draft([5, 6, 7, 8])
        logits = torch.randn(draft.query_tokens, 20, generator=torch.Generator().manual_seed(0))
        drafter.observe(draft, logits)
        assert [len(level) for level in drafter.levels] == expected
    assert drafter.pool == {}  # nothing harvested while warming up


def test_the_pool_keeps_g_ngrams_per_key_oldest_out_repeats_refreshed():
    drafter = LookaheadDecoding(level=3, guesses=2)
    for ngram in [(1, 2, 3), (1, 4, 5), (1, 2, 3), (1, 6, 7)]:
        drafter._remember(ngram)
    assert drafter.pool[1] == [(2, 3), (6, 7)]  # (2, 3) refreshed, so (4, 5) went first


def test_draft_respects_the_tree_size_and_takes_the_newest_ngram_first():
    drafter = LookaheadDecoding(level=4, tree_size=3, guesses=4)
    drafter.levels = [[1, 1, 1]]
    drafter.pool = {9: [(1, 2, 3), (4, 5, 6)]}  # (4, 5, 6) remembered last
    draft = drafter.draft([9])
    assert draft.tokens == [9, 4, 5, 6] and draft.parents == [-1, 0, 1, 2]


def test_the_pool_from_the_prompt_holds_its_ngrams_and_a_plain_start_none():
    """`pool_from_prompt` (ours: verification can start at once) fills the pool with the
    prompt's N-grams, keyed by their first token, newest last; by default (the authors')
    the pool starts empty."""
    prompt = [5, 6, 7, 5, 6, 8, 9]
    drafter = LookaheadDecoding(level=3, guesses=4, pool_from_prompt=True)
    drafter.start(prompt, None)
    expected = {}
    for i in range(len(prompt) - 2):
        expected.setdefault(prompt[i], []).append(tuple(prompt[i + 1 : i + 3]))
    assert drafter.pool == expected  # {5: [(6, 7), (6, 8)], 6: [(7, 5), (8, 9)], 7: [(5, 6)]}
    assert drafter.draft([1, 5]).tokens == [5, 6, 8, 7]  # newest (6, 8) first, shared 6
    plain = LookaheadDecoding(level=3, guesses=4)
    plain.start(prompt, None)
    assert plain.pool == {} and plain.draft([1, 5]).tokens == [5]


def test_each_window_cell_reads_what_its_jacobi_step_would_read(tiny64_sdpa):
    """A side cell's logits equal decoding, one token at a time, the root and the cells it
    sees in position order: the visible positions run unbroken from the root's to its own."""
    import copy

    from tokensieve.models import with_cache
    from tokensieve.speculate.decode import new_cache, verify

    model, tokenizer = tiny64_sdpa
    prompt = tokenizer("The quick brown fox", add_special_tokens=False)["input_ids"]
    drafter = _steady(level=4, window=3)
    draft = drafter.draft(prompt)  # root = prompt[-1]; empty pool: the window alone
    prefix = prompt[:-1]
    cache = new_cache(model)
    with torch.no_grad():
        model(input_ids=torch.tensor([prefix]), **with_cache(cache), use_cache=True)
        logits = verify(model, copy.deepcopy(cache), draft, len(prefix))
    side = draft.side
    tokens = [draft.tokens[0], *side.tokens]
    offsets = [0, *side.offsets]
    for i in range(len(side.tokens)):
        seen = [0] + [1 + k for k in range(len(side.tokens)) if side.sees[i, 1 + k]]
        seen.sort(key=lambda k: offsets[k])
        assert [offsets[k] for k in seen] == list(range(offsets[1 + i] + 1))  # unbroken
        alone = copy.deepcopy(cache)
        with torch.no_grad():
            for k in seen:
                out = model(input_ids=torch.tensor([[tokens[k]]]), **with_cache(alone),
                            use_cache=True).logits[0, -1]  # fmt: skip
        assert torch.allclose(logits[len(draft.tokens) + i], out.float(), atol=1e-10), i
