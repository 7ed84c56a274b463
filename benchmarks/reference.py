"""The reference for training speed: a DeepSpeech model trained the way deepspeech.pytorch does.

Its spectrogram (161 bins of log(1 + |STFT|), 20 ms Hamming window, 10 ms hop, each utterance
normalised by its own mean and std) is computed in DataLoader workers; two Conv2d layers with
BatchNorm2d and Hardtanh(0, 20) subsample time by 2 and frequency by 4, padded frames masked to
zero after every conv module; bidirectional LSTMs run on packed sequences, their two directions
summed, with a sequence-wise BatchNorm1d before every layer but the first; BatchNorm1d and a
Linear without bias give the characters. CTC loss (summed, divided by the batch size) in fp32,
AdamW with deepspeech.pytorch's default "adam" settings (lr 1.5e-4, weight decay 1e-5),
gradients clipped at norm 400; batches of a fixed number of utterances in random order.
Shapes: B batch, F frequency bins, T frames, H hidden units, V characters with the blank.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.audio import SAMPLE_RATE
from asr.data import read_cuts
from asr.text import CharTokenizer

N_FFT = 320  # 20 ms window at 16 kHz: 161 frequency bins
HOP = 160  # 10 ms
WINDOW = torch.hamming_window(N_FFT)
ADAMW = {"lr": 1.5e-4, "weight_decay": 1e-5}  # deepspeech.pytorch's defaults (OptimConfig)
MAX_NORM = 400.0  # its gradient clipping


def spectrogram(samples: torch.Tensor) -> torch.Tensor:
    """(S,) float waveform at 16 kHz -> (161, 1 + S // 160) normalised log(1 + |STFT|)."""
    stft = torch.stft(
        samples, N_FFT, HOP, window=WINDOW, center=True, pad_mode="constant", return_complex=True
    )
    spect = torch.log1p(stft.abs())
    return (spect - spect.mean()) / spect.std()


class Utterances(torch.utils.data.Dataset):
    """The cuts of a manifest as (spectrogram (161, T), target ids (L,), audio seconds)."""

    def __init__(self, cuts_path, tokenizer: CharTokenizer):
        self.cuts = list(read_cuts(cuts_path))
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, i: int):
        cut = self.cuts[i]
        cut = cut if cut.sampling_rate == SAMPLE_RATE else cut.resample(SAMPLE_RATE)
        samples = torch.from_numpy(cut.load_audio()).mean(0)  # mono
        text = " ".join(s.text or "" for s in cut.supervisions)
        targets = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        return spectrogram(samples), targets, samples.shape[0] / SAMPLE_RATE


def collate(items: list) -> dict:
    """Longest first (packing needs it), zero-padded: inputs (B, 1, 161, T), lengths (B,),
    targets (sum of L,) concatenated, target_lens (B,), audio_seconds (a float)."""
    items = sorted(items, key=lambda item: item[0].shape[1], reverse=True)
    lengths = torch.tensor([spect.shape[1] for spect, _, _ in items])
    inputs = torch.zeros(len(items), 1, items[0][0].shape[0], int(lengths[0]))
    for i, (spect, _, _) in enumerate(items):
        inputs[i, 0, :, : spect.shape[1]] = spect
    return {
        "inputs": inputs,
        "lengths": lengths,
        "targets": torch.cat([targets for _, targets, _ in items]),
        "target_lens": torch.tensor([len(targets) for _, targets, _ in items]),
        "audio_seconds": sum(seconds for _, _, seconds in items),
    }


class MaskedConv(nn.Module):
    """The conv front end: (B, 1, 161, T) -> (B, 32 * 41, T') with T' = (T - 1) // 2 + 1."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=(41, 11), stride=(2, 2), padding=(20, 5)),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20, inplace=True),
            nn.Conv2d(channels, channels, kernel_size=(21, 11), stride=(2, 1), padding=(10, 5)),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20, inplace=True),
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input frames -> (B,) output frames, from each conv's time kernel, stride and padding."""
        for conv in (m for m in self.layers if isinstance(m, nn.Conv2d)):
            span = conv.dilation[1] * (conv.kernel_size[1] - 1) + 1
            lengths = (
                torch.div(lengths + 2 * conv.padding[1] - span, conv.stride[1], rounding_mode="floor") + 1
            )
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out_lens = self.output_lengths(lengths)
        for module in self.layers:
            x = module(x)
            # Padding must stay zero, or the BatchNorm and the next kernel read it as signal.
            pad = torch.arange(x.shape[3]) >= out_lens.unsqueeze(1)  # (B, T')
            x = x.masked_fill(pad[:, None, None, :], 0)
        return x.flatten(1, 2)


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over every frame of a (T, B, H) sequence, padding included as theirs does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(0, 1)).view_as(x)


class PackedBiLSTM(nn.Module):
    """(T, B, D) -> (T, B, H): optional BatchNorm, a packed bidirectional LSTM, directions summed."""

    def __init__(self, input_size: int, hidden_size: int, batch_norm: bool):
        super().__init__()
        self.norm = SequenceBatchNorm(input_size) if batch_norm else nn.Identity()
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(pack_padded_sequence(self.norm(x), lengths))
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
        return out.view(*out.shape[:2], 2, -1).sum(2)


class DeepSpeech(nn.Module):
    """Spectrogram batch (B, 1, 161, T), lengths (B,) -> logits (T', B, V), lengths (B,)."""

    def __init__(
        self, hidden_size: int = 256, num_layers: int = 3, num_classes: int = 29, freq_bins: int = 161
    ):
        super().__init__()
        self.conv = MaskedConv()
        conv_out = 32 * ((((freq_bins - 1) // 2 + 1) - 1) // 2 + 1)  # frequency strides 2 and 2
        sizes = [conv_out] + [hidden_size] * num_layers
        self.rnns = nn.ModuleList(
            PackedBiLSTM(sizes[i], hidden_size, batch_norm=i > 0) for i in range(num_layers)
        )
        self.head = nn.Sequential(
            SequenceBatchNorm(hidden_size), nn.Linear(hidden_size, num_classes, bias=False)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        out_lens = self.conv.output_lengths(lengths)
        x = self.conv(x, lengths).permute(2, 0, 1)  # (T', B, 32 * 41): time first, as theirs
        for rnn in self.rnns:
            x = rnn(x, out_lens)
        return self.head(x), out_lens


def train_step(model: DeepSpeech, optimizer: torch.optim.Optimizer, ctc: nn.CTCLoss, batch: dict) -> float:
    """One update on a :func:`collate` batch; returns the loss per utterance."""
    logits, lens = model(batch["inputs"], batch["lengths"])
    loss = ctc(logits.log_softmax(-1), batch["targets"], lens, batch["target_lens"]) / len(lens)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    optimizer.step()
    return loss.item()


def train(
    cuts_path,
    after_batch: Callable[[float], bool],
    batch_size: int = 16,
    num_workers: int = 2,
    seed: int = 0,
) -> DeepSpeech:
    """Train a 3 x BiLSTM 256 DeepSpeech on a cut manifest, epoch after epoch, until
    ``after_batch(audio seconds of the batch)`` returns True; returns the model."""
    torch.manual_seed(seed)
    tokenizer = CharTokenizer()
    loader = torch.utils.data.DataLoader(
        Utterances(cuts_path, tokenizer),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        collate_fn=collate,
    )
    model = DeepSpeech(num_classes=len(tokenizer)).train()
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    ctc = nn.CTCLoss(blank=tokenizer.blank_id, reduction="sum", zero_infinity=True)
    while True:
        for batch in loader:
            train_step(model, optimizer, ctc, batch)
            if after_batch(batch["audio_seconds"]):
                return model
