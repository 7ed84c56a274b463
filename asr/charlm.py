"""A recurrent character language model: predicts the next character of a normalised sentence.

Ids are those of :class:`~asr.text.CharTokenizer`; id 0 (the CTC blank, which never occurs in
text) is the sentence boundary: it is fed first (begin of sentence) and predicted last (end of
sentence). "the cat" is modelled as 0 t h e ␣ c a t -> t h e ␣ c a t 0. Shapes: B sentences,
L characters, H hidden units, V vocabulary (the alphabet plus the boundary).

The LM serves CTC beam search through :class:`CharLMScorer` (inside the search) and
:func:`sentence_log_probs` (rescoring whole hypotheses); it is trained with
:class:`CharLMTraining` on :class:`TextDataModule` (text files, one sentence per line).
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

from asr.model import MODELS_DIR, RNN_TYPES, load_network, save_network
from asr.text import DEFAULT_ALPHABET, CharTokenizer, normalize_text

CELLS = {"gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}  # one step of a layer (LSTM: lstm_cell)
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # a layer's parameters, in the cells' order
BOUNDARY = 0  # begin and end of sentence: the tokenizer's blank id, never a character
IGNORE = -100  # target of padding positions; cross-entropy skips it
# The character LM shipped beside the default model (`make charlm`, then `make ship-charlm`):
# what `asr lm sample` and `asr lm perplexity` use when no --model is named.
DEFAULT_CHARLM = MODELS_DIR / "default.charlm.pt"


@dataclass
class CharLMConfig:
    """Everything needed to rebuild the network; saved inside every LM file."""

    rnn_type: str = "lstm"  # lstm | gru | rnn (tanh)
    hidden_size: int = 512  # units per layer; also the embedding size (V is ~30, so it costs little)
    num_layers: int = 2
    dropout: float = 0.1  # on the embeddings, between layers and before the output layer
    alphabet: str = DEFAULT_ALPHABET  # the recognizer's characters; id 0 is the sentence boundary

    def __post_init__(self):
        if self.rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {sorted(RNN_TYPES)}, got {self.rnn_type!r}")


class CharLM(nn.Module):
    """Embedding -> stacked unidirectional RNN -> logits of the next character or the boundary."""

    def __init__(self, config: CharLMConfig):
        super().__init__()
        self.config = config
        self.tokenizer = CharTokenizer(config.alphabet)
        vocab, hidden, layers = len(self.tokenizer), config.hidden_size, config.num_layers
        self.embed = nn.Embedding(vocab, hidden)
        between = config.dropout if layers > 1 else 0.0  # torch warns about dropout after a last layer
        self.rnn = RNN_TYPES[config.rnn_type](hidden, hidden, layers, batch_first=True, dropout=between)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, vocab)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, tokens: torch.Tensor, state=None):
        """(B, L) ids, RNN state or None (a fresh start) -> (B, L, V) logits, the RNN state after L.

        The state is what ``torch.nn.LSTM`` (a pair of (layers, B, H)) or GRU/RNN ((layers, B, H))
        returns; pass it back to continue the same sentences.
        """
        out, state = self.rnn(self.dropout(self.embed(tokens)), state)
        return self.head(self.dropout(out)), state

    def step(self, tokens: torch.Tensor, state=None):
        """(B,) ids, RNN state or None -> (B, V) logits of the next id, the state after ``tokens``.

        ``forward`` for one character (without dropout) computed cell by cell, for sampling and
        beam search: on CPU ``nn.LSTM`` hands each call to oneDNN, which reorders all weights
        every time, making one step of one sentence ~10x slower (10 ms vs 1 ms at 2 x 512 units).
        """
        x = self.embed(tokens)  # (B, H)
        lstm = self.config.rnn_type == "lstm"
        if state is None:
            zeros = x.new_zeros(self.config.num_layers, len(tokens), self.config.hidden_size)
            state = (zeros, zeros) if lstm else zeros
        hidden, cells = [], []
        for i in range(self.config.num_layers):
            weights = [getattr(self.rnn, f"{w}_l{i}") for w in WEIGHTS]
            if lstm:
                x, c = torch.lstm_cell(x, (state[0][i], state[1][i]), *weights)
                cells.append(c)
            else:
                x = CELLS[self.config.rnn_type](x, state[i], *weights)
            hidden.append(x)
        state = (torch.stack(hidden), torch.stack(cells)) if lstm else torch.stack(hidden)
        return self.head(x), state

    def batch(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentences (normalised here) -> (B, L) inputs and (B, L) targets, L = longest + 1.

        Inputs start with the boundary; targets end with it and are IGNORE at padding.
        """
        ids = [self.tokenizer.encode(s) for s in sentences]
        inputs = torch.full((len(ids), max(map(len, ids)) + 1), BOUNDARY, dtype=torch.long)
        targets = torch.full_like(inputs, IGNORE)
        for row, seq in enumerate(ids):
            inputs[row, 1 : len(seq) + 1] = torch.tensor(seq, dtype=torch.long)
            targets[row, : len(seq) + 1] = torch.tensor([*seq, BOUNDARY], dtype=torch.long)
        return inputs.to(self.device), targets.to(self.device)


CHARLM_FORMAT = "asr-char-lm/1"  # the "format" key of every LM file


def save_charlm(model: CharLM, path) -> Path:
    """Write ``model`` (format, config, float16 weights) to one file, atomically."""
    return save_network(model, CHARLM_FORMAT, path)


def load_charlm(path=DEFAULT_CHARLM, device: str | torch.device = "cpu") -> CharLM:
    """Load a file written by :func:`save_charlm` (``asr lm export``), in eval mode and float32;
    by default the shipped one."""
    build = lambda config: CharLM(CharLMConfig(**config))  # noqa: E731
    return load_network(path, CHARLM_FORMAT, build, "character LM file", device)


@contextmanager
def _evaluating(model: nn.Module):
    """Eval mode (no dropout) and no autograd for the block, then the caller's mode again."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def sentence_log_probs(model: CharLM, sentences: list[str]) -> torch.Tensor:
    """(B,) natural-log probability of each sentence, its end included, in one batched pass."""
    with _evaluating(model):
        inputs, targets = model.batch(sentences)
        logits, _ = model(inputs)  # (B, L, V)
        nll = nn.functional.cross_entropy(
            logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
        )  # (B, L), 0 at padding
    return -nll.sum(dim=1).cpu()


def perplexity(model: CharLM, sentences: list[str], batch_size: int = 64) -> float:
    """exp(mean negative log-likelihood per character), the end of each sentence included."""
    if not sentences:
        raise ValueError("perplexity needs at least one sentence")
    log_prob = sum(
        sentence_log_probs(model, sentences[start : start + batch_size]).sum().item()
        for start in range(0, len(sentences), batch_size)
    )
    count = sum(len(model.tokenizer.encode(s)) + 1 for s in sentences)  # characters and the end
    return math.exp(-log_prob / count)


def sample(
    model: CharLM, prompt: str = "", temperature: float = 1.0, max_chars: int = 200, seed: int | None = None
) -> str:
    """The (normalised) prompt continued by sampled characters until the end of the sentence.

    ``temperature`` divides the logits: below 1 sharpens, above 1 flattens, 0 always takes the
    most likely character. At most ``max_chars`` characters are added.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    text = normalize_text(prompt, model.config.alphabet)
    if text and prompt[-1:].isspace():
        text += " "  # "the " asks for the next word, not for more letters of "the"
    tokens = model.tokenizer.tokens
    generator = torch.Generator(model.device).manual_seed(seed) if seed is not None else None
    with _evaluating(model):
        ids = [BOUNDARY, *(tokens.index(c) for c in text)]
        logits, state = model(torch.tensor([ids], device=model.device))
        logits = logits[:, -1]  # (1, V): the prediction after the prompt
        for _ in range(max_chars):
            if temperature == 0:
                token = int(logits[0].argmax())
            else:
                probs = (logits[0].float() / temperature).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            if token == BOUNDARY:
                break
            text += tokens[token]
            logits, state = model.step(torch.tensor([token], device=model.device), state)
    return text


class CharLMScorer(CTCDecoderLM):
    """The LM as the language model of torchaudio's lexicon-free CTC beam search::

        tokens = ["-", *alphabet]  # CharTokenizer.tokens with the blank spelled "-"
        lm = CharLMScorer(load_charlm("charlm.pt"), tokens)
        decoder = ctc_decoder(lexicon=None, tokens=tokens, lm=lm, sil_token=" ", lm_weight=0.5)

    Without a lexicon, flashlight scores each emitted token (the space, its word separator,
    too; never the blank) by its index in the decoder's ``tokens``; the scorer maps the index
    to the LM id of the token's character, so any order works, and refuses a token that is
    neither ``blank_token`` nor in the LM's alphabet. Scores are natural logs; ``finish``
    scores the end of the sentence. Lexicon-free decoding only: with a lexicon, flashlight
    would score words. ``model`` is put in eval mode.

    Flashlight tells LM states apart by the address of the C++ object; ``state.child(i)``
    returns the same object for the same prefix, so states form a trie of prefixes. A state's
    Python wrapper must stay alive, or the next call gets a new one (a new dict key): the caches
    hold every state of the utterance until ``start``. A scored child is only recorded
    (parent, id); the RNN runs for it once, when the beam extends it.
    """

    def __init__(self, model: CharLM, tokens: list[str] | None = None, blank_token: str = "-"):
        CTCDecoderLM.__init__(self)
        self.model = model.eval()
        alphabet = model.config.alphabet
        tokens = [blank_token, *alphabet] if tokens is None else tokens
        unknown = [t for t in tokens if t != blank_token and (len(t) != 1 or t not in alphabet)]
        if unknown:
            raise ValueError(f"decoder tokens {unknown} are not characters of the LM alphabet {alphabet!r}")
        # Decoder token index -> LM id; the blank maps to None, flashlight never scores it.
        self._lm_ids = [None if t == blank_token else alphabet.index(t) + 1 for t in tokens]
        self._begin = self._step(None, BOUNDARY)  # the same for every utterance
        self._computed: dict = {}  # state -> (log-probabilities of the next id, RNN state)
        self._pending: dict = {}  # state -> (parent state, id): scored, not yet extended

    def start(self, start_with_nothing: bool = False) -> CTCDecoderLMState:
        """A new utterance, after the boundary (a sentence always begins with it)."""
        state = CTCDecoderLMState()
        self._computed, self._pending = {state: self._begin}, {}
        return state

    def score(self, state: CTCDecoderLMState, usr_token_idx: int) -> tuple[CTCDecoderLMState, float]:
        lm_id = self._lm_ids[usr_token_idx]
        child = state.child(usr_token_idx)
        if child not in self._computed:
            self._pending.setdefault(child, (state, lm_id))
        return child, self._log_probs(state)[lm_id]

    def finish(self, state: CTCDecoderLMState) -> tuple[CTCDecoderLMState, float]:
        return state, self._log_probs(state)[BOUNDARY]

    def _log_probs(self, state: CTCDecoderLMState) -> list[float]:
        if state not in self._computed:
            parent, lm_id = self._pending.pop(state)
            self._computed[state] = self._step(self._computed[parent][1], lm_id)
        return self._computed[state][0]

    @torch.inference_mode()
    def _step(self, rnn_state, lm_id: int) -> tuple[list[float], object]:
        logits, rnn_state = self.model.step(torch.tensor([lm_id], device=self.model.device), rnn_state)
        # A list, not a tensor: the decoder reads one value ~V x beam times per frame.
        return logits[0].float().log_softmax(-1).tolist(), rnn_state
