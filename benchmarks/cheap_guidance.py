"""Cheap attention guidance: what each cheaper way of finding the most attended patches costs per step and
how well its masks agree with exact guidance (the attention pass over every token), as one table.

    python benchmarks/cheap_guidance.py --checkpoint runs/demo/checkpoint-last.pt --batch-size 32 \
        --grids 6 4 2 --refresh 10 40 --earlier runs/demo/checkpoint-00000064.pt
    python benchmarks/cheap_guidance.py --preset base --batch-size 8 --grids 7 5 4 --rounds 2

Rows: random masking (the floor, and chance agreement), exact attention guidance, the attention pass over a
coarser grid of averaged tokens (`masking.attention.grid`), attention maps cached per sample
(`masking.strategy=cached_attention`) and a scout encoder (`masking.strategy=scout_attention`). The cache's
step between refreshes is timed, and a refresh every k visits costs ((k - 1) x that step + one exact step) / k
on average, one row per k. The cache's agreement is measured on the next epoch's crops of the same samples
(the warp from one view to the next); with --earlier, the cache is filled by that earlier checkpoint of the
run, so its staleness counts too. The scout is first taught by the exact pass on every sample of
--scout-steps batches of random crops of the training scenes (the model frozen: a run's model moves, the
scout follows), or, with --scout-steps 0, is the scout a scout_attention run trained (its --checkpoint's), then
masks as in a run: the first --scout-shares of the batch exactly, the rest by its predictions (share 0: the
scout alone); its agreement is also given on scenes it was never taught.
Target: a step at most 1.25x random with agreement >= 0.8 in every modality. Agreement on an
untrained model means little: give a trained --checkpoint.
"""

import argparse
import sys
from dataclasses import replace

import torch
from torch.utils.data import default_collate

from guidedmae.data.datasets import SyntheticScenes
from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.bench import mask_agreement, time_strategies
from guidedmae.engine.bench_setup import MODALITIES, BenchSettings, bench_model, synthetic_batch
from guidedmae.engine.from_checkpoint import load_model, load_step
from guidedmae.infra.machine import cpu_name
from guidedmae.infra.options import add_options, settings_from
from guidedmae.masking import MaskingConfig, build_strategy
from guidedmae.masking.strategies import AttentionOptions, CachedAttentionOptions
from guidedmae.models import MultiMAE

FIRST_TEACHING_EPOCH = 2  # the table's batches are the crops of epochs 0 and 1


def guidance_variants(base: MaskingConfig, grids: list[int]) -> dict[str, MaskingConfig]:
    """random, exact attention, one coarse pass per grid, the cache (its refresh does not change a step
    between refreshes), all with the budget of `base`."""
    variants = {
        "random": replace(base, strategy="random"),
        "exact": replace(base, strategy="attention", attention=AttentionOptions()),
    }
    for grid in grids:
        variants[f"grid {grid}"] = replace(base, strategy="attention", attention=AttentionOptions(grid=grid))
    variants["cached"] = replace(base, strategy="cached_attention", cached_attention=CachedAttentionOptions())
    return variants


def scout_row(share: float) -> str:
    return "scout alone" if share == 0 else f"scout, exact share {share:g}"


def scout_variants(base: MaskingConfig, shares: list[float]) -> dict[str, MaskingConfig]:
    """The scout of `base` (a scout run's own shape and selection) at each exact share."""
    return {
        scout_row(share): replace(
            base, strategy="scout_attention", scout_attention=replace(base.scout_attention, exact_share=share)
        )
        for share in shares
    }


def teach_scout(
    model: MultiMAE, base: MaskingConfig, steps: int, batch_size: int, scenes: int, seed: int
) -> dict[str, torch.Tensor]:
    """The weights of a scout taught by the exact pass on every sample of `steps` batches of random crops
    of `scenes` training scenes (AdamW at lr 1e-3; the model is not trained)."""
    (config,) = scout_variants(base, [1.0]).values()
    strategy = build_strategy(config, model.config)
    optimizer = torch.optim.AdamW(strategy.parameters(), lr=1e-3)
    size = model.config.image_size
    data = SyntheticScenes(scenes, size, seed, MODALITIES, AugmentConfig(size))
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        data.set_epoch(FIRST_TEACHING_EPOCH + step)
        indices = torch.randint(len(data), (batch_size,), generator=generator).tolist()
        batch = default_collate([data[index] for index in indices])
        with torch.no_grad():
            tokens = model.tokenize({name: batch[name] for name in model.config.inputs})
        loss = strategy.learn(strategy(model, tokens, generator), {})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(
                f"  scout step {step + 1}/{steps}: imitation loss {loss.item():.4f}",
                file=sys.stderr,
                flush=True,
            )
    return strategy.state_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser, BenchSettings)
    parser.add_argument(
        "--grids", type=int, nargs="+", default=[4], help="coarse grids to try (cells per side)"
    )
    parser.add_argument("--refresh", type=int, nargs="+", default=[10, 40], help="cache refresh intervals")
    parser.add_argument("--earlier", help="an earlier checkpoint of the same run: it fills the cache")
    parser.add_argument(
        "--scout-shares",
        type=float,
        nargs="*",
        default=[0.0, 0.125],
        help="shares of each batch the exact pass scores for the scout (0: the scout alone; none: no scout)",
    )
    parser.add_argument(
        "--scout-steps",
        type=int,
        default=1000,
        help="batches the scout is taught on; 0: take the scout the --checkpoint's run trained (scout_attention)",
    )
    parser.add_argument(
        "--scout-scenes", type=int, default=2048, help="training scenes it is taught on (the demo's 2048)"
    )
    args = parser.parse_args()

    model, masking, name = bench_model(settings_from(args, BenchSettings))
    model = model.train()
    variants = guidance_variants(masking, args.grids)
    image_size = model.config.image_size
    batch, earlier = (synthetic_batch(args.batch_size, image_size, args.seed, epoch) for epoch in (0, 1))
    earlier_model = load_model(args.earlier)[0].train() if args.earlier else None
    print(
        f"{name}: batch {args.batch_size}, {args.precision}, {torch.get_num_threads()} threads, {cpu_name()}; "
        f"cache filled by {args.earlier or 'the same model'} on other crops\n",
        flush=True,
    )
    states = {}
    if args.scout_shares:
        variants |= scout_variants(masking, args.scout_shares)
        if args.scout_steps:
            taught = teach_scout(
                model, masking, args.scout_steps, args.batch_size, args.scout_scenes, args.seed
            )
            source = f"taught on {args.scout_steps} x {args.batch_size} crops of {args.scout_scenes} scenes"
        elif args.checkpoint and masking.strategy == "scout_attention":
            taught = load_step(args.checkpoint)[0].strategy.state_dict()
            source = f"the one its run trained, from {args.checkpoint}"
        else:
            ran = (
                f"{args.checkpoint} masked with {masking.strategy}" if args.checkpoint else "no --checkpoint"
            )
            parser.error(f"--scout-steps 0 takes the scout a scout_attention run trained; {ran}")
        states = {scout_row(share): taught for share in args.scout_shares}
        print(f"scout: {source}\n", flush=True)
    agreement = mask_agreement(model, variants, batch, earlier, args.seed, earlier_model, states)
    times = time_strategies(
        model, batch, variants, args.rounds, args.warmup, args.precision, args.seed, sys.stderr
    )
    random, exact = times["random"].median, times["exact"].median
    rows = []
    for row, measurement in times.items():
        if row == "cached":
            for refresh in args.refresh:
                cost = ((refresh - 1) * measurement.median + exact) / refresh
                rows.append((f"cached, refresh every {refresh}", cost, agreement[row]))
        else:
            rows.append((row, measurement.median, agreement[row]))
    modalities = "/".join(next(iter(agreement.values())))
    print(f"| guidance | step (s) | × random | agreement, min | agreement {modalities} |")
    print("|---|---|---|---|---|")
    for row, seconds, values in rows:
        per_modality = " / ".join(f"{value:.2f}" for value in values.values())
        print(
            f"| {row} | {seconds:.3f} | {seconds / random:.2f} | {min(values.values()):.2f} | {per_modality} |"
        )
    print(f"\n(exact / random = {exact / random:.2f}; medians of {args.rounds} rounds)")
    if states:
        # Scenes the scout was never taught on (another seed's), as a run's unseen validation images.
        unseen, unseen_earlier = (
            synthetic_batch(args.batch_size, image_size, args.seed + 1, e) for e in (0, 1)
        )
        scouts = {row: variants[row] for row in states}
        unseen_agreement = mask_agreement(model, scouts, unseen, unseen_earlier, args.seed, None, states)
        print(f"\n| scout, on scenes it was never taught | agreement, min | agreement {modalities} |")
        print("|---|---|---|")
        for row, values in unseen_agreement.items():
            per_modality = " / ".join(f"{value:.2f}" for value in values.values())
            print(f"| {row} | {min(values.values()):.2f} | {per_modality} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
