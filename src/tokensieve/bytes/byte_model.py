"""A tokenized language model read as a language model over bytes.

The probability that the model's output starts with the bytes ``x`` is the sum, over the
*covers* of ``x``, of their token-prefix probabilities: token sequences whose tokens but
the last decode to a proper prefix of ``x`` and whose full decoding starts with ``x``
(the byte-token representation of Phan et al., "Exact Byte-Level Probabilities from
Tokenized Language Models for FIM-Tasks and Model Ensembles"; Vieira et al.'s "covering").
Covers sharing their complete tokens ``L`` are one *hypothesis* ``(L, log P(L), partial
bytes of the last token)``, and one byte updates them exactly (algorithm note §4.2):
every hypothesis whose partial bytes spell a whole token ``v`` spawns ``L + [v]`` at a
token boundary; then every hypothesis moves on by the byte or dies.

What is summed, and so what is exact (algorithm note §3.4):
- `covers="canonical"` (the default): Phan et al.'s algorithm — only the covers whose left
  part (every complete token) the tokenizer can produce, i.e. begins the canonical
  encoding of some text (`tokensieve.bytes.canonical`; prefix-canonicality, not the
  authors' round-trip test, which drops real tokenizations after whitespace runs on
  GPT-2-style tokenizers). It aims at the quantity the paper defines — the byte-level
  probability of a model that gives non-canonical tokenizations no mass — for tokenizers
  whose tokens are byte strings and that encode text as it is (byte-level BPE such as
  SmolLM2's, SentencePiece with byte fallback and no dummy prefix such as Gemma 3's; a
  dummy-prefix tokenizer is refused). How exact it is rests on the canonicality probes of
  `tokensieve.bytes.canonical` (a lookahead of one or two characters: a heuristic, checked
  against a brute-force oracle on a small alphabet only). A trained model leaks a little
  mass to other tokenizations (measured: 1.7e-4 nats on "Hello" for SmolLM2; the algorithm
  note's 6.9e-4 also filters the last token, which we do not), which this leaves out. The
  last token of a cover is not filtered (as the authors' code with `fast_mode=True`), and
  byte-fallback tokens that end inside a character are kept until it is whole. Few
  hypotheses stay alive (about one per split point in the last word), so no beam is
  needed.
- `covers="all"`: every tokenization, canonical or not — the model's exact byte-level
  marginal (Vieira et al.'s quantity, genlm-bytes'), tested against a brute-force sum
  over token sequences. Its hypotheses grow with the number of tokenizations: give a beam
  on long text.
- `beam=K`: the K heaviest hypotheses after each byte (and none below `prune` times the
  heaviest); a lower bound on the value without the beam, as genlm-bytes' beam is. The
  prune rules differ: ours is relative to the heaviest hypothesis, genlm-bytes' to their
  summed mass (weight − log Z ≤ log p).
Special tokens (BOS, end-of-turn, ...) are not text: they never cover bytes; the model's
end tokens (`eos_ids`) are the end symbol (index 256 of a next-byte distribution).
Next-byte distributions are normalised over the 256 bytes and the end (the mass a model
leaks to other special tokens is dropped). Phan et al.'s code and genlm-bytes renormalise
locally too, over other symbol sets (theirs add unk, bos and control symbols; genlm-bytes
has 258 with its end of text).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from tokensieve.bytes.canonical import WHITESPACE, PrefixCanonical
from tokensieve.bytes.token_model import TokenModel
from tokensieve.bytes.vocabulary import ByteVocabulary
from tokensieve.errors import UserError
from tokensieve.lm import document_start, end_of_turn_ids

END = 256  # the end symbol's index in a next-byte distribution
COVERS = ("all", "canonical")


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # complete tokens after the context
    logw: float  # log P(tokens | context)
    partial: bytes  # the bytes the next token has spelt so far (b"" at a token boundary)


class ByteLM:
    """`model` + `tokenizer` as a model over bytes, after the token `context` (default:
    the document-start token, as genlm-bytes does)."""

    def __init__(
        self,
        model,
        tokenizer,
        context_ids=None,
        beam: int | None = None,
        prune: float = 0.0,
        eos_ids=None,
        fixed_head: bool = False,
        covers: str = "canonical",
    ):
        if covers not in COVERS:
            raise UserError(f"`covers` must be one of {', '.join(COVERS)}, got {covers!r}")
        if beam is not None and beam < 1:
            raise UserError(f"`beam` must be at least 1 (or None for every cover), got {beam}")
        if not 0.0 <= prune < 1.0:
            raise UserError(f"`prune` must be in [0, 1), got {prune}")
        self.vocabulary = ByteVocabulary(tokenizer)
        self.lm = TokenModel(model, self.vocabulary)
        self.covers = covers
        # None: every tokenization; else a test that the left part of a cover is canonical
        self.valid = (
            PrefixCanonical(tokenizer, self.vocabulary.table) if covers == "canonical" else None
        )
        if context_ids is None:
            start = document_start(tokenizer)
            if start is None:
                raise UserError("the tokenizer has no BOS or EOS token to start a text with")
            context_ids = [start]
        self.context = tuple(int(t) for t in context_ids)
        if not self.context:
            raise UserError("the token context is empty: give at least a start token")
        self.eos = [int(t) for t in (end_of_turn_ids(tokenizer) if eos_ids is None else eos_ids)]
        self.beam, self.log_prune = beam, (math.log(prune) if prune > 0 else -math.inf)
        self.tokenizer, self.fixed_head = tokenizer, fixed_head
        self._last: ByteState | None = None

    # -- states ------------------------------------------------------------------------
    def start(self) -> ByteState:
        return ByteState(self, [Hypothesis((), 0.0, b"")], b"")

    def state(self, prefix: bytes) -> ByteState:
        """The state after `prefix`, continuing the last one asked for when it extends.
        With `fixed_head`, a fresh start reads the prefix up to its last word boundary as
        its canonical tokens (`head_state`)."""
        state = self._last
        if state is None or not prefix.startswith(state.text):
            state = self.head_state(prefix) if self.fixed_head else self.start()
        for byte in prefix[len(state.text) :]:
            state = state.advance(byte)
        self._last = state
        return state

    def head_state(self, prefix: bytes) -> ByteState:
        """A state that reads `prefix` up to its last word boundary (a whitespace byte
        after a non-whitespace one) as that head's canonical tokens, and only the rest
        through the covers: the head is the fixed token context of Phan et al.'s code
        (``div_enc``), so a long prompt costs one forward, not one step per byte. Exact
        when no cover of the whole prefix crosses that boundary with other tokens (true
        for pre-tokenizers that split before a space, up to the model's leakage onto
        non-canonical encodings). Probabilities are then conditional on the head."""
        cut = last_word_boundary(prefix)
        try:
            head = prefix[:cut].decode("utf-8")
        except UnicodeDecodeError:
            cut, head = 0, ""
        ids = tuple(self.tokenizer(head, add_special_tokens=False)["input_ids"]) if head else ()
        return ByteState(self, [Hypothesis(ids, 0.0, b"")], prefix[:cut])

    # -- what users ask ----------------------------------------------------------------
    def next_byte_distribution(self, prefix: bytes) -> np.ndarray:
        """``[257]`` probabilities of each byte, then of the end, after `prefix`."""
        return np.exp(self.state(prefix).next_logprobs())

    def byte_logprob(self, text: bytes, complete: bool = False) -> float:
        """log P(output starts with `text`), natural log; with `complete`, log P(output
        is exactly `text`, then the end)."""
        state = self.state(text)
        return state.logprob_complete() if complete else state.logprob()

    def distribution(self, hypothesis: Hypothesis):
        return self.lm.distribution(self.context + hypothesis.tokens)

    def prefetch(self, hypotheses) -> None:
        """Compute the distributions these hypotheses will ask for in one batch."""
        self.lm.prefetch([self.context + h.tokens for h in hypotheses])


class ByteState:
    """The hypotheses after reading `text`."""

    def __init__(self, owner: ByteLM, hypotheses: list[Hypothesis], text: bytes):
        self.owner, self.hypotheses, self.text = owner, hypotheses, text
        self._expansion: list[Hypothesis] | None = None  # computed once, asked for often

    def __len__(self) -> int:
        return len(self.hypotheses)

    def _mass(self, h: Hypothesis) -> float:
        _, sums = self.owner.distribution(h)
        if not h.partial:
            return float(sums[-1])
        lo, hi = self.owner.vocabulary.span(h.partial)
        return float(sums[hi] - sums[lo])

    def logprob(self) -> float:
        """log P(x): the summed mass of the hypotheses (a lower bound under a beam)."""
        if not self.text:
            return 0.0
        weights = [h.logw + _log(self._mass(h)) for h in self.hypotheses]
        return _logsumexp(weights)

    def _expanded(self) -> list[Hypothesis]:
        """Hypotheses whose partial bytes are a whole token, that token taken: new
        hypotheses at a token boundary (the next-byte distribution, the end and the next
        byte all need them; computed once per state)."""
        if self._expansion is None:
            self._expansion = self._expand()
        return self._expansion

    def _expand(self) -> list[Hypothesis]:
        vocabulary, valid, out = self.owner.vocabulary, self.owner.valid, []
        self.owner.prefetch([h for h in self.hypotheses if h.partial])
        for h in self.hypotheses:
            if not h.partial:
                continue
            lo, _ = vocabulary.span(h.partial)
            exact = vocabulary.exact(h.partial, lo)
            if exact:
                probabilities, _ = self.owner.distribution(h)
                for token in exact:
                    if valid is not None and not valid(h.tokens + (token,)):
                        continue  # a tokenization the tokenizer never makes
                    if probabilities[token] > 0:
                        out.append(
                            Hypothesis(
                                h.tokens + (token,), h.logw + math.log(probabilities[token]), b""
                            )
                        )
        return out

    def _at_boundary(self) -> list[Hypothesis]:
        return [h for h in self.hypotheses if not h.partial] + self._expanded()

    def logprob_complete(self) -> float:
        """log P(output is exactly x): boundary hypotheses times their end probability."""
        weights = []
        for h in self._at_boundary():
            probabilities, _ = self.owner.distribution(h)
            weights.append(h.logw + _log(float(probabilities[self.owner.eos].sum())))
        return _logsumexp(weights)

    def next_logprobs(self, normalise: bool = True) -> np.ndarray:
        """``[257]`` log-probabilities of the next byte and of the end, after x;
        unnormalised (`normalise=False`) they are log P(x b) and log P(x, end)."""
        vocabulary = self.owner.vocabulary
        candidates = self.hypotheses + self._expanded()
        if not candidates:
            return np.full(257, -np.inf)
        shift = max(h.logw for h in candidates)
        self.owner.prefetch(candidates)
        total = np.zeros(257)
        for h in candidates:
            probabilities, sums = self.owner.distribution(h)
            scale = math.exp(h.logw - shift)
            if not h.partial:
                total[:256] += scale * np.diff(sums[vocabulary.first_bounds])
                total[END] += scale * float(probabilities[self.owner.eos].sum())
                continue
            lo, hi = vocabulary.span(h.partial)
            width = len(h.partial)
            # the tokens longer than the partial bytes, grouped by their next byte
            while lo < hi and len(vocabulary.sorted_bytes[lo]) == width:
                lo += 1
            edges = [
                bisect_left(vocabulary.sorted_bytes, h.partial + bytes([b]), lo, hi)
                for b in range(256)
            ] + [hi]
            total[:256] += scale * (sums[edges[1:]] - sums[edges[:-1]])
        with np.errstate(divide="ignore"):
            logs = np.log(total) + shift
        if normalise:
            logs -= _logsumexp(list(logs[np.isfinite(logs)]))
        return logs

    def advance(self, byte: int) -> ByteState:
        """The state after one more byte (0-255)."""
        if not 0 <= byte <= 255:
            raise UserError(f"a byte is 0 to 255, got {byte}")
        vocabulary = self.owner.vocabulary
        moved = []
        for h in self.hypotheses + self._expanded():
            partial = h.partial + bytes([byte])
            lo, hi = vocabulary.span(partial)
            if lo < hi:
                moved.append(Hypothesis(h.tokens, h.logw, partial))
        state = ByteState(self.owner, moved, self.text + bytes([byte]))
        state._prune()
        return state

    def _prune(self) -> None:
        """Keep the `beam` heaviest hypotheses (and none below `prune` x the heaviest).
        A hypothesis's weight needs its model call; ``log P(L)`` bounds it from above, so
        the calls are made heaviest bound first and stop once no bound can enter."""
        beam, log_prune = self.owner.beam, self.owner.log_prune
        if beam is None and log_prune == -math.inf:
            return
        ranked = sorted(self.hypotheses, key=lambda h: -h.logw)
        self.owner.prefetch(ranked if beam is None else ranked[:beam])
        kept: list[tuple[float, Hypothesis]] = []
        for h in ranked:
            if beam is not None and len(kept) >= beam and h.logw <= kept[-1][0]:
                break
            weight = h.logw + _log(self._mass(h))
            kept.append((weight, h))
            kept.sort(key=lambda pair: -pair[0])
            if beam is not None:
                kept = kept[:beam]
        if kept:
            best = kept[0][0]
            kept = [(w, h) for w, h in kept if w >= best + log_prune]
        self.hypotheses = [h for _, h in kept]
        self._expansion = None  # of the hypotheses before pruning, if asked for already


def last_word_boundary(data: bytes) -> int:
    """The index of the last whitespace byte that follows a non-whitespace byte (0 if
    none): the tokens before it cannot merge with what follows in pre-tokenized BPE."""
    for i in range(len(data) - 1, 0, -1):
        if data[i] in WHITESPACE and data[i - 1] not in WHITESPACE:
            return i
    return 0


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def _logsumexp(values: list[float]) -> float:
    finite = [v for v in values if v > -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))
