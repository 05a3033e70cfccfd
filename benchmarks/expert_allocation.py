r"""Expert allocation of Moirai-MoE checkpoints on M1 and M3, by frequency.

The paper's analysis (arXiv 2410.10469): for the series of each subset, how
often each layer routes a token to each expert. For every ``--checkpoint`` this
prints, per layer, the normalised entropy of the expert usage over all subsets
(1: every expert equally used), the largest expert's share and the number of
experts receiving under 0.5% of the tokens; ``--plot`` saves the heatmaps of the
first checkpoint, one panel per subset of ``--plot-subsets``.

Run from the repository root (needs the ``bench`` and ``plot`` extras)::

    python benchmarks/expert_allocation.py --checkpoint moirai-moe-sk-tiny \\
        --checkpoint runs/tiny/linear/model --plot allocation.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evaluate as harness  # benchmarks/ is not a package

from moirai_moe_sk.analysis import expert_allocation, plot_expert_allocation


def usage_summary(allocation: pd.DataFrame) -> pd.DataFrame:
    """Per layer: normalised entropy, largest share and idle experts (< 0.5%)."""
    rows = []
    for layer, group in allocation.groupby("layer"):
        counts = group.groupby("expert")["count"].sum().to_numpy(dtype=float)
        share = counts / counts.sum()
        used = share[share > 0]
        entropy = float(-(used * np.log(used)).sum() / np.log(len(share)))
        rows.append(
            {
                "layer": int(layer) + 1,
                "entropy": entropy,
                "largest share": float(share.max()),
                "idle experts": int((share < 0.005).sum()),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--subsets", nargs="+", default=list(harness.SUBSETS))
    parser.add_argument(
        "--plot", type=Path, help="save the first checkpoint's heatmaps"
    )
    parser.add_argument(
        "--plot-subsets",
        nargs="+",
        default=["M3 yearly", "M3 quarterly", "M3 monthly", "M3 other"],
        help="subset names shown in the plot",
    )
    args = parser.parse_args(argv)
    data = {
        s.name: [x.train for x in s.series] for s in harness.load_subsets(args.subsets)
    }
    for index, checkpoint in enumerate(args.checkpoint):
        allocation = expert_allocation(checkpoint, data)
        print(f"## {checkpoint}\n")
        print(usage_summary(allocation).to_string(index=False, float_format="%.2f"))
        print()
        if index == 0 and args.plot is not None:
            import matplotlib as mpl

            mpl.use("Agg")
            shown = allocation[allocation["group"].isin(args.plot_subsets)]
            plot_expert_allocation(shown).savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
