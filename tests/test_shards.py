"""`guidedmae data shard`: WebDataset tar shards of the folder layout, read back sample for sample, dealt to
ranks shard by shard, resumed exactly, and trained on with data.source=shards (also under torchrun)."""

import tarfile

import numpy as np
import pytest
import torch

from guidedmae.cli import main
from guidedmae.config import DataConfig
from guidedmae.data.datasets import FolderDataset, ShardDataset
from guidedmae.data.loader import build_loader
from guidedmae.data.shards import read_shard_index, write_shards
from guidedmae.data.transforms import AugmentConfig
from guidedmae.data.writers import write_synthetic
from guidedmae.infra.run_log import read_metrics
from tests.test_distributed import torchrun
from tests.test_pretrain import tiny_config

MODALITIES = ("rgb", "depth", "semseg")
TRAIN_16 = AugmentConfig(size=16)


@pytest.fixture
def folder(tmp_path):
    write_synthetic(tmp_path / "folder", n=11, size=20, split="train", seed=3, progress=False)
    return tmp_path / "folder"


def shard(folder, out, **options) -> None:
    write_shards(folder, "train", out, MODALITIES, progress=False, **options)


def test_the_command_writes_webdataset_shards_of_the_folder(folder, tmp_path, capsys):
    argv = [
        "data",
        "shard",
        "--root",
        str(folder),
        "--out",
        str(tmp_path / "shards"),
        "--samples-per-shard",
        "4",
    ]
    assert main(argv) == 0
    assert "wrote 11 samples in 3 shards" in capsys.readouterr().out
    files = sorted((tmp_path / "shards/train").glob("shard-*.tar"))
    assert [f.name for f in files] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]

    # Any tar reader sees WebDataset samples: consecutive members sharing a key, holding the files' bytes.
    keys = set()
    for file in files:
        with tarfile.open(file) as tar:
            names = tar.getnames()
            stems = [name.split(".", 1)[0] for name in names]
            assert stems == sorted(stems) and len(names) == 5 * len(set(stems))
            for stem in set(stems):
                key = tar.extractfile(f"{stem}.key.txt").read().decode()
                keys.add(key)
                class_name, name = key.split("/")
                for modality in MODALITIES:
                    stored = tar.extractfile(f"{stem}.{modality}.png").read()
                    assert stored == (folder / "train" / modality / class_name / f"{name}.png").read_bytes()
    assert len(keys) == 11


def test_shards_yield_the_samples_of_the_folder(folder, tmp_path):
    shard(folder, tmp_path / "shards", samples_per_shard=4)
    shards = ShardDataset(tmp_path / "shards", "train", MODALITIES, TRAIN_16, seed=0)
    folder_set = FolderDataset(folder, "train", MODALITIES, TRAIN_16, seed=0)
    assert len(shards) == 11 and shards.shard_sizes == (4, 4, 3)
    assert shards.class_names == folder_set.class_names
    by_key = {sample.key: index for index, sample in enumerate(folder_set.samples)}
    seen = set()
    for index in range(len(shards)):
        with tarfile.open(shards.index.folder / shards.index.shard_files[int(shards.shard_of[index])]) as tar:
            key = tar.extractfile(f"s{index:08d}.key.txt").read().decode()
        raw, expected = shards.load(index), folder_set.load(by_key[key])
        assert raw["label"] == expected["label"] == shards.labels()[index]
        for modality in MODALITIES:
            np.testing.assert_array_equal(raw[modality], expected[modality])
        seen.add(key)
    assert seen == set(by_key)  # every sample once: the writer shuffles, it does not drop or repeat


def test_rewriting_gives_the_same_bytes_and_removes_stale_shards(folder, tmp_path):
    shard(folder, tmp_path / "shards", samples_per_shard=2)
    assert len(list((tmp_path / "shards/train").glob("shard-*.tar"))) == 6
    shard(folder, tmp_path / "shards", samples_per_shard=4)
    first = {p.name: p.read_bytes() for p in (tmp_path / "shards/train").iterdir()}
    shard(folder, tmp_path / "shards", samples_per_shard=4)
    assert {p.name: p.read_bytes() for p in (tmp_path / "shards/train").iterdir()} == first
    assert sorted(name for name in first if name.endswith(".tar")) == [
        f"shard-00000{i}.tar" for i in range(3)
    ]


def test_ranks_read_whole_disjoint_shards_and_cover_the_data_set(folder, tmp_path):
    shard(folder, tmp_path / "shards", samples_per_shard=2)  # shards of 2, 2, 2, 2, 2, 1
    dataset = ShardDataset(tmp_path / "shards", "train", ("rgb",), TRAIN_16)
    settings = dict(batch_size=1, num_workers=0, shuffle=True, drop_last=False, seed=4, epoch=1)
    per_rank = [
        [int(b["index"]) for b in build_loader(dataset, rank=rank, world_size=3, **settings)]
        for rank in range(3)
    ]
    shard_sets = [{int(dataset.shard_of[i]) for i in indices} for indices in per_rank]
    assert [len(indices) for indices in per_rank] == [4, 4, 4]  # ceil(11 / 3), the short rank wraps around
    assert all(a.isdisjoint(b) for a in shard_sets for b in shard_sets if a is not b)
    assert set().union(*map(set, per_rank)) == set(range(11))
    # Another epoch deals the shards differently.
    other = [int(b["index"]) for b in build_loader(dataset, rank=0, world_size=3, **{**settings, "epoch": 2})]
    assert other != per_rank[0]


def test_a_resumed_shard_loader_yields_the_rest_of_the_epoch(folder, tmp_path):
    shard(folder, tmp_path / "shards", samples_per_shard=3)
    dataset = ShardDataset(tmp_path / "shards", "train", MODALITIES, TRAIN_16, seed=1)
    settings = dict(batch_size=2, shuffle=True, drop_last=False, seed=5, epoch=3)
    full = list(build_loader(dataset, num_workers=0, **settings))
    resumed = list(build_loader(dataset, num_workers=2, start_batch=2, **settings))
    assert len(full) == 6 and len(resumed) == 4
    for expected, batch in zip(full[2:], resumed, strict=True):
        for name in expected:
            torch.testing.assert_close(batch[name], expected[name], rtol=0, atol=0)


def test_shard_errors_name_the_file_and_what_was_expected(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no shard index .*index.json.*guidedmae data shard"):
        ShardDataset(tmp_path / "nothing", "train", MODALITIES, TRAIN_16)
    write_shards(folder, "train", tmp_path / "shards", ("rgb", "semseg"), samples_per_shard=6, progress=False)
    with pytest.raises(ValueError, match="holds rgb, semseg, not depth"):
        ShardDataset(tmp_path / "shards", "train", MODALITIES, TRAIN_16)
    dataset = ShardDataset(tmp_path / "shards", "train", ("rgb",), TRAIN_16)
    with pytest.raises(ValueError, match="2 shards cannot be dealt to 3 processes"):
        next(iter(build_loader(dataset, batch_size=1, num_workers=0, shuffle=True, drop_last=False, seed=0,
                               rank=0, world_size=3)))  # fmt: skip
    with pytest.raises(ValueError, match="does not apply to data.source=shards"):
        DataConfig(source="shards", root=str(tmp_path / "shards"), on_error="skip", augment=TRAIN_16)

    # A shard cut short (a copy that did not finish): the sample names its member.
    last = tmp_path / "shards/train/shard-000001.tar"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(
        ValueError, match=r"shard-000001.tar:s000000[0-9]{2}.rgb.png: the shard ends before this file"
    ):
        for index in range(len(dataset)):
            dataset.load(index)
    (tmp_path / "shards/train/shard-000000.tar").unlink()
    with pytest.raises(
        FileNotFoundError, match="shard files listed in index.json are missing: shard-000000.tar"
    ):
        read_shard_index(tmp_path / "shards", "train")


def test_pretraining_under_torchrun_reads_shards(tmp_path):
    write_synthetic(tmp_path / "folder", n=32, size=32, split="train", seed=0, progress=False)
    write_synthetic(tmp_path / "folder", n=8, size=32, split="val", seed=1, progress=False)
    for split in ("train", "val"):
        write_shards(
            tmp_path / "folder", split, tmp_path / "shards", MODALITIES, samples_per_shard=8, progress=False
        )
    out = tmp_path / "run"
    torchrun(
        "pretrain", str(tiny_config(tmp_path)), f"out_dir={out}", "data.source=shards",
        f"data.root={tmp_path / 'shards'}", "eval.split=val", "eval.num_samples=8", "log.every=1",
        "log.picture_every=0", "checkpoint.every=100", "schedule.total_epochs=2",
    )  # fmt: skip
    records = read_metrics(out / "metrics.jsonl")
    [start] = [r for r in records if r.get("event") == "start"]
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 2  # 32 samples / (8 x 2)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    [check] = [r for r in records if r.get("event") == "weights_check"]
    assert check["identical"] is True
    assert any("eval_random/loss" in r for r in records)
