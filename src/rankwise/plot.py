"""Risk–coverage pictures (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankwise.errors import RankwiseError


def plot_risk_coverage(
    curve: dict[str, Any], path: str | Path, *, title: str = "", label: str = "confidence"
) -> Path:
    """Draw quality against coverage for the method, the oracle and random abstention;
    ``label`` names the confidence that orders the method's curve."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RankwiseError("--plot needs matplotlib: pip install 'rankwise[plot]'") from error
    coverage = [1 - rate for rate in curve["rates"]]
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    axis.plot(coverage, curve["method"], label=f"{label} (nAUC {curve['nauc']:.3f})")
    axis.plot(coverage, curve["oracle"], linestyle="--", label="oracle")
    axis.axhline(curve["random"], color="grey", linestyle=":", label="random")
    axis.set_xlabel("coverage (share of queries answered)")
    axis.set_ylabel("mean nDCG@10 of answered queries")
    axis.set_title(title or "risk–coverage")
    axis.invert_xaxis()
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
