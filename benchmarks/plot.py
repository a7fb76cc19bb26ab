"""PNG timeline of the failover benchmark: every client reply around the event.

One row per implementation; each dot is a reply, coloured by the node that
answered; the shaded span is the outage (longest gap).  matplotlib is a
benchmark-only dependency (the `bench` extra), never needed by hbd itself.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence


def timeline_png(timelines: Mapping[str, Sequence[tuple[float, str]]], *, title: str,
                 window: tuple[float, float] = (-200.0, 1200.0),
                 event: str = "link cut") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"n1": "#1f77b4", "n2": "#ff7f0e", "n3": "#2ca02c", "n4": "#9467bd",
               "n5": "#8c564b"}
    names = list(timelines)
    labelled: set[str] = set()
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.8 * len(names)), dpi=110)
    for row, name in enumerate(names):
        points = [(t, n) for t, n in timelines[name] if window[0] <= t <= window[1]]
        for node, colour in colours.items():
            if not any(n == node for _, n in points):
                continue
            xs = [t for t, n in points if n == node]
            ax.scatter(xs, [row] * len(xs), s=6, color=colour,
                       label=None if node in labelled else f"answered by {node}")
            labelled.add(node)
        times = [t for t, _ in points]
        gaps = [(b - a, a, b) for a, b in itertools.pairwise(times)]
        if gaps:
            gap, start, end = max(gaps)
            ax.axvspan(start, end, ymin=(row + 0.15) / len(names), ymax=(row + 0.85) / len(names),
                       color="#d62728", alpha=0.15)
            ax.text(end + (window[1] - window[0]) / 140, row + 0.25, f"{gap:.0f} ms",
                    fontsize=8, color="#d62728")
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.text(5, len(names) - 0.55, event, fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(*window)
    ax.set_xlabel("ms after the event (client probe every 5 ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, markerscale=2)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
