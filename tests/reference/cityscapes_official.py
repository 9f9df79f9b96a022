"""Run cityscapesScripts' official evaluation on explicit files and print its results as JSON.

Run with the Python of the pinned reference environment (cityscapesscripts 2.3.0 on numpy 2.2; see
tests/conftest.py), from a scratch working folder: the instance script writes ``matches.json`` there.

    python cityscapes_official.py pixel|instance SCRATCH GT1 PRED1 [GT2 PRED2 ...] [--min-region-size N]
"""

import json
import os
import sys

import numpy as np


def main() -> None:
    argv = sys.argv[1:]
    min_size = None
    if "--min-region-size" in argv:
        i = argv.index("--min-region-size")
        min_size = int(argv[i + 1])
        del argv[i:i + 2]
    kind, scratch, files = argv[0], argv[1], argv[2:]
    gts, preds = files[0::2], files[1::2]
    os.chdir(scratch)
    if kind == "pixel":
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

        ev.args.quiet = True
        ev.args.JSONOutput = False
        res = ev.evaluateImgLists(preds, gts, ev.args)
        out = {"classScores": res["classScores"], "classInstScores": res["classInstScores"],
               "categoryScores": res["categoryScores"], "categoryInstScores": res["categoryInstScores"],
               "averageScoreClasses": res["averageScoreClasses"],
               "averageScoreInstClasses": res["averageScoreInstClasses"],
               "averageScoreCategories": res["averageScoreCategories"],
               "averageScoreInstCategories": res["averageScoreInstCategories"]}
    else:
        from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev

        ev.args.quiet = True
        ev.args.JSONOutput = False
        ev.args.gtInstancesFile = os.path.join(scratch, "gtInstances.json")  # not inside the installed package
        ev.args.predictionPath = os.path.abspath(os.path.dirname(preds[0]))
        if min_size is not None:
            ev.args.minRegionSizes = np.array([min_size, 1000, 1000])
        res = ev.evaluateImgLists(preds, gts, ev.args)
        avg = res["averages"]
        out = {"AP": avg["allAp"], "AP50": avg["allAp50%"],
               "classes": {k: {"AP": v["ap"], "AP50": v["ap50%"]} for k, v in avg["classes"].items()}}
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
