"""Shar shards: `asr data shard` writes them whole or not at all, nothing of the audio lost;
training reads them a shard at a time, in another order each epoch, resumable; a damaged or
missing shard is named."""

import builtins
import io
import math
import shutil
import tarfile
import threading
from collections import defaultdict
from copy import deepcopy
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording

from asr import cli
from asr.cli import main
from asr.data import SpeechDataModule
from asr.manifests import open_shar, read_cuts, shar_shards
from tests.test_cli import _fit_args

SHARD_SIZE = 5  # 20 training clips: 4 shards


@pytest.fixture(scope="module")
def shar(corpus, tmp_path_factory):
    """The corpus's training manifest as Shar shards of 5 cuts."""
    out = tmp_path_factory.mktemp("shar") / "train"
    assert main(["data", "shard", corpus["train"], str(out), "--shard-size", str(SHARD_SIZE)]) == 0
    return out


def test_a_manifest_round_trips_through_asr_data_shard(corpus, shar, capsys):
    manifest = {cut.id: cut for cut in read_cuts(corpus["train"])}
    sharded = list(open_shar(shar))
    assert sorted(cut.id for cut in sharded) == sorted(manifest)
    assert [cut.id for cut in sharded] != list(manifest)  # written in a random order
    for cut in sharded:
        before = manifest[cut.id]
        assert cut.supervisions[0].text == before.supervisions[0].text
        assert cut.duration == before.duration and cut.sampling_rate == before.sampling_rate
        assert cut.recording.sources[0].type == "memory"  # the audio came with the cut
        np.testing.assert_array_equal(cut.load_audio(), before.load_audio())
    assert len(shar_shards(shar)) == math.ceil(len(manifest) / SHARD_SIZE)
    hours = sum(c.duration for c in manifest.values()) / 3600
    out = shar.parent / "again"
    assert main(["data", "shard", corpus["train"], str(out), "--shard-size", "7", "--quiet"]) == 0
    assert capsys.readouterr().out == f"{out}: 20 cuts in 3 shards, {hours:.2f} hours of audio\n"


def _clip(path, rate: int, subtype: str, channels: int = 1, seconds: float = 1.0) -> Recording:
    rng = np.random.default_rng(rate)
    samples = (0.3 * rng.standard_normal((int(rate * seconds), channels))).clip(-1, 1)
    sf.write(path, samples.astype(np.float32), rate, subtype=subtype)
    return Recording.from_file(path, recording_id=path.stem)


def test_rates_depths_and_lossy_files_are_kept_as_they_are(tmp_path):
    deep, floats, vorbis, plain = (
        _clip(tmp_path / "deep.wav", 11025, "PCM_24", channels=2),
        _clip(tmp_path / "floats.wav", 8000, "FLOAT"),
        _clip(tmp_path / "vorbis.ogg", 22050, "VORBIS"),
        _clip(tmp_path / "plain.wav", 16000, "PCM_16"),
    )
    cuts = CutSet.from_cuts([
        MonoCut("deep", 0.0, deep.duration, 1, recording=deep),  # one channel of two
        MonoCut("floats", 0.0, floats.duration, 0, recording=floats),
        MonoCut("vorbis", 0.0, vorbis.duration, 0, recording=vorbis),
        MonoCut("part", 0.25, 0.5, 0, recording=plain),  # a part of a file
    ])  # fmt: skip
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    assert main(["data", "shard", str(tmp_path / "cuts.jsonl.gz"), str(tmp_path / "shar")]) == 0
    for cut in open_shar(tmp_path / "shar"):
        before = cuts[cut.id]
        assert cut.sampling_rate == before.sampling_rate
        np.testing.assert_array_equal(cut.load_audio(), before.load_audio())
    ((_, audio),) = shar_shards(tmp_path / "shar")
    with tarfile.open(audio) as tar:
        members = {m.name.split(".")[0]: m.name for m in tar.getmembers() if not m.name.endswith(".json")}
        kept = tar.extractfile(members["vorbis"]).read()
    # Integer PCM becomes FLAC of its depth; float samples and a lossy codec stay as they were.
    assert members == {
        "deep": "deep.flac",
        "floats": "floats.wav",
        "vorbis": "vorbis.ogg",
        "part": "part.flac",
    }
    assert kept == (tmp_path / "vorbis.ogg").read_bytes()
    assert sf.info(io.BytesIO(_member(audio, "deep.flac"))).subtype == "PCM_24"


def _member(tar_path, name: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        return tar.extractfile(name).read()


def test_shards_come_in_another_order_each_epoch_each_read_through(shar):
    cuts = open_shar(shar, shuffle=True, seed=0)

    def epoch() -> list[str]:
        origins = [cut.shard_origin.name for cut in cuts]
        # A shard is read from start to end before the next: its cuts come together.
        runs = [name for k, name in enumerate(origins) if k == 0 or name != origins[k - 1]]
        assert len(origins) == 20 and len(runs) == len(set(runs)) == 4
        return runs

    first, second = epoch(), epoch()
    assert first != second
    cuts.data.epoch = 0  # the order follows the epoch: a resumed run sees the same one again
    assert epoch() == first
    assert [cut.shard_origin.name for cut in open_shar(shar)][::SHARD_SIZE] == [
        f"cuts.{k:06d}.jsonl.gz" for k in range(4)
    ]


def test_each_process_reads_shards_of_its_own_and_together_every_shard_once_an_epoch(shar):
    parts = [open_shar(shar, shuffle=True, seed=0, part=(rank, 3)) for rank in range(3)]
    every_shard = sorted(f"cuts.{k:06d}.jsonl.gz" for k in range(4))
    first = None
    for epoch in range(3):
        for part in parts:
            part.data.epoch = epoch
        read = [[cut.shard_origin.name for cut in part] for part in parts]
        assert [len(set(names)) for names in read] == [2, 1, 1]  # 4 shards dealt out to 3
        assert [len(names) for names in read] == [10, 5, 5]  # a shard read whole, by one process
        assert sorted(set().union(*read)) == every_shard
        first = first or read
    assert read != first  # the shards change hands from epoch to epoch


def test_more_processes_than_shards_is_an_error_that_says_what_to_do(shar):
    with pytest.raises(ValueError, match=r"train: 4 shards for 5 processes.*smaller --shard-size"):
        open_shar(shar, shuffle=True, part=(0, 5))


class _Processes:
    """``reduce_boolean_decision`` of processes that are threads here: each waits for all of
    them, then gets whether all decided yes."""

    def __init__(self, count: int):
        self.barrier = threading.Barrier(count, timeout=60)
        self.votes: dict[int, list[bool]] = defaultdict(list)
        self.own = threading.local()

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        self.own.round = getattr(self.own, "round", 0) + 1
        votes = self.votes[self.own.round]
        votes.append(decision)
        self.barrier.wait()
        return builtins.all(votes) if all else builtins.any(votes)


def test_processes_training_from_shards_read_parts_of_their_own_and_end_the_epoch_together(shar, corpus):
    """3 processes, a Shar folder of 4 shards mixed with a manifest of 4 cuts: one process
    holds twice the others' audio, and all three stop when the first runs out."""
    processes, batches, samplers = _Processes(3), {}, {}

    def train(rank: int) -> None:
        data = SpeechDataModule([str(shar), corpus["dev"]], max_duration=8, num_workers=0)
        data.trainer = SimpleNamespace(world_size=3, global_rank=rank, strategy=processes)
        loader = data.train_dataloader()
        samplers[rank] = loader.sampler
        batches[rank] = [batch["ids"] for batch in loader]

    threads = [threading.Thread(target=train, args=(rank,)) for rank in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(batches) == [0, 1, 2], "a process failed or never ended its epoch"
    assert len({len(b) for b in batches.values()}) == 1 and batches[0]  # in step
    assert all(sampler.world_size == 1 for sampler in samplers.values())  # not dealt out again
    ids = [cut_id for b in batches.values() for batch in b for cut_id in batch]
    assert len(ids) == len(set(ids))  # no cut read by two processes
    dev = [cut.id for cut in read_cuts(corpus["dev"])]
    for rank in range(3):  # the manifest's cuts dealt out one by one
        own_dev = {cut_id for batch in batches[rank] for cut_id in batch if cut_id in dev}
        assert own_dev <= set(dev[rank::3])
    # The process with two shards (10 cuts) and 2 of the manifest's had cuts left when the
    # others ran out.
    assert sum(len(batch) for batch in batches[0]) < 10 + len(dev[0::3])


def _ids(batches) -> list[list[str]]:
    return [sorted(cut.id for cut in batch) for batch in batches]


def test_a_restored_sampler_goes_on_with_the_batches_of_its_epoch(shar):
    def sampler():
        return SpeechDataModule(str(shar), max_duration=8, num_workers=0).train_dataloader().sampler

    interrupted = sampler()
    for epoch in range(3):  # three whole epochs, then two batches of the fourth
        interrupted.set_epoch(epoch)
        assert sum(len(batch) for batch in interrupted) == 20
    interrupted.set_epoch(3)
    batches = iter(interrupted)  # the sampler itself: iterating it again would start the epoch anew
    done = _ids([next(batches), next(batches)])
    state = deepcopy(interrupted.state_dict())
    rest = []
    while (batch := next(batches, None)) is not None:
        rest += _ids([batch])
    assert rest and sorted(sum(done + rest, [])) == sorted(cut.id for cut in open_shar(shar))
    resumed = sampler()  # as in a new process: its shard reader has made no pass yet
    resumed.load_state_dict(state)
    assert _ids(resumed) == rest


def test_a_shar_folder_mixes_with_a_manifest(shar, corpus):
    data = SpeechDataModule([str(shar), corpus["dev"]], max_duration=8, num_workers=0)
    ids = sorted(cut.id for batch in data.train_dataloader().sampler for cut in batch)
    expected = [cut.id for path in (corpus["train"], corpus["dev"]) for cut in read_cuts(path)]
    assert ids == sorted(expected)  # by default each set is read once an epoch


def test_training_steps_from_a_shar_folder(corpus, shar, tmp_path):
    args = _fit_args(corpus, tmp_path, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")
    trainer = cli.lightning_cli([*args, "--data.train_cuts", str(shar)]).trainer
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert trainer.train_dataloader.sampler.shars  # read from the shards


def _damaged(shar, tmp_path, damage) -> str:
    copy = tmp_path / "shar"
    shutil.copytree(shar, copy)
    damage(copy)
    return str(copy)


def _drop_last_clip(tar_path) -> None:
    """Rewrite a tar without its last clip: a well-formed tar, one clip short."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for member, data in members[:-2]:
            tar.addfile(member, io.BytesIO(data))


def _halve(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _halve_keeping_a_tar_end(path) -> None:
    """Cut a tar mid-member, then end it as a tar ends: only reading it finds the damage."""
    data = path.read_bytes()[: path.stat().st_size // 2 // 512 * 512]
    path.write_bytes(data + bytes(1024))


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda d: _halve(d / "recording.000001.tar"), ValueError, r"recording\.000001\.tar: cut short"),
        (lambda d: (d / "recording.000002.tar").unlink(), FileNotFoundError,
         r"recording\.000002\.tar: missing, while cuts\.000002\.jsonl\.gz is there"),
        (lambda d: (d / "cuts.000003.jsonl.gz").unlink(), FileNotFoundError,
         r"cuts\.000003\.jsonl\.gz: missing"),
    ],
)  # fmt: skip
def test_a_missing_or_cut_short_shard_is_named_when_opened(shar, tmp_path, damage, error, message):
    folder = _damaged(shar, tmp_path, damage)
    with pytest.raises(error, match=message):
        open_shar(folder)
    with pytest.raises(error, match=message):  # before training starts
        SpeechDataModule(folder, num_workers=0).train_dataloader()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _drop_last_clip(d / "recording.000001.tar"),
         r"recording\.000001\.tar: holds the audio of 4 of the 5 cuts of cuts\.000001\.jsonl\.gz"),
        (lambda d: _halve_keeping_a_tar_end(d / "recording.000002.tar"),
         r"recording\.000002\.tar: cannot be read .*ReadError"),
        (lambda d: _halve(d / "cuts.000003.jsonl.gz"), r"cuts\.000003\.jsonl\.gz: cannot be read .*EOFError"),
    ],
)  # fmt: skip
def test_a_damaged_shard_is_named_when_read(shar, tmp_path, damage, message):
    cuts = open_shar(_damaged(shar, tmp_path, damage))
    with pytest.raises(ValueError, match=message):
        list(cuts)


def test_an_existing_folder_is_refused_and_a_failed_write_leaves_it_whole(corpus, tmp_path, capsys):
    out = tmp_path / "shar"
    assert main(["data", "shard", corpus["train"], str(out)]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert main(["data", "shard", corpus["dev"], str(out)]) == 1
    assert f"{out}: already exists; give another folder, or --overwrite" in capsys.readouterr().err
    # A cut whose audio has gone: the run fails part-way and leaves the old shards in place.
    cuts = list(read_cuts(corpus["dev"]))
    gone = tmp_path / "gone.flac"
    shutil.copy(cuts[-1].recording.sources[0].source, gone)
    cuts[-1] = MonoCut("gone", 0.0, cuts[-1].duration, 0, recording=Recording.from_file(gone))
    gone.unlink()
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    assert main(["data", "shard", str(tmp_path / "cuts.jsonl.gz"), str(out), "--overwrite"]) == 1
    assert f"cut gone: its audio ({gone}) cannot be read" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert main(["data", "shard", corpus["dev"], str(out), "--overwrite"]) == 0
    assert sorted(cut.id for cut in open_shar(out)) == sorted(cut.id for cut in read_cuts(corpus["dev"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuts.jsonl.gz", "shar"]  # nothing hidden left
    # A folder that holds anything but shards is never replaced.
    (out / "notes.txt").write_text("mine")
    assert main(["data", "shard", corpus["dev"], str(out), "--overwrite"]) == 1
    assert "holds notes.txt, which is not a Shar shard: not replaced" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
