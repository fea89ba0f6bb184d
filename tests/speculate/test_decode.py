"""Verification and the decode loop against sequential decoding, on a tiny float64 Llama
(tree and one-token forwards then agree to ~1e-15, so any masking or position error
shows), and the lossless guarantee against `model.generate` for every drafter."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from tokensieve.models import tiny_model, with_cache
from tokensieve.speculate import DRAFTERS, speculative_generate
from tokensieve.speculate.decode import keep_positions, new_cache, verify
from tokensieve.speculate.prompt_lookup import PromptLookup
from tokensieve.speculate.recycling import UNSET, TokenRecycling
from tokensieve.speculate.tree import Draft, accepted_path, pruned_template

TEXTS = [
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "def wrap(text, width=70):\n    return TextWrapper(width=width).wrap(text)\n\ndef",
    "JSON (JavaScript Object Notation) is a subset of JavaScript syntax",
]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny64(request):
    model, tokenizer = tiny_model(seed=0, layers=3)
    model = model.double()
    model.set_attn_implementation(request.param)
    return model, tokenizer


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _greedy(model, ids, n, eos=None):
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=n,
        eos_token_id=eos,
        pad_token_id=0,
    )
    return out[0, len(ids) :].tolist()


def _prefilled(model, ids):
    cache = new_cache(model)
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), **with_cache(cache), use_cache=True)
    return cache


def _tolerance(model):
    # eager computes its softmax in float32 even for a float64 model
    return 1e-10 if model.config._attn_implementation == "sdpa" else 1e-5


def test_every_tree_node_gets_the_logits_of_its_path_decoded_alone(tiny64):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[0])
    rng = random.Random(0)
    for _ in range(3):
        n = rng.randrange(2, 14)
        draft = Draft([rng.randrange(300) for _ in range(n)],
                      [-1] + [rng.randrange(i) for i in range(1, n)])  # fmt: skip
        prefix, root = prompt[:-1], prompt[-1]
        draft.tokens[0] = root
        cache = _prefilled(model, prefix)
        with torch.no_grad():
            tree_logits = verify(model, copy.deepcopy(cache), draft, len(prefix))
        for node in range(n):
            path = [node]
            while draft.parents[path[-1]] != -1:
                path.append(draft.parents[path[-1]])
            tokens = [draft.tokens[i] for i in reversed(path)]
            alone = copy.deepcopy(cache)
            with torch.no_grad():  # the path decoded one token at a time
                for token in tokens:
                    logits = model(input_ids=torch.tensor([[token]]), **with_cache(alone),
                                   use_cache=True).logits[0, -1]  # fmt: skip
            assert torch.allclose(tree_logits[node], logits.float(), atol=_tolerance(model)), node


def test_cache_after_partial_acceptance_equals_plain_decoding(tiny64):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[1])
    truth = _greedy(model, prompt, 4)  # what follows the prompt
    prefix, root = prompt[:-1], prompt[-1]
    wrong = (truth[2] + 1) % 300
    # root -> truth[0] -> truth[1] -> wrong, plus distractor branches
    draft = Draft([root, (truth[0] + 7) % 300, truth[0], truth[1], 11, wrong, 12],
                  [-1, 0, 0, 2, 2, 3, 1])  # fmt: skip
    cache = _prefilled(model, prefix)
    with torch.no_grad():
        logits = verify(model, cache, draft, len(prefix))
    predictions = logits.argmax(-1).tolist()
    path = accepted_path(draft, predictions)
    assert path == [0, 2, 3]  # two drafts accepted, the wrong third rejected
    keep_positions(cache, len(prefix), path)
    plain = _prefilled(model, prompt + truth[:2])
    assert cache.get_seq_length() == plain.get_seq_length() == len(prompt) + 2
    for ours, theirs in zip(cache.layers, plain.layers, strict=True):
        assert torch.allclose(ours.keys, theirs.keys, atol=_tolerance(model))
        assert torch.allclose(ours.values, theirs.values, atol=_tolerance(model))
    with torch.no_grad():  # and the next step reads both the same
        step = [model(input_ids=torch.tensor([[truth[2]]]), **with_cache(c), use_cache=True)
                .logits[0, -1] for c in (cache, plain)]  # fmt: skip
    assert torch.allclose(step[0], step[1], atol=_tolerance(model))


@pytest.mark.parametrize("method", list(DRAFTERS))
def test_every_method_is_lossless(tiny64, method):
    model, tokenizer = tiny64
    drafter = DRAFTERS.build(method)  # one drafter for all prompts: a hot matrix / trie
    eos = tokenizer.eos_token_id  # the same end token for both, given explicitly
    for text in TEXTS:
        prompt = _ids(tokenizer, text)
        result = speculative_generate(model, prompt, drafter, 80, eos_token_ids=[eos])
        assert result.tokens == _greedy(model, prompt, 80, eos=eos), text
        assert sum(result.committed) == len(result.tokens) == 80
        assert result.forwards == len(result.drafted) and result.accepted_per_forward >= 1
    assert result.accepted_per_forward > 1.5  # the tiny model repeats itself: drafts pay


@pytest.mark.parametrize("size", [1, 3, 8, 31, 80])
def test_every_template_size_is_lossless_and_limits_stop_mid_step(tiny64, size):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[0])
    reference = _greedy(model, prompt, 70)
    for limit in (1, 2, 37, 70):  # a step may commit past the limit: cut
        result = speculative_generate(model, prompt, TokenRecycling(tree_size=size), limit)
        assert result.tokens == reference[:limit]
        assert sum(result.committed) == limit and len(result.free) == limit


def test_an_end_token_inside_accepted_drafts_ends_the_answer(tiny64):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[0])
    reference = _greedy(model, prompt, 60)
    eos = reference[30]  # a token the answer reaches mid-way: now it ends the answer
    first = reference.index(eos)
    drafter = TokenRecycling(tree_size=31)
    speculative_generate(model, prompt, drafter, 60)  # warm: the end comes in a long step
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        result = speculative_generate(model, prompt, drafter, 60, eos_token_ids=[eos])
    finally:
        hook.remove()
    assert result.tokens == reference[: first + 1] == _greedy(model, prompt, 60, eos=eos)
    assert len(calls) == result.forwards  # it stopped at the end token, not at the limit
    assert sum(result.committed) == first + 1
    # the branch the name promises: the end token came as an accepted draft (not as the
    # forward's own bonus token), and the step was cut there
    assert result.free[first]


def test_an_oracle_matrix_accepts_the_whole_depth(tiny64):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[2])
    reference = _greedy(model, prompt, 40)
    drafter = TokenRecycling(tree_size=80)  # its rank-0 chain is 6 deep
    drafter.matrix = torch.full((model.config.vocab_size, 8), UNSET, dtype=torch.long)
    # rows are per token: the oracle chain runs until the continuation repeats a token
    distinct = next((i for i in range(1, 7) if reference[i] in reference[:i]), 7)
    assert distinct >= 3, "pick a prompt whose continuation starts with 3 distinct tokens"
    for a, b in zip(reference[: distinct - 1], reference[1:distinct], strict=True):
        drafter.matrix[a, 0] = b
    drafter.start = lambda ids, logits: None  # keep the oracle rows as they are
    result = speculative_generate(model, prompt, drafter, 40)
    # the prefill gives reference[0]; one forward accepts the chain and adds the bonus
    assert result.committed[:2] == [1, distinct]
    assert result.tokens == reference


def test_a_cold_empty_matrix_drafts_nothing_and_stays_exact(tiny64):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[1])
    drafter = TokenRecycling(tree_size=16, hot_start=False)
    drafter.start = lambda ids, logits: setattr(
        drafter, "matrix", torch.full((logits.shape[-1], 8), UNSET, dtype=torch.long)
    )
    drafter.observe = lambda draft, logits: None  # never learns: every step is plain
    result = speculative_generate(model, prompt, drafter, 20)
    assert result.accepted_per_forward == 1.0 and set(result.drafted) == {0}
    assert result.tokens == _greedy(model, prompt, 20)


def test_matrix_rows_are_the_top_k_of_each_nodes_logits_last_occurrence_winning():
    drafter = TokenRecycling(tree_size=8, top_k=3)
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    drafter.start([1, 2], logits[:2])
    assert drafter.matrix.shape == (10, 3) and drafter.matrix.dtype == torch.long
    draft = Draft([2, 5, 5, 7], [-1, 0, 0, 1])  # token 5 at two nodes: node 2 writes
    drafter.observe(draft, logits)
    for token, node in [(2, 0), (5, 2), (7, 3)]:
        assert drafter.matrix[token].tolist() == logits[node].topk(3).indices.tolist()
    assert drafter.matrix[1].tolist() == logits[0].topk(3).indices.tolist()  # from the prompt
    assert (drafter.matrix[[0, 3, 4, 6, 8, 9]] == UNSET).all()


def test_recycling_fills_the_template_from_the_matrix_and_prunes_unknown_rows():
    drafter = TokenRecycling(tree_size=7, top_k=2)
    # template: (0) (1) (0,0) (0,1) (1,0) (0,0,0) (0,0,0,0)
    drafter.matrix = torch.full((10, 2), UNSET, dtype=torch.long)
    drafter.matrix[1] = torch.tensor([2, 3])
    drafter.matrix[2] = torch.tensor([4, 5])
    drafter.matrix[4] = torch.tensor([6, UNSET])
    # row 3 unknown: (1,0) is pruned; row 6 unknown: (0,0,0,0) is pruned
    draft = drafter.draft([9, 1])
    assert draft.tokens == [1, 2, 3, 4, 5, 6]
    assert draft.parents == [-1, 0, 0, 1, 1, 3]


def test_hot_start_keeps_the_matrix_across_prompts_and_cold_start_resets_it():
    """Hot start (the authors' runs): one matrix for every prompt; cold: each prompt
    starts from an empty one; a new vocabulary always starts afresh."""
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    rows_set = {}
    for hot in (True, False):
        drafter = TokenRecycling(tree_size=3, top_k=2, hot_start=hot)
        drafter.start([1, 2, 3], logits[:3])
        drafter.start([4, 5], logits[3:])
        rows_set[hot] = {t for t in range(10) if (drafter.matrix[t] != UNSET).all()}
    assert rows_set == {True: {1, 2, 3, 4, 5}, False: {4, 5}}
    drafter = TokenRecycling(tree_size=3, top_k=2, hot_start=True)
    drafter.start([1, 2], logits[:2])
    drafter.start([3], torch.randn(1, 12))  # another model's vocabulary
    assert drafter.matrix.shape == (12, 2)
    assert {t for t in range(12) if (drafter.matrix[t] != UNSET).all()} == {3}


def test_a_pruned_node_takes_its_subtree_with_it():
    """A node whose row is unknown is dropped with every descendant, while its siblings'
    subtrees stay: the expected draft is worked out here from the template's rank paths
    (a path survives when every token along it is known)."""
    drafter = TokenRecycling(tree_size=15, top_k=4)
    paths = pruned_template(15)
    matrix = torch.full((20, 4), UNSET, dtype=torch.long)
    matrix[1] = torch.tensor([2, 3, 4, 5])  # the root's successors
    matrix[3] = torch.tensor([6, 7, 8, 9])  # rank 1's row known, rank 0's (token 2) not
    matrix[6] = torch.tensor([10, 11, 12, 13])
    drafter.matrix = matrix
    assert any(p[0] == 0 and len(p) > 1 for p in paths)  # rank 0 has children to lose

    def walk(path):  # the token a rank path reaches from the root, or None
        token = 1
        for rank in path:
            token = int(matrix[token, rank])
            if token == UNSET:
                return None
        return token

    expected = sorted(walk(p) for p in paths if all(walk(p[:i]) is not None
                                                    for i in range(1, len(p) + 1)))  # fmt: skip
    draft = drafter.draft([0, 1])
    assert sorted(draft.tokens[1:]) == expected
    assert 2 in draft.tokens and 6 in draft.tokens  # known nodes at both levels
    for i, parent in enumerate(draft.parents[1:], start=1):  # each node is its parent's successor
        assert draft.tokens[i] in matrix[draft.tokens[parent]].tolist()


def test_prompt_lookup_drafts_what_transformers_proposes():
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    rng = random.Random(0)
    for _ in range(200):
        context = [rng.randrange(5) for _ in range(rng.randrange(2, 30))]
        ours = PromptLookup(tree_size=4, max_ngram=2).draft(context).tokens[1:]
        theirs = PromptLookupCandidateGenerator(num_output_tokens=4, max_matching_ngram_size=2,
                                                max_length=1000)  # fmt: skip
        candidates, _ = theirs.get_candidates(torch.tensor([context]))
        assert ours == candidates[0, len(context) :].tolist(), context


def test_lookahead_trie_drafts_the_most_frequent_continuations_first():
    drafter = DRAFTERS.build("lookahead-trie", tree_size=3, branch_length=2, match_length=2)
    seen = [1, 2, 3, 1, 2, 3, 1, 2, 4, 9]
    drafter.start(seen, None)
    draft = drafter.draft(seen + [1, 2])  # "1 2" was followed by 3 twice, by 4 once
    assert draft.tokens[0] == 2 and draft.tokens[1] == 3
    assert draft.parents[1] == 0 and len(draft) == 4
    # the next most frequent node is 3's child "1" (count 2) before the sibling 4 (count 1)
    assert draft.tokens[2:] == [1, 4] and draft.parents[2:] == [1, 0]
    nothing = drafter.draft([7, 8])
    assert nothing.tokens == [8]  # no match: a plain step


def test_following_a_text_replays_it_and_agrees_with_a_real_run(tiny64):
    model, tokenizer = tiny64
    prompt = _ids(tokenizer, TEXTS[0])
    real = speculative_generate(model, prompt, TokenRecycling(tree_size=16), 50)
    replay = speculative_generate(model, prompt, TokenRecycling(tree_size=16), 1,
                                  follow=real.tokens)  # fmt: skip
    assert replay.tokens == real.tokens and replay.committed == real.committed
    text = _ids(tokenizer, TEXTS[1])[:30]  # not the model's own answer: replayed as given
    other = speculative_generate(model, prompt, TokenRecycling(tree_size=16), 1, follow=text)
    assert other.tokens == text and sum(other.committed) == 30


def test_truncation_cuts_after_the_limit_or_the_first_end_token():
    from tokensieve.speculate.decode import SpeculationResult, _truncate

    def made():  # the prefill's token, then steps of 3 and 4 tokens
        return SpeculationResult([1], [5, 6, 7, 8, 9, 10, 11, 12], committed=[1, 3, 4],
                                 drafted=[0, 7, 7], free=[False, True, True, False,
                                                          True, True, True, False])  # fmt: skip

    result = made()
    _truncate(result, 6, eos=set())  # the last step overshot by 2
    assert result.tokens == [5, 6, 7, 8, 9, 10] and result.committed == [1, 3, 2]
    assert len(result.free) == 6 and result.forwards == 3
    result = made()
    _truncate(result, 8, eos={7})  # an end token accepted mid-step: cut after it
    assert result.tokens == [5, 6, 7] and result.committed == [1, 2]
    assert result.drafted == [0, 7]


def test_following_a_text_refuses_drafts_past_the_window():
    """Following a text, the last drafts sit up to the tree's depth past its end: a text
    that fits but whose drafts would not is refused in one line, not read at positions
    the model does not have."""
    from tokensieve import UserError

    model, _ = tiny_model(seed=0, max_positions=32)
    drafter = TokenRecycling(tree_size=16)
    assert drafter.max_depth > 2
    prompt, text = list(range(10, 20)), list(range(20, 40))  # 30 of 32 positions
    with pytest.raises(UserError, match="analyse fewer tokens"):
        speculative_generate(model, prompt, drafter, 1, follow=text)
    speculative_generate(model, prompt, drafter, 1, follow=text[: 32 - 10 - drafter.max_depth])
