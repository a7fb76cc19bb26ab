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
                 window: tuple[float, float] = (-200.0, 1200.0)) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"n1": "#1f77b4", "n2": "#ff7f0e"}
    names = list(timelines)
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.8 * len(names)), dpi=110)
    for row, name in enumerate(names):
        points = [(t, n) for t, n in timelines[name] if window[0] <= t <= window[1]]
        for node, colour in colours.items():
            xs = [t for t, n in points if n == node]
            ax.scatter(xs, [row] * len(xs), s=6, color=colour,
                       label=f"answered by {node}" if row == 0 else None)
        times = [t for t, _ in points]
        gaps = [(b - a, a, b) for a, b in itertools.pairwise(times)]
        if gaps:
            gap, start, end = max(gaps)
            ax.axvspan(start, end, ymin=(row + 0.15) / len(names), ymax=(row + 0.85) / len(names),
                       color="#d62728", alpha=0.15)
            ax.text(end + 10, row + 0.25, f"{gap:.0f} ms", fontsize=8, color="#d62728")
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.text(5, len(names) - 0.55, "link cut", fontsize=8)
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
