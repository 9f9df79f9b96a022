"""Build the QGIS plugin zip (``make qgis-plugin``): ``geoseg_qgis/`` as QGIS's plugin manager installs it
("Install from ZIP"): one top-level folder with metadata.txt and the Python files, no caches.

    python qgis_plugin/build.py build/geoseg_qgis.zip
"""

import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "geoseg_qgis"


def build(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(PLUGIN.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".txt", ".md", ".png", ".svg"):
                z.write(f, f"{PLUGIN.name}/{f.relative_to(PLUGIN).as_posix()}")
    tmp.replace(target)
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "build/geoseg_qgis.zip")))
