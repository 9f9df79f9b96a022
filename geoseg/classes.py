"""Class lists: ids, names, colours and which classes are vectorized.

A class list is YAML of this form (see ``configs/classes/``)::

    classes:
      - {id: 0, name: background, color: "#000000", vectorize: false}
      - {id: 1, name: building, color: "#e31a1c", isthing: true}
    ignore: 255

``isthing: true`` marks a class of countable objects ("things": each building, each car) for panoptic
output and panoptic quality; the other classes are "stuff" (road, vegetation, water).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from geoseg.errors import GeosegError

#: Output nodata value of class rasters; also the default ignore index.
NODATA = 255

_KNOWN_COLORS = {
    "background": "#000000",
    "building": "#e31a1c",
    "road": "#7f7f7f",
    "water": "#1f78b4",
    "vegetation": "#33a02c",
    "tree": "#33a02c",
    "cropland": "#ffff99",
    "bare": "#b15928",
}
# ColorBrewer Paired, for names without a conventional colour.
_PALETTE = [
    "#a6cee3", "#1f78b4", "#b2df8a", "#33a02c", "#fb9a99", "#e31a1c",
    "#fdbf6f", "#ff7f00", "#cab2d6", "#6a3d9a", "#ffff99", "#b15928",
]
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def slugify(name: str) -> str:
    """Layer-safe lowercase name: ``"Potted Plant"`` -> ``"potted_plant"``."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    return slug or "class"


@dataclass(frozen=True)
class SegClass:
    """One class of a segmentation model."""

    id: int
    name: str
    color: str
    vectorize: bool = True
    isthing: bool = False  # a countable-object class (panoptic "thing"); else "stuff"

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@dataclass(frozen=True)
class ClassList:
    """An ordered list of classes with an ignore (nodata) index."""

    classes: tuple[SegClass, ...]
    ignore: int = NODATA

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if not ids:
            raise GeosegError("a class list needs at least one class")
        if len(set(ids)) != len(ids):
            raise GeosegError(f"class ids are not unique: {ids}")
        if any(not 0 <= i < 255 for i in ids):
            raise GeosegError(f"class ids must be in 0..254 (255 is nodata): {ids}")
        if self.ignore in ids:
            raise GeosegError(f"the ignore index {self.ignore} is also a class id")
        for c in self.classes:
            if not _HEX.match(c.color):
                raise GeosegError(f"class {c.name!r}: color {c.color!r} is not of the form #rrggbb")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def by_id(self, class_id: int) -> SegClass | None:
        for c in self.classes:
            if c.id == class_id:
                return c
        return None

    def is_contiguous(self) -> bool:
        """True when ids are exactly 0..K-1 in order, as model outputs need."""
        return [c.id for c in self.classes] == list(range(len(self.classes)))

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table: every class colour, and transparent nodata."""
        cmap = {i: (0, 0, 0, 0) for i in range(256)}
        for c in self.classes:
            cmap[c.id] = (*c.rgb, 255)
        return cmap

    def to_dict(self) -> dict:
        """The class list as a mapping; ``isthing`` appears only on thing classes."""
        return {"classes": [class_dict(c) for c in self.classes], "ignore": self.ignore}

    @property
    def things(self) -> list[SegClass]:
        return [c for c in self.classes if c.isthing]

    @classmethod
    def from_dict(cls, data: dict | list, source: str | None = None) -> ClassList:
        """A class list from its mapping; a plain list (of names or class mappings) is its ``classes``."""
        if isinstance(data, list):
            data = {"classes": data}
        if not isinstance(data, dict):
            raise GeosegError("a class list must be a mapping with a 'classes' list", source)
        unknown = set(data) - {"classes", "ignore"}
        if unknown:
            raise GeosegError(
                f"unknown key {sorted(unknown)[0]!r} in class list (allowed: classes, ignore)", source
            )
        items = data.get("classes")
        if not isinstance(items, list) or not items:
            raise GeosegError("'classes' must be a non-empty list", source)
        out = []
        allowed = {"id", "name", "color", "vectorize", "isthing"}
        if all(isinstance(item, str) for item in items):  # plain names: ids in order, default colours
            try:
                return cls.from_names(items, background=False)
            except GeosegError as exc:
                raise GeosegError(str(exc), source) from None
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise GeosegError(f"classes[{n}] must be a mapping (id, name, color) or every item a plain name",
                                  source)
            bad = set(item) - allowed
            if bad:
                raise GeosegError(
                    f"unknown key {sorted(bad)[0]!r} in classes[{n}] (allowed: {', '.join(sorted(allowed))})",
                    source,
                )
            if "id" not in item or "name" not in item:
                raise GeosegError(f"classes[{n}] needs 'id' and 'name'", source)
            name = str(item["name"])
            if isinstance(item["id"], bool) or not isinstance(item["id"], int):
                raise GeosegError(f"classes[{n}] ({name}): id must be an integer, got {item['id']!r}", source)
            color = str(item.get("color") or default_color(name, item["id"]))
            isthing = item.get("isthing", False)
            if not isinstance(isthing, (bool, int)) or isinstance(isthing, int) and isthing not in (0, 1):
                raise GeosegError(f"classes[{n}] ({name}): isthing must be true or false, got {isthing!r}", source)
            out.append(SegClass(item["id"], name, color, bool(item.get("vectorize", True)), bool(isthing)))
        try:
            return cls(tuple(out), int(data.get("ignore", NODATA)))
        except GeosegError as exc:
            raise GeosegError(str(exc), source) from None

    @classmethod
    def from_names(cls, names: list[str], background: bool = True) -> ClassList:
        """Classes from names in order, ids from 0; ``background`` prepends one if absent."""
        names = [n.strip() for n in names if n.strip()]
        if background and "background" not in [slugify(n) for n in names]:
            names = ["background", *names]
        return cls(
            tuple(
                SegClass(i, n, default_color(n, i), vectorize=slugify(n) != "background")
                for i, n in enumerate(names)
            )
        )


def class_dict(c: SegClass) -> dict:
    """One class as a mapping (``isthing`` only where true, so that older readers see what they know)."""
    d = asdict(c)
    if not d["isthing"]:
        del d["isthing"]
    return d


def default_color(name: str, index: int) -> str:
    return _KNOWN_COLORS.get(slugify(name), _PALETTE[index % len(_PALETTE)])


def load_classes(path: str | Path) -> ClassList:
    """Read a YAML class list, naming the file in any error."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GeosegError("class list not found", path) from None
    except yaml.YAMLError as exc:
        raise GeosegError(f"not valid YAML ({exc.__class__.__name__})", path) from None
    return ClassList.from_dict(data, str(path))


def object_classes(classes: ClassList, names=None) -> list[SegClass]:
    """The classes of countable objects: those ``names`` gives (names, slugs or ids), else the building classes."""
    if names is not None:
        wanted = {slugify(str(n)) for n in names}
        return [c for c in classes if c.slug in wanted or str(c.id) in wanted]
    return [c for c in classes if "building" in c.slug]
