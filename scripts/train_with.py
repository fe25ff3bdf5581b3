"""The train command with some of Config.small's defaults changed: how the full-schedule
ablations in docs/time-to-accuracy were run.

    python scripts/train_with.py FIELD=VALUE ... -- TRAIN ARGUMENTS
    python scripts/train_with.py roi_batch_size=64 -- --out runs/roi64 --eval-every 250

Everything after `--` goes to `python -m minifrcnn train` unchanged; every FIELD=VALUE (a
Python literal) replaces that field of Config.small() before the command builds its config,
so the run is the default training but for those fields (the command's own sizing to the data,
--iters and --seed still apply on top).
"""
import ast
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minifrcnn.config as config  # noqa: E402
from minifrcnn.__main__ import main  # noqa: E402

if __name__ == "__main__":      # data-parallel training starts processes that import this file
    if "--" not in sys.argv:
        sys.exit("usage: python scripts/train_with.py FIELD=VALUE ... -- TRAIN ARGUMENTS")
    split = sys.argv.index("--")
    changes = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in sys.argv[1:split])}
    try:
        config.Config().replace(**changes)                    # an unknown field: one line, now
    except ValueError as e:
        sys.exit(f"error: {e}")
    small = config.Config.small.__func__                      # the preset, before the change
    config.Config.small = classmethod(lambda cls, **overrides: small(cls, **{**changes, **overrides}))
    print("Config.small changed:", changes, flush=True)
    sys.exit(main(["train"] + sys.argv[split + 1:]))
