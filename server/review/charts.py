"""Chart geometry for the metrics page. The template draws the SVG from these numbers, so every
label passes through the template's escaping and no script is needed."""

from __future__ import annotations

import math

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 14, 40


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _label(start: str, unit: str) -> str:
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    y, m, d = start.split("-")
    if unit == "month":
        return f"{months[int(m) - 1]} {y[2:]}"
    return f"{int(d)} {months[int(m) - 1]}"


def _ticks(top: float, plot_h: float) -> list[dict]:
    out = []
    for i in range(5):
        value = top * i / 4
        out.append({"y": TOP + plot_h - plot_h * i / 4, "label": f"{value:g}" if value < 100 else f"{value:.0f}"})
    return out


def _x_labels(series: list[dict], unit: str, slot: float) -> list[dict]:
    every = max(1, math.ceil(len(series) / 12))
    return [{"x": LEFT + slot * (i + 0.5), "label": _label(b["start"], unit)} for i, b in enumerate(series) if i % every == 0]


def decisions_chart(series: list[dict], urgency: str, unit: str) -> dict:
    """Stacked bars: approved and denied requests per bucket."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(1, len(series))
    slot = plot_w / n
    most = max([b[urgency]["requests"] for b in series] or [0])
    top = float(max(4, 4 * math.ceil(most / 4)))  # whole-number ticks for counts
    bars = []
    for i, b in enumerate(series):
        f = b[urgency]
        x = LEFT + slot * i + slot * 0.15
        w = max(1.0, slot * 0.7)
        base = TOP + plot_h
        for key, cls in (("approved", "approved"), ("denied", "denied")):
            h = plot_h * f[key] / top
            if h > 0:
                base -= h
                bars.append({"x": round(x, 1), "y": round(base, 1), "w": round(w, 1), "h": round(h, 1), "cls": cls,
                             "title": f"{_label(b['start'], unit)}: {f[key]} {key}"})
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": TOP + plot_h,
            "ticks": _ticks(top, plot_h), "bars": bars, "labels": _x_labels(series, unit, slot),
            "empty": not any(b[urgency]["requests"] for b in series)}


# Time units for the time chart's axis: (name, hours per unit, the largest value in hours shown in it).
TIME_UNITS = (("seconds", 1 / 3600, 2 / 60), ("minutes", 1 / 60, 2.0), ("hours", 1.0, 96.0), ("days", 24.0, float("inf")))


def time_unit(max_hours: float) -> tuple[str, float]:
    """The unit the time chart's axis counts in, so its scale fits the data: decisions Precert made
    in milliseconds read in seconds, a reviewer's in hours, a slow month in days."""
    for name, per, up_to in TIME_UNITS:
        if max_hours <= up_to:
            return name, per
    return TIME_UNITS[-1][0], TIME_UNITS[-1][1]


def _amount(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}" if value < 10 else f"{value:.0f} {unit}"


def time_chart(series: list[dict], urgency: str, unit: str) -> dict:
    """Lines: average and median time from receipt to decision per bucket (gaps where nothing was
    decided), on an axis from zero to a round number just above the largest value, in the unit that
    suits it (:func:`time_unit`)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(1, len(series))
    slot = plot_w / n
    hours = [b[urgency][k] for b in series for k in ("average_hours", "median_hours") if b[urgency][k] is not None]
    axis_unit, per = time_unit(max(hours or [0]))
    values = [h / per for h in hours]
    top = _nice_max(max(values or [0]))
    lines = {}
    points = []
    for key in ("average_hours", "median_hours"):
        segments, current = [], []
        for i, b in enumerate(series):
            v = b[urgency][key]
            if v is None:
                if current:
                    segments.append(current)
                current = []
                continue
            x, y = LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * (v / per) / top
            current.append(f"{x:.1f},{y:.1f}")
            points.append({"x": round(x, 1), "y": round(y, 1), "cls": key,
                           "title": f"{_label(b['start'], unit)}: {key.split('_')[0]} {_amount(v / per, axis_unit)}"})
        if current:
            segments.append(current)
        lines[key] = [" ".join(s) for s in segments]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": TOP + plot_h,
            "ticks": _ticks(top, plot_h), "lines": lines, "points": points, "labels": _x_labels(series, unit, slot),
            "empty": not values, "unit": axis_unit, "axis_max": top}
