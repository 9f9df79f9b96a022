#!/usr/bin/env bash
# geoseg's main job on its embedded default: the packaged RGB building model on a held-out crop of
# SpaceNet Rio (never trained on), through predict, vectorize and evaluate. The model has object channels,
# so predict also writes one polygon per building (NAME.instances.gpkg), which evaluate scores as objects.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
PYTHON=${PYTHON:-python3}
read -r SCENE LABELS < <($PYTHON -c "import geoseg.data as d; print(d.RIO_IMAGE, d.RIO_LABELS)")
NAME=$(basename "$SCENE" .tif)
MODEL=buildings-rgb
rm -rf "$OUT/timings"; mkdir -p "$OUT"
step() {  # step LABEL COMMAND...: run it, note its wall time
  local label=$1; shift
  local t0=$EPOCHREALTIME
  "$@"
  echo "$label $t0 $EPOCHREALTIME" >> "$OUT/timings"
}

echo "== predict: $MODEL on $SCENE"
step predict geoseg predict "$MODEL" "$SCENE" -o "$OUT" --overwrite --no-progress
echo "== vectorize: one polygon layer per class, styled for QGIS"
step vectorize geoseg vectorize "$OUT/$NAME.classes.tif" -o "$OUT/$NAME.gpkg" --overwrite --min-area 4 \
  --connectivity 8 --no-progress
echo "== evaluate against the 384 SpaceNet footprints of the crop"
step evaluate geoseg evaluate "$OUT/$NAME.classes.tif" "$LABELS" -o "$OUT/audit" --reference-class building \
  --overwrite --no-progress

$PYTHON - "$OUT" "$NAME" "$MODEL" <<'PY'
import json, sys
from geoseg.models.bundle import read_meta
out, name, model = sys.argv[1:4]
meta = read_meta(model)
r = json.load(open(f"{out}/audit/report.json"))
b = next(c for c in r["classes"] if c["name"] == "building")
o = r.get("objects", {}).get("building", {})
times = {k: float(b) - float(a) for k, a, b in (line.split() for line in open(f"{out}/timings"))}
w = meta.extra.get("encoder_weights", {})
print(f"""
model      {model}: U-Net, {meta.encoder} encoder (ImageNet weights from {w.get('source', '?')}), RGB, {meta.gsd:.2f} m
trained on SpaceNet 1 Rio de Janeiro (WorldView-2, CC BY-SA 4.0): 2,335 footprints and 3 chips (229), test blocks and chips held out
tested on  {name}: {sum(map(sum, r['confusion_m2'])) / 1e6:.2f} km² of the test blocks: never trained on, never used to pick the epoch
result     building IoU {b['iou']:.3f} (by ground area {b['iou_area']:.3f}; precision {b['precision']:.3f}, recall {b['recall']:.3f})
           buildings matched at IoU >= 0.5: F1 {o.get('f1', float('nan')):.3f} (TP {o.get('tp')}, FP {o.get('fp')}, FN {o.get('fn')}; objects from {r['scenes'][0]['objects']['building']['from']})
time       predict {times['predict']:.1f} s, vectorize {times['vectorize']:.1f} s, evaluate {times['evaluate']:.1f} s
outputs    {out}/{name}.classes.tif (COG; {name}.classes.qml styles it in QGIS)
           {out}/{name}.instances.gpkg (one polygon per building, styled) and {name}.instances.tif (ids)
           {out}/{name}.gpkg (the class raster's polygons, styled)
           {out}/audit/report.html, report.md, report.json, audit.gpkg (TP/FP/FN layers, IoU grid)""")
PY
