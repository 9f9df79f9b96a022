"""``python -m geoseg.training.precision_check BUNDLE CONFIG.json``: the bf16 check of a trained bundle, in its own
process (see ``geoseg.training.loop._record_precision_check``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from geoseg.training.config import parse_config
    from geoseg.training.loop import precision_check

    bundle, cfg_file = Path(argv[0]), Path(argv[1])
    data = json.loads(cfg_file.read_text())
    cfg = parse_config(data["raw"], Path(data["source"]))
    print(precision_check(bundle, cfg), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
