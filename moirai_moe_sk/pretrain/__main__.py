"""``python -m moirai_moe_sk.pretrain``: see :func:`moirai_moe_sk.pretrain.run.main`."""

from .run import main

raise SystemExit(main())
