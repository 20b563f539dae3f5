"""Word completion with a character model (`models.networks.char_rnn.CharRNN`): beam, greedy, sample.

Pure torch, shared by training (metrics) and serving. Every completion carries the model's own
probability of it given the prefix: P(the added characters and the end token | <s> prefix), not
renormalised over the returned list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.chars import CharCodec
from models.networks.char_rnn import State, expand_state, select_state

STRATEGIES = ("beam", "greedy", "sample")


@dataclass(frozen=True)
class Completion:
    """One completed word (prefix included) and its log-probability (natural log) given the prefix."""

    text: str
    log_prob: float
    ended: bool  # True: the model ended the word; False: cut at max_length

    @property
    def probability(self) -> float:
        return math.exp(self.log_prob)


def _device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def _next_log_probs(logits: Tensor, codec: CharCodec) -> Tensor:
    """Log-probabilities of the next token; <pad> and <s> can never come next."""
    logits = logits.float().clone()
    logits[:, codec.pad] = -math.inf
    logits[:, codec.start] = -math.inf
    return torch.log_softmax(logits, dim=-1)


def _read_prefix(network: nn.Module, codec: CharCodec, prefix: str) -> tuple[list[int], Tensor, State]:
    """Run <s> prefix through the network: (prefix ids without <s>, next-token logits 1 x V, state)."""
    ids = codec.encode(prefix)
    logits, state = network(torch.tensor([ids], device=_device(network)))
    return ids[1:], logits[:, -1], state


@torch.inference_mode()
def complete(network: nn.Module, codec: CharCodec, prefix: str, *, strategy: str = "beam", num_completions: int = 3,
             max_length: int = 20, beam_width: int | None = None, temperature: float = 1.0, top_k: int = 0,
             seed: int | None = None) -> list[Completion]:
    """Complete `prefix` into whole words of at most `max_length` characters, most probable first
    (words the model ended come before words cut at `max_length`, which beam search offers only to fill up).

    beam: the `num_completions` most probable words found by a beam of `beam_width` (default
    max(num_completions, 5)); greedy: the single most likely next character at each step (one result);
    sample: `num_completions` draws at `temperature`, from the `top_k` most likely characters (0: all),
    reproducible with `seed`; duplicates are merged, so fewer may come back.
    Raises `OutOfVocabularyError` for characters outside the vocabulary, ValueError for bad parameters.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if num_completions < 1 or temperature <= 0 or top_k < 0:
        raise ValueError("num_completions must be >= 1, temperature > 0, top_k >= 0")
    ids, logits, state = _read_prefix(network, codec, prefix)
    if len(ids) >= max_length:
        raise ValueError(f"max_length ({max_length}) must exceed the prefix length ({len(ids)})")
    steps = max_length - len(ids)
    if strategy == "greedy":
        return [_greedy(network, codec, ids, logits, state, steps)]
    if strategy == "sample":
        return _sample(network, codec, ids, logits, state, steps, num_completions, temperature, top_k, seed)
    return _beam(network, codec, ids, logits, state, steps, num_completions, beam_width or max(num_completions, 5))


def _greedy(network: nn.Module, codec: CharCodec, ids: list[int], logits: Tensor, state: State,
            steps: int) -> Completion:
    added, total, device = [], 0.0, _device(network)
    for _ in range(steps + 1):
        log_probs = _next_log_probs(logits, codec)[0]
        if len(added) == steps:  # at max_length only the end token may follow
            return Completion(codec.decode(ids + added), total, False)
        token = int(log_probs.argmax())
        total += float(log_probs[token])
        if token == codec.end:
            return Completion(codec.decode(ids + added), total, True)
        added.append(token)
        logits, state = network(torch.tensor([[token]], device=device), state)
        logits = logits[:, -1]
    return Completion(codec.decode(ids + added), total, False)


def _beam(network: nn.Module, codec: CharCodec, ids: list[int], logits: Tensor, state: State, steps: int,
          wanted: int, width: int) -> list[Completion]:
    device = _device(network)
    live: list[list[int]] = [[]]
    scores = torch.zeros(1, device=device)
    finished: list[Completion] = []
    for step in range(steps + 1):
        total = scores[:, None] + _next_log_probs(logits, codec)  # live x vocab
        for row, score in enumerate(total[:, codec.end].tolist()):
            finished.append(Completion(codec.decode(ids + live[row]), score, True))
        finished = sorted(finished, key=lambda c: -c.log_prob)[:wanted]
        if step == steps:
            break
        total[:, codec.end] = -math.inf
        top_scores, flat = total.flatten().topk(min(width, total.numel()))
        keep = top_scores > -math.inf
        top_scores, flat = top_scores[keep], flat[keep]
        if len(finished) >= wanted and float(top_scores[0]) <= finished[-1].log_prob:
            break  # log-probabilities only fall as words grow: no live word can still make the list
        rows, tokens = flat // total.shape[1], flat % total.shape[1]
        live = [live[r] + [t] for r, t in zip(rows.tolist(), tokens.tolist())]
        scores = top_scores
        logits, state = network(tokens[:, None], select_state(state, rows))
        logits = logits[:, -1]
    if len(finished) < wanted and len(live[0]) == steps:  # too few ended words: fill up with the cut ones, after them
        cut = [Completion(codec.decode(ids + w), float(s), False) for w, s in zip(live, scores.tolist())]
        finished += sorted(cut, key=lambda c: -c.log_prob)[: wanted - len(finished)]
    return finished


def _sample(network: nn.Module, codec: CharCodec, ids: list[int], logits: Tensor, state: State, steps: int,
            count: int, temperature: float, top_k: int, seed: int | None) -> list[Completion]:
    device = _device(network)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
    logits, state = logits.expand(count, -1), expand_state(state, count)
    added = torch.zeros(count, 0, dtype=torch.long)
    log_prob = torch.zeros(count)
    ended = torch.zeros(count, dtype=torch.bool)
    for step in range(steps + 1):
        model_log_probs = _next_log_probs(logits, codec).cpu()
        if step == steps:  # max_length reached: a word that has not ended stops here
            break
        draw_logits = model_log_probs / temperature
        if 0 < top_k < draw_logits.shape[1]:
            threshold = draw_logits.topk(top_k, dim=1).values[:, -1:]
            draw_logits = draw_logits.masked_fill(draw_logits < threshold, -math.inf)
        tokens = torch.multinomial(torch.softmax(draw_logits, dim=1), 1, generator=generator)[:, 0]
        tokens = torch.where(ended, codec.pad, tokens)
        log_prob += torch.where(ended, 0.0, model_log_probs.gather(1, tokens[:, None])[:, 0])
        ended |= tokens == codec.end
        added = torch.cat([added, tokens[:, None]], dim=1)
        if bool(ended.all()):
            break
        logits, state = network(tokens[:, None].to(device), state)
        logits = logits[:, -1]
    merged: dict[str, Completion] = {}
    for row in range(count):
        text = codec.decode(ids + added[row].tolist())
        merged[text] = Completion(text, float(log_prob[row]), bool(ended[row]))
    return sorted(merged.values(), key=lambda c: -c.log_prob)


@torch.inference_mode()
def word_log_probs(network: nn.Module, codec: CharCodec, words: list[str], *,
                   batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Per word: ln P(word </s> | <s>) under the model (over the characters and the end token only, as in
    decoding), and how many tokens were predicted (characters + end)."""
    network.eval()
    totals, counts = [], []
    for start in range(0, len(words), batch_size):
        tokens, lengths = codec.batch(words[start : start + batch_size])
        tokens = tokens.to(_device(network))
        logits, _ = network(tokens[:, :-1], lengths=lengths - 1)
        logits = logits.float()
        logits[..., [codec.pad, codec.start]] = -math.inf  # as in decoding: they never come next
        targets = tokens[:, 1:]
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=codec.pad,
                                          reduction="none")
        totals.append(-nll.sum(dim=1).cpu())
        counts.append(lengths - 1)
    return torch.cat(totals), torch.cat(counts)
