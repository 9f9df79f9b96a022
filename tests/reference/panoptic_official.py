"""Run the official panoptic scorers on explicit files and print their results as JSON (the last line).

Run with the Python of the pinned reference environment (``build/cityscapes-ref``: panopticapi-lite, the
COCO panoptic scorer as published on PyPI, and cityscapesscripts 2.3.0, on numpy 2.2):

    python panoptic_official.py coco GT_JSON GT_FOLDER PRED_JSON PRED_FOLDER
    python panoptic_official.py cityscapes-convert CITYSCAPES_ROOT OUTPUT_FOLDER SPLIT
    python panoptic_official.py cityscapes GT_JSON GT_FOLDER PRED_JSON PRED_FOLDER RESULTS_FILE
"""

import contextlib
import io
import json
import sys


def main() -> None:
    kind, args = sys.argv[1], sys.argv[2:]
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        if kind == "coco":
            from panopticapi.evaluation import pq_compute

            res = pq_compute(args[0], args[2], args[1], args[3])
        elif kind == "cityscapes-convert":
            from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

            convert2panoptic(args[0] + "/gtFine", args[1], setNames=[args[2]])
            res = {}
        else:
            from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

            res = evaluatePanoptic(args[0], args[1], args[2], args[3], args[4])
    res = {k: ({str(c): v for c, v in r.items()} if k == "per_class" else r) for k, r in res.items()}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
