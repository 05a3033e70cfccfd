r"""Write a trained checkpoint as the bundled model: float16 weights, stated context.

The bundled ``moirai-moe-sk-tiny`` ships inside the wheel, so its weights are
stored in float16 (read back as float32; the gate centroids stay float64) and
its ``config.json`` states the context it was trained for (``context_length``),
which :class:`moirai_moe_sk.MoiraiMoEForecaster` then uses as its default
context cap::

    python scripts/bundle_model.py runs/tiny-v2/continued/model \
        moirai_moe_sk/weights/moirai-moe-sk-tiny --context-length 512
"""

from __future__ import annotations

import argparse
import sys

import torch

from moirai_moe_sk.model import MoiraiMoEModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="checkpoint folder (official layout)")
    parser.add_argument("dest", help="folder to write (replaced atomically)")
    parser.add_argument(
        "--context-length",
        type=int,
        required=True,
        help="the context the model was trained for, stated in config.json",
    )
    args = parser.parse_args(argv)
    model = MoiraiMoEModel.from_pretrained(args.source)
    state = model.state_dict()
    stated = MoiraiMoEModel(model.config.replace(context_length=args.context_length))
    stated.load_state_dict(state, strict=True)
    stated.save_pretrained(args.dest, dtype=torch.float16)
    sys.stdout.write(f"wrote {args.dest} (context_length {args.context_length})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
