import json
import math

import lightning as L
import pytest
import torch
from torchaudio.models.decoder import ctc_decoder

from asr.charlm import (
    BOUNDARY,
    IGNORE,
    CharLM,
    CharLMConfig,
    CharLMScorer,
    load_charlm,
    perplexity,
    sample,
    save_charlm,
    sentence_log_probs,
)
from asr.cli import lightning_cli, main
from asr.data import SentenceBatches, TextDataModule
from asr.model import ModelFileError
from asr.text import DEFAULT_ALPHABET
from asr.training import CharLMTraining

# Distinct first words, so a prompt picks one sentence; "cat" occurs, "kat" never does.
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "my cat likes warm milk",
    "her bird sings every morning",
    "this house has a red door",
    "our train leaves at noon",
    "some people read books at night",
    "every child loves a good story",
    "his car is parked outside",
    "we walked along the river",
    "you should drink more water",
    "they built a small boat",
    "green apples taste sour",
    "fresh bread smells nice",
    "old friends meet again",
    "snow fell on the quiet town",
    "ten ducks swim in the pond",
    "one black cat sleeps all day",
    "bright stars shine above us",
    "rain makes the grass grow",
]
V = len(DEFAULT_ALPHABET) + 1  # 29: the 28 characters and the sentence boundary
UNIFORM_PPL = V  # every character and the end equally likely


def _fit(model: CharLM, steps: int, lr: float = 1e-2) -> CharLM:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    inputs, targets = model.batch(SENTENCES)
    for _ in range(steps):
        logits, _ = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not fight a busy machine for a second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_lm() -> CharLM:
    """A small LSTM that has memorised the 20 sentences (about 300 full-batch steps)."""
    torch.manual_seed(0)
    return _fit(CharLM(CharLMConfig(hidden_size=96, num_layers=1, dropout=0.0)), steps=300)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_shapes_and_state_continue_a_sentence(rnn_type):
    model = CharLM(CharLMConfig(rnn_type=rnn_type, hidden_size=16, num_layers=2)).eval()
    tokens = torch.randint(0, V, (3, 7))
    logits, _ = model(tokens)
    assert logits.shape == (3, 7, V)
    # Feeding the sentence in two pieces, passing the state, gives the same predictions.
    first, state = model(tokens[:, :4])
    second, _ = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), logits)
    # step(), one character at a time through the cells, agrees with forward().
    stepped, state = [], None
    for column in tokens.T:
        step_logits, state = model.step(column, state)
        stepped.append(step_logits)
    torch.testing.assert_close(torch.stack(stepped, dim=1), logits)


def test_batch_begins_with_the_boundary_and_ends_with_it():
    model = CharLM(CharLMConfig(hidden_size=8, num_layers=1))
    inputs, targets = model.batch(["Ab", "c"])
    a, b, c = (model.tokenizer.tokens.index(ch) for ch in "abc")
    assert inputs.tolist() == [[BOUNDARY, a, b], [BOUNDARY, c, BOUNDARY]]
    assert targets.tolist() == [[a, b, BOUNDARY], [c, BOUNDARY, IGNORE]]


def test_unknown_rnn_type_is_refused():
    with pytest.raises(ValueError, match="rnn_type"):
        CharLMConfig(rnn_type="transformer")


def test_save_load_round_trip(tmp_path):
    model = CharLM(CharLMConfig(rnn_type="gru", hidden_size=32, num_layers=2, alphabet=" abc")).eval()
    path = save_charlm(model, tmp_path / "lm" / "charlm.pt")
    assert [p.name for p in path.parent.iterdir()] == ["charlm.pt"]  # no temporary file left
    loaded = load_charlm(path)
    assert loaded.config == model.config and not loaded.training
    tokens = torch.randint(0, 4, (2, 9))
    torch.testing.assert_close(loaded(tokens)[0], model(tokens)[0], atol=1e-2, rtol=0)  # float16 file


def test_files_that_are_not_a_char_lm_are_refused(tmp_path, untrained_model_file):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    for path, message in [
        (tmp_path / "missing.pt", "no such character LM file"),
        (text, "not a character LM file"),
        (other, "not a character LM file"),
        (untrained_model_file, "its format is 'asr-recurrent-ctc/1'"),
    ]:
        with pytest.raises(ModelFileError, match=message) as err:
            load_charlm(path)
        assert str(path) in str(err.value)


def test_sentence_batches_bound_sentences_and_characters():
    lengths = [5, 40, 3, 12, 7, 30, 1, 100, 8, 9]
    sampler = SentenceBatches(lengths, batch_size=3, max_chars=60, shuffle=True, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert len(sampler) == len(batches)
    for batch in batches:
        width = max(lengths[i] for i in batch) + 1
        assert len(batch) <= 3 and (width * len(batch) <= 60 or len(batch) == 1)
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch


def test_trained_lm_beats_uniform_perplexity(trained_lm):
    untrained = CharLM(CharLMConfig(hidden_size=96, num_layers=1))
    assert perplexity(untrained, SENTENCES) > 0.8 * UNIFORM_PPL
    assert perplexity(trained_lm, SENTENCES) < 1.5


def test_cold_sampling_completes_a_training_sentence(trained_lm):
    for prompt in ["the ", "a dog", "snow", "Ten DUCKS"]:
        text = sample(trained_lm, prompt, temperature=0.1, seed=0)
        assert text in SENTENCES and text.startswith(prompt.lower())
    assert sample(trained_lm, "green", temperature=0) == "green apples taste sour"


def test_sampling_with_a_seed_is_reproducible(trained_lm):
    hot = [sample(trained_lm, temperature=3.0, seed=7) for _ in range(2)]
    assert hot[0] == hot[1] and hot[0] not in SENTENCES  # reproducible, yet truly sampled
    assert len(sample(trained_lm, temperature=3.0, max_chars=5, seed=0)) <= 5


def test_hotter_sampling_is_more_surprising(trained_lm):
    """Samples at a higher temperature have a higher perplexity under the model itself."""

    def samples(temperature: float) -> list[str]:
        return [sample(trained_lm, temperature=temperature, max_chars=80, seed=s) for s in range(20)]

    cold, warm, hot = (perplexity(trained_lm, samples(t)) for t in (0.5, 2.0, 5.0))
    assert cold < 1.5 < 2 * cold < warm < hot / 2


def test_lightning_training_lowers_val_loss(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(SENTENCES * 4) + "\n\n")
    (tmp_path / "val.txt").write_text("\n".join(SENTENCES))
    data = TextDataModule(str(tmp_path / "train.txt"), str(tmp_path / "val.txt"), batch_size=16)
    torch.manual_seed(0)
    module = CharLMTraining(
        CharLMConfig(hidden_size=64, num_layers=1), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2)
    )
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = L.Trainer(max_steps=40, enable_model_summary=False, default_root_dir=tmp_path, **options)
    # Not trainer.validate: metric states reset under its inference mode cannot be updated by
    # the validation inside fit (torchmetrics + Lightning; CTCTraining's WER has the same trap).
    before = math.log(perplexity(module.net, SENTENCES))
    trainer.fit(module, data)
    after = trainer.validate(module, data, verbose=False)[0]
    assert after["val_loss"] < 0.7 * before
    assert after["val_ppl"] == pytest.approx(math.exp(after["val_loss"]), rel=1e-4)
    assert after["val_ppl"] == pytest.approx(perplexity(module.net, SENTENCES), rel=1e-4)


def test_lightning_cli_fits_and_the_checkpoint_exports(tmp_path):
    """The classes work under LightningCLI (as ``asr fit`` will run them), and export_charlm
    turns the checkpoint, whose config LightningCLI stores as a dict, into an LM file."""
    (tmp_path / "train.txt").write_text("\n".join(SENTENCES))
    args = ["fit", f"--data.train_text={tmp_path / 'train.txt'}", "--data.batch_size=8"]
    args += ["--model.net.hidden_size=16", "--model.net.num_layers=1", "--model.net.rnn_type=gru"]
    args += [
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = lightning_cli(args, language_model=True)  # what `asr lm fit` runs
    assert main(["lm", "export", str(tmp_path / "checkpoints" / "last.ckpt"), str(tmp_path / "lm.pt")]) == 0
    loaded = load_charlm(tmp_path / "lm.pt")
    assert loaded.config == CharLMConfig(rnn_type="gru", hidden_size=16, num_layers=1)
    inputs, _ = loaded.batch(SENTENCES[:2])
    expected = cli.model.net.eval()(inputs)[0]
    torch.testing.assert_close(loaded(inputs)[0], expected, atol=1e-2, rtol=0)


def test_scorer_gives_the_model_log_probabilities_in_any_token_order(trained_lm):
    sentence = "the cat sat"
    inputs, targets = trained_lm.batch([sentence])
    with torch.no_grad():
        expected = -torch.nn.functional.cross_entropy(trained_lm(inputs)[0][0], targets[0], reduction="sum")
    for tokens in (["-", *DEFAULT_ALPHABET], [*reversed(DEFAULT_ALPHABET), "<b>"]):
        scorer = CharLMScorer(trained_lm, tokens, blank_token=tokens[0] if tokens[0] == "-" else "<b>")
        for _ in range(2):  # a second utterance starts afresh
            state, total = scorer.start(False), 0.0
            for ch in sentence:
                state, score = scorer.score(state, tokens.index(ch))
                total += score
            total += scorer.finish(state)[1]
            assert total == pytest.approx(expected.item(), abs=1e-4)
    with pytest.raises(ValueError, match=r"\['X'\] are not characters"):
        CharLMScorer(trained_lm, ["-", " ", "a", "X"])


def test_sentence_log_probs_are_the_scorers_sums_whatever_the_batch(trained_lm):
    sentences = ["the cat sat", "", "a dog ran in the park", "the kat sat"]
    scorer, tokens = CharLMScorer(trained_lm), ["-", *DEFAULT_ALPHABET]
    expected = []
    for sentence in sentences:
        state, total = scorer.start(False), 0.0
        for ch in sentence:
            state, score = scorer.score(state, tokens.index(ch))
            total += score
        expected.append(total + scorer.finish(state)[1])
    batched = sentence_log_probs(trained_lm, sentences)
    assert batched.shape == (4,)
    assert batched.tolist() == pytest.approx(expected, abs=1e-4)
    alone = [sentence_log_probs(trained_lm, [s]).item() for s in sentences]  # no padding
    assert alone == pytest.approx(batched.tolist(), abs=1e-4)
    assert batched[0] > batched[3] + 5  # it knows "cat", never saw "kat"


def _emissions(frames: list[dict[str, float]], tokens: list[str]) -> torch.Tensor:
    """(1, T, V) log-probabilities; each frame names its likely tokens, the rest share what is left."""
    rows = []
    for frame in frames:
        rest = (1.0 - sum(frame.values())) / (len(tokens) - len(frame))
        rows.append([frame.get(t, rest) for t in tokens])
    return torch.tensor(rows).log().unsqueeze(0).contiguous()


def test_lm_tips_an_ambiguous_spelling_in_ctc_beam_search(trained_lm):
    tokens = ["-", *DEFAULT_ALPHABET]
    frames = []
    for ch in "the cat sat on the mat":
        # Acoustically "k" is a little more likely than "c": only the LM knows "the cat".
        frames.append({"k": 0.5, "c": 0.4} if ch == "c" else {ch: 0.95})
        frames.append({"-": 0.95})
    emissions = _emissions(frames, tokens)

    def decode(lm_weight: float) -> str:
        lm = CharLMScorer(trained_lm, tokens)
        decoder = ctc_decoder(
            lexicon=None, tokens=tokens, lm=lm, lm_weight=lm_weight, beam_size=10, sil_token=" "
        )
        best = decoder(emissions)[0][0]
        return "".join(tokens[i] for i in best.tokens).strip()

    assert decode(0.0) == "the kat sat on the mat"
    assert decode(1.0) == "the cat sat on the mat"


def test_transcribe_with_both_lms(trained_lm, tmp_path, untrained_model_file, speech_wav, capsys):
    from asr.ngram import build_arpa

    lm = build_arpa(SENTENCES, tmp_path / "words.arpa", order=2)
    charlm = save_charlm(trained_lm, tmp_path / "charlm.pt")
    args = [
        "transcribe",
        speech_wav,
        "--model",
        untrained_model_file,
        "--decoder",
        "beam",
        "--format",
        "json",
    ]
    args += ["--lm", str(lm), "--charlm", str(charlm), "--charlm-weight", "0.7", "--rescore-nbest", "4"]
    assert main(args) == 0
    assert set(json.loads(capsys.readouterr().out)[0]["text"].split()) <= {
        w for s in SENTENCES for w in s.split()
    }
    assert main([*args, "--lexicon", str(tmp_path / "words.arpa.lexicon"), "--rescore-nbest", "0"]) == 1
    assert "rescore_nbest must be at least 1" in capsys.readouterr().err


def test_command_lines(trained_lm, tmp_path, capsys):
    model = save_charlm(trained_lm, tmp_path / "charlm.pt")
    assert (
        main(["lm", "sample", "--model", str(model), "--prompt", "rain", "--temperature", "0.1", "-n", "2"])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == ["rain makes the grass grow"] * 2
    (tmp_path / "text.txt").write_text("\n".join(SENTENCES[:5]))
    perplexity_of = lambda lm, text: main(["lm", "perplexity", "--model", str(lm), str(text)])  # noqa: E731
    assert perplexity_of(model, tmp_path / "text.txt") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'text.txt'}: perplexity 1.") and "5 sentences" in out
    assert perplexity_of(tmp_path / "text.txt", tmp_path / "text.txt") == 1
    assert "not a character LM file" in capsys.readouterr().err
    assert perplexity_of(model, tmp_path / "missing.txt") == 1
    assert "no such text file" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n\n")
    assert perplexity_of(model, tmp_path / "empty.txt") == 1
    assert "empty.txt: no sentences" in capsys.readouterr().err
