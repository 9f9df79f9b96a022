#!/usr/bin/env bash
# geoseg's main job on its embedded default: the SpaceNet Atlanta chip and the default
# building model, through predict (with vectorize) and evaluate on the held-out block.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
PYTHON=${PYTHON:-python3}
read -r SCENE LABELS MODEL < <($PYTHON -c "import geoseg.data as d; print(d.ATLANTA_IMAGE, d.ATLANTA_LABELS, d.DEFAULT_MODEL)")

echo "== predict + vectorize: $SCENE"
geoseg predict "$MODEL" "$SCENE" -o "$OUT" --overwrite --vectorize --connectivity 8 --min-area 4 --no-progress

echo "== evaluate on the held-out block (never trained on)"
geoseg evaluate "$OUT/sample_geotiff.classes.tif" "$LABELS" -o "$OUT/audit" --reference-class building \
  --aoi configs/train/atlanta_holdout.geojson --overwrite --no-progress

$PYTHON - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
r = json.load(open(f"{out}/audit/report.json"))
b = next(c for c in r["classes"] if c["name"] == "building")
o = r.get("objects", {}).get("building", {})
print(f"\nheld-out building IoU: {b['iou']:.3f} (area-weighted {b['iou_area']:.3f}); "
      f"objects at IoU>=0.5: F1 {o.get('f1', float('nan')):.3f} (TP {o.get('tp')}, FP {o.get('fp')}, FN {o.get('fn')})")
print(f"outputs: {out}/sample_geotiff.classes.tif (COG), {out}/sample_geotiff.gpkg (open in QGIS),")
print(f"         {out}/audit/report.html, report.md, report.json, audit.gpkg")
PY
