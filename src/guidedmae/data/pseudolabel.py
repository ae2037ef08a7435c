"""`guidedmae pseudolabel`: depth and semantic-segmentation labels for a folder of rgb images, with Hugging
Face transformers models, written beside them in the MultiMAE folder layout.

    hf download Intel/dpt-hybrid-midas --local-dir models/dpt-hybrid-midas      # once: models are folders
    guidedmae pseudolabel data/mine --split train --depth models/dpt-hybrid-midas --semseg models/mask2former
    guidedmae pseudolabel data/mine --split train --depth ... --shard 2/4          # or under torchrun

Models are local folders (save_pretrained's, or a hub model downloaded as above): the command never goes
to the network, so a name that is not a folder is refused at once instead of being looked up on the hub.

Reads root/<split>/rgb/<class>/<name>.<ext>; writes root/<split>/depth/<class>/<name>.png (16-bit: the
model's prediction x depth_scale, clipped to the 16-bit range, as predicted: MiDaS and Depth Anything
predict relative inverse depth, a different target from Omnidata's depth; see the README)
and root/<split>/semseg/<class>/<name>.png (class ids: 8-bit for up to 256 classes, else 16-bit).
Segmentation models: Mask2Former / MaskFormer / OneFormer (semantic maps from their panoptic or
semantic heads: a COCO-panoptic Mask2Former gives MultiMAE's 133 classes) or SegFormer-like models.
Images go through the model in batches (on the GPU when there is one); outputs already written are
skipped, so a stopped run is finished by running it again; every file is written atomically. Processes
share the images: --shard i/n, or one share per process under torchrun.
"""

import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from guidedmae.data.folder import DEPTH_SCALE
from guidedmae.data.modalities import BUILTIN
from guidedmae.data.writers import save_image_atomic
from guidedmae.infra.checkpoints import refused_pickle
from guidedmae.infra.distributed import resolve_device

__all__ = ["Labeller", "model_folder", "pseudolabel"]

UNIVERSAL = ("mask2former", "maskformer", "oneformer")  # segmentation models with a universal head


def _transformers() -> ModuleType:
    try:
        import transformers
    except ImportError as error:
        raise ValueError(
            "guidedmae pseudolabel needs transformers: pip install 'guidedmae[pseudolabel]'"
        ) from error
    return transformers


def _rgb_files(root: Path, split: str) -> list[Path]:
    folder = root / split / "rgb"
    if not folder.is_dir():
        raise FileNotFoundError(f"no rgb folder {folder} (expected root/<split>/rgb/<class>/<name>.<ext>)")
    extensions = BUILTIN["rgb"].extensions
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in extensions and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"no rgb images in {folder}")
    return files


def _output(rgb: Path, root: Path, split: str, modality: str) -> Path:
    relative = rgb.relative_to(root / split / "rgb").with_suffix(".png")
    return root / split / modality / relative


def _shard(spec: str) -> tuple[int, int]:
    """'i/n' (or torchrun's RANK / WORLD_SIZE when empty) -> (i, n)."""
    if not spec:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}; expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {spec}; expected 0 <= i < n")
    return index, count


def model_folder(name: str, option: str) -> Path:
    """The folder a model option names, which must hold a transformers model (its config.json)."""
    folder = Path(name)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{option} {name}: no such folder; models are local folders (download a hub model first: "
            "hf download NAME --local-dir DIR)"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{option} {name}: no config.json in it; expected a transformers model folder (save_pretrained)"
        )
    return folder


class Labeller:
    """One transformers model and its processor, for depth or segmentation, from a local folder."""

    def __init__(self, folder: Path, task: str, device: torch.device) -> None:
        transformers = _transformers()
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        if task == "depth":
            model_class = transformers.AutoModelForDepthEstimation
        elif config.model_type in UNIVERSAL:
            model_class = transformers.AutoModelForUniversalSegmentation
        else:
            model_class = transformers.AutoModelForSemanticSegmentation
        self.task, self.device = task, device
        self.processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        try:  # pickled weights (pytorch_model.bin) go through torch's safe loader, which may refuse them
            model = model_class.from_pretrained(folder, local_files_only=True)
        except Exception as error:
            refused = refused_pickle(error)
            if refused is None:
                raise
            raise ValueError(
                f"--{task} {folder}: its pickled weights (pytorch_model.bin) are refused by the safe loader "
                f"({refused}); loading never executes pickled code: give the weights as model.safetensors"
            ) from error
        self.model = model.to(device).eval()
        self.num_classes = getattr(config, "num_labels", 0)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Per image: depth float32 [H, W] or class ids int64 [H, W], at the image's size."""
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        sizes = [(image.height, image.width) for image in images]
        if self.task == "semseg":
            maps = self.processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            return [labels.cpu().numpy().astype(np.int64) for labels in maps]
        depths = outputs.predicted_depth  # [B, h, w]
        return [
            F.interpolate(depth[None, None].float(), size=size, mode="bicubic", align_corners=False)[0, 0]
            .clamp_min(0)
            .cpu()
            .numpy()
            for depth, size in zip(depths, sizes)
        ]


def _write(modality: str, array: np.ndarray, path: Path, depth_scale: float) -> None:
    if modality == "depth":
        encoded = np.clip(np.rint(array * depth_scale), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    else:
        encoded = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
    save_image_atomic(encoded, path)


def pseudolabel(
    root: str | Path,
    split: str,
    models: dict[str, str],
    batch_size: int = 8,
    shard: str = "",
    device: str = "auto",
    depth_scale: float = DEPTH_SCALE,
    progress: bool = True,
) -> dict[str, int]:
    """Write the labels `models` ({"depth": folder, "semseg": folder}) give to root/<split>'s rgb images;
    returns how many files of each modality this process wrote (existing ones are skipped)."""
    if not models:
        raise ValueError("give --depth and/or --semseg: the models to label with")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}; expected at least 1")
    folders = {modality: model_folder(name, f"--{modality}") for modality, name in models.items()}
    resolved = resolve_device(device, key="--device")
    root = Path(root)
    index, count = _shard(shard)
    files = _rgb_files(root, split)[index::count]
    written = dict.fromkeys(models, 0)
    for modality, folder in folders.items():
        todo = [rgb for rgb in files if not _output(rgb, root, split, modality).is_file()]
        if not todo:
            continue
        labeller = Labeller(folder, modality, resolved)
        bar = tqdm(total=len(todo), desc=f"{modality} ({folder})", unit="image", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images = []
            for path in batch:
                try:
                    with Image.open(path) as image:
                        images.append(image.convert("RGB"))
                except (OSError, ValueError) as error:
                    raise ValueError(f"cannot read rgb image {path}: {error}") from error
            for path, array in zip(batch, labeller(images)):
                _write(modality, array, _output(path, root, split, modality), depth_scale)
                written[modality] += 1
            bar.update(len(batch))
        bar.close()
    return written
