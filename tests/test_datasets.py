"""Datasets return the model's tensors; the loader shards, shuffles and resumes them exactly."""

import platform

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from guidedmae.data.datasets import ADE20KDataset, FolderDataset, SyntheticScenes
from guidedmae.data.loader import ResumableDistributedSampler, build_loader, reuse_freed_memory
from guidedmae.data.modalities import IMAGENET_MEAN, IMAGENET_STD
from guidedmae.data.scenes import SHAPES, render_scene
from guidedmae.data.seeding import derived_generator
from guidedmae.data.transforms import AugmentConfig, standardize_depth
from guidedmae.data.writers import write_sample
from guidedmae.engine.evaluate import shard_loader
from guidedmae.infra.distributed import DistributedContext

EVAL_16 = AugmentConfig(size=16, depth="metres", semseg_stride=1, train=False)
TRAIN_16 = AugmentConfig(size=16)


def denormalize(rgb: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((rgb * std + mean) * 255).permute(1, 2, 0).numpy()


def write_folder(root, count_per_class=3, size=16):
    """A train split with classes a/ and b/; returns {(class, i): raw sample}."""
    rng = np.random.default_rng(0)
    written = {}
    for class_name in ("a", "b"):
        for i in range(count_per_class):
            sample = {
                "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                "depth": rng.integers(500, 9000, (size, size)).astype(np.float32) / 1000,
                "semseg": rng.integers(0, 10, (size, size), dtype=np.uint8),
            }
            write_sample(root, "train", class_name, f"{i:03d}", sample)
            written[class_name, i] = sample
    return written


def fingerprint(sample: dict) -> bytes:
    return sample["rgb"].numpy().tobytes()


def test_folder_dataset_returns_the_files_as_model_tensors(tmp_path):
    written = write_folder(tmp_path)
    dataset = FolderDataset(tmp_path, "train", ("rgb", "depth", "semseg"), EVAL_16)
    assert len(dataset) == 6 and dataset.classes == ["a", "b"]
    sample = dataset[4]  # b/001
    raw = written["b", 1]
    assert sample["rgb"].dtype == torch.float32 and sample["rgb"].shape == (3, 16, 16)
    np.testing.assert_allclose(denormalize(sample["rgb"]), raw["rgb"], atol=1e-3)
    np.testing.assert_allclose(sample["depth"][0].numpy(), raw["depth"], atol=1e-6)
    np.testing.assert_array_equal(sample["semseg"].numpy(), raw["semseg"])
    assert sample["semseg"].dtype == torch.int64 and sample["label"].item() == 1


def test_folder_dataset_loads_only_the_requested_modalities(tmp_path):
    write_folder(tmp_path)
    dataset = FolderDataset(tmp_path, "train", ("depth",), TRAIN_16)
    sample = dataset[0]
    assert set(sample) == {"depth", "label", "index", "view"} and sample["index"].item() == 0
    assert dataset[1]["index"].item() == 1
    torch.testing.assert_close(sample["depth"], standardize_depth(sample["depth"]), atol=1e-4, rtol=0)


def test_folder_dataset_skip_mode_counts_and_drops_bad_samples(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "train/semseg/a/001.png").unlink()
    with pytest.warns(UserWarning, match="skipped 1 of 6 samples"):
        dataset = FolderDataset(tmp_path, "train", ("rgb", "semseg"), EVAL_16, on_error="skip")
    assert [s.key for s in dataset.samples] == ["a/000", "a/002", "b/000", "b/001", "b/002"]
    with pytest.raises(FileNotFoundError, match="001.png has no semseg"):
        FolderDataset(tmp_path, "train", ("rgb", "semseg"), EVAL_16)


def test_an_unreadable_file_fails_the_sample_that_reads_it(tmp_path):
    write_folder(tmp_path)
    broken = tmp_path / "train/depth/b/002.png"
    broken.write_bytes(b"")
    dataset = FolderDataset(tmp_path, "train", ("rgb", "depth"), EVAL_16)
    assert dataset[0]["depth"].shape == (1, 16, 16)
    with pytest.raises(ValueError, match=f"cannot read depth image {broken}"):
        dataset[5]


def test_synthetic_scenes_render_each_index_deterministically():
    dataset = SyntheticScenes(n=4, size=16, seed=3, modalities=("rgb", "depth", "semseg"), augment=EVAL_16)
    scene = render_scene(3, 2, 16)
    sample = dataset[2]
    np.testing.assert_allclose(denormalize(sample["rgb"]), scene.rgb, atol=1e-3)
    np.testing.assert_allclose(sample["depth"][0].numpy(), scene.depth, rtol=1e-6)
    np.testing.assert_array_equal(sample["semseg"].numpy(), scene.semseg)
    assert sample["label"].item() == scene.label
    sample = SyntheticScenes(4, 16, 3, ("semseg",), EVAL_16)[2]
    assert set(sample) == {"semseg", "label", "index", "view"} and sample["index"].item() == 2
    assert len(list(dataset)) == 4  # iteration stops at the end: indices past it raise IndexError
    with pytest.raises(IndexError, match="index -1 is out of range for a data set of 4 samples"):
        dataset[-1]


def test_synthetic_scenes_list_the_labels_of_their_samples():
    dataset = SyntheticScenes(n=6, size=24, seed=3, modalities=("depth",), augment=TRAIN_16)
    labels = dataset.labels()
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [dataset[index]["label"].item() for index in range(6)])
    assert dataset.class_names == SHAPES
    counted = SyntheticScenes(n=6, size=24, seed=3, modalities=("depth",), augment=TRAIN_16, label="count")
    np.testing.assert_array_equal(counted.labels(), [counted[index]["label"].item() for index in range(6)])
    assert counted.class_names == ("1", "2", "3", "4", "5") and not np.array_equal(counted.labels(), labels)


def test_folder_dataset_lists_the_labels_and_names_of_its_class_folders(tmp_path):
    write_folder(tmp_path)
    dataset = FolderDataset(tmp_path, "train", ("rgb",), EVAL_16)
    np.testing.assert_array_equal(dataset.labels(), [0, 0, 0, 1, 1, 1])
    assert dataset.labels().dtype == np.int64 and dataset.class_names == ("a", "b")


def test_augmentation_depends_on_seed_epoch_and_index_only():
    dataset = SyntheticScenes(n=4, size=24, seed=0, modalities=("rgb", "depth"), augment=TRAIN_16)
    first = dataset[1]
    torch.manual_seed(123)  # the global RNG plays no part
    torch.testing.assert_close(dataset[1]["rgb"], first["rgb"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1]["rgb"], first["rgb"])
    dataset.set_epoch(0)
    torch.testing.assert_close(dataset[1]["depth"], first["depth"])


def test_ade20k_dataset_returns_rgb_and_reduced_labels(tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        (ade / "images" / split).mkdir(parents=True)
        (ade / "annotations" / split).mkdir(parents=True)
        Image.fromarray(np.full((16, 20, 3), 200, np.uint8)).save(
            ade / "images" / split / f"{prefix}_00000001.jpg"
        )
        labels = np.tile(np.arange(20, dtype=np.uint8) % 3, (16, 1))  # columns 0, 1, 2, 0, 1, 2, ...
        Image.fromarray(labels).save(ade / "annotations" / split / f"{prefix}_00000001.png")
    config = AugmentConfig(size=16, semseg_stride=1, train=False)
    sample = ADE20KDataset(ade, "validation", config)[0]
    assert set(sample) == {"rgb", "semseg", "index", "view"}
    expected = np.array([255, 0, 1])[(np.arange(2, 18) % 3)]  # the centre 16 columns, 0 -> 255, k -> k - 1
    np.testing.assert_array_equal(sample["semseg"].numpy(), np.tile(expected, (16, 1)))
    raw = ADE20KDataset(ade, "train", config, reduce_zero_label=False)[0]
    np.testing.assert_array_equal(raw["semseg"][0].numpy(), np.arange(2, 18) % 3)
    with pytest.raises(ValueError, match="ADE20KDataset has no image labels"):
        ADE20KDataset(ade, "train", config).labels()


# ------------------------------------------------------------------------------------------
# Sampler and loader


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 50), world_size=st.integers(1, 4), seed=st.integers(0, 99), epoch=st.integers(0, 9)
)
def test_rank_shards_are_disjoint_and_cover_the_data_set(size, world_size, seed, epoch):
    data = range(size)
    shards = []
    for rank in range(world_size):
        sampler = ResumableDistributedSampler(data, num_replicas=world_size, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    padded = -(-size // world_size) * world_size
    assert all(len(shard) == padded // world_size for shard in shards)
    everything = sorted(i for shard in shards for i in shard)
    assert set(everything) == set(data)
    assert len(everything) - len(set(everything)) == padded - size  # only the padding repeats
    if size % world_size == 0:
        assert everything == list(data)


def test_drop_last_cuts_the_shards_to_an_even_split():
    shards = [
        list(ResumableDistributedSampler(range(10), num_replicas=3, rank=r, drop_last=True)) for r in range(3)
    ]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len(set(sum(shards, []))) == 9


def test_order_depends_on_seed_and_epoch_without_clashes():
    def order(seed, epoch):
        sampler = ResumableDistributedSampler(range(100), seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 0)  # unlike seed + epoch
    assert list(ResumableDistributedSampler(range(5), shuffle=False)) == [0, 1, 2, 3, 4]


def test_skip_leaves_out_the_start_of_this_ranks_shard():
    full = ResumableDistributedSampler(range(20), num_replicas=2, rank=1, seed=4)
    resumed = ResumableDistributedSampler(range(20), num_replicas=2, rank=1, seed=4, skip=6)
    assert list(resumed) == list(full)[6:] and len(resumed) == 4
    with pytest.raises(ValueError, match="cannot skip 11 of the 10"):
        ResumableDistributedSampler(range(20), num_replicas=2, rank=1, skip=11)


def test_derived_generators_differ_by_every_key():
    draws = {
        tuple(torch.rand(3, generator=derived_generator(*keys)).tolist())
        for keys in [(0, 1), (1, 0), (0, 1, 0)]
    }
    assert len(draws) == 3
    with pytest.raises(ValueError, match="non-negative"):
        derived_generator(-1)


def test_a_resumed_loader_yields_the_rest_of_the_epoch_with_any_worker_count():
    dataset = SyntheticScenes(n=13, size=20, seed=1, modalities=("rgb", "depth", "semseg"), augment=TRAIN_16)
    settings = dict(batch_size=3, shuffle=True, drop_last=False, seed=5, epoch=2)
    full = list(build_loader(dataset, num_workers=0, **settings))
    resumed = list(build_loader(dataset, num_workers=2, start_batch=2, **settings))
    assert len(full) == 5 and len(resumed) == 3
    for expected, batch in zip(full[2:], resumed):
        assert set(batch) == {"rgb", "depth", "semseg", "label", "index", "view"}
        for name in batch:
            torch.testing.assert_close(batch[name], expected[name], rtol=0, atol=0)
    assert full[0]["rgb"].shape == (3, 3, 16, 16) and full[0]["semseg"].shape == (3, 4, 4)
    assert full[-1]["label"].shape == (1,)


def test_ranks_together_see_every_sample_once():
    dataset = SyntheticScenes(n=8, size=16, seed=0, modalities=("rgb",), augment=EVAL_16)
    settings = dict(batch_size=2, num_workers=0, shuffle=True, drop_last=True, seed=0, epoch=1)
    single = {
        fingerprint({"rgb": rgb}) for batch in build_loader(dataset, **settings) for rgb in batch["rgb"]
    }
    per_rank = [
        [
            fingerprint({"rgb": rgb})
            for batch in build_loader(dataset, rank=r, world_size=2, **settings)
            for rgb in batch["rgb"]
        ]
        for r in range(2)
    ]
    assert len(single) == 8 and [len(p) for p in per_rank] == [4, 4]
    assert set(per_rank[0]).isdisjoint(per_rank[1]) and set(per_rank[0]) | set(per_rank[1]) == single


class PageFaultProbe(Dataset):
    """Item i: page faults per round of short-lived arrays shaped like one decoded, augmented sample,
    counted in the process that loads it (a worker)."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        import resource  # POSIX only, as the test

        def one_sample() -> None:
            jpeg, depth = np.ones((375, 500, 3), np.uint8), np.ones((375, 500), np.float32)
            resized, normalized = np.ones((224, 224, 3), np.float32), np.ones((3, 224, 224), np.float32)
            del jpeg, resized, depth, normalized

        for _ in range(3):
            one_sample()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            one_sample()
        return torch.tensor((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")
def test_loader_workers_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    settings = dict(batch_size=1, shuffle=False, drop_last=False, seed=0)
    assert build_loader(PageFaultProbe(), num_workers=1, **settings).worker_init_fn is reuse_freed_memory
    evaluation = shard_loader(PageFaultProbe(), batch_size=1, num_workers=1, context=DistributedContext())
    assert evaluation.worker_init_fn is reuse_freed_memory

    def faults_per_sample(worker_init_fn) -> float:
        # A spawned worker starts from glibc's defaults; a forked one inherits what this process's malloc
        # has adapted to so far.
        loader = DataLoader(
            PageFaultProbe(), num_workers=1, multiprocessing_context="spawn", worker_init_fn=worker_init_fn
        )
        return next(iter(loader)).item()

    plain = faults_per_sample(None)
    if plain < 50:
        pytest.skip(f"this malloc keeps freed blocks already ({plain:.0f} page faults per sample)")
    ours = faults_per_sample(reuse_freed_memory)
    assert ours < 5, f"{ours:.0f} page faults per sample in a loader worker (a plain one: {plain:.0f})"


def test_the_loader_hands_its_epoch_to_the_data_set():
    dataset = SyntheticScenes(n=4, size=20, seed=0, modalities=("depth",), augment=TRAIN_16)
    settings = dict(batch_size=4, num_workers=0, shuffle=False, drop_last=False, seed=0)
    epoch_0 = next(iter(build_loader(dataset, epoch=0, **settings)))["depth"]
    epoch_1 = next(iter(build_loader(dataset, epoch=1, **settings)))["depth"]
    assert dataset.epoch == 1 and not torch.equal(epoch_0, epoch_1)
    torch.testing.assert_close(next(iter(build_loader(dataset, epoch=0, **settings)))["depth"], epoch_0)
