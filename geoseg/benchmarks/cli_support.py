"""What the ``geoseg benchmark`` commands share: options that apply to an adapter, and the summary lines."""

from __future__ import annotations

import inspect

from geoseg.errors import GeosegError


def call_with(func, *args, **options):
    """Call an adapter's method with the options it takes; an option it does not take is an error."""
    params = inspect.signature(func).parameters
    given = {k: v for k, v in options.items() if v is not None}
    wrong = [k for k in given if k not in params]
    if wrong:
        name = getattr(func, "__self__", None)
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise GeosegError(f"{flags} does not apply to the {getattr(name, 'name', '?')} adapter")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in given][len(args):]
    if missing:
        raise GeosegError(f"the {func.__self__.name} adapter needs --{missing[0].replace('_', '-')}")
    return func(*args, **given)


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def summary(report: dict) -> list[str]:
    """The first lines a user reads."""
    pan = report.get("panoptic")
    if pan:
        return [f"{k}: PQ {_fmt(pan[k]['pq'])}, SQ {_fmt(pan[k]['sq'])}, RQ {_fmt(pan[k]['rq'])} ({pan[k]['n']} classes)"
                for k in ("All", "Things", "Stuff")]
    inst = report.get("instances")
    if inst and "segm" in inst:
        return [f"{k}: AP {_fmt(inst[k]['AP'])}, AP50 {_fmt(inst[k]['AP50'])}, AP75 {_fmt(inst[k]['AP75'])}"
                for k in ("segm", "bbox") if inst.get(k)]
    if inst:
        return [f"AP {_fmt(inst['AP'])}, AP50 {_fmt(inst['AP50'])}"]
    o = report["overall"]
    lines = [f"mean IoU {_fmt(o['mean_iou'])}, pixel accuracy {_fmt(o['pixel_accuracy'])}, "
             f"mean accuracy {_fmt(o['mean_accuracy'])}"]
    if "mean_iiou" in o:
        lines.append(f"mean iIoU {_fmt(o['mean_iiou'])}; categories: IoU {_fmt(o['category_iou'])}, "
                     f"iIoU {_fmt(o['category_iiou'])}")
    return lines
