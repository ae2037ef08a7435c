"""The cost of each masking strategy as full training steps, side by side (same as `guidedmae bench`).

    python benchmarks/masking_step.py --preset base --batch-size 8 --precision fp32 --rounds 3
    python benchmarks/masking_step.py --config configs/pretrain/demo.yaml --batch-size 32
    python benchmarks/masking_step.py --device cuda --batch-size 64 --precision bf16

Target: an attention-guided step costs at most 2.6x a random-masking step for MultiMAE-B (a random step
is ~65 GFLOP per image; the no-grad attention pass over all 589 tokens adds ~93 GFLOP with the lean last
block, so ~2.4x is the floor when every FLOP costs the same). Prints the setting and a markdown table:
median step time per strategy, its ratio to random masking, and the peak memory of a step.
"""

import argparse
import sys

from guidedmae.bench import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
