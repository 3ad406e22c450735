"""The performance targets the peer benchmark judges its own figures by.

They are the project's promises about speed and memory (docs/benchmarks.md): each is
printed with what this run measured and whether it was met. Nothing is asserted: a
benchmark reports, it does not fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Figures = dict[str, float]
"""What a run measured, by name (seconds, MiB, ratios, milliseconds)."""


@dataclass(frozen=True)
class Target:
    measure: str
    promise: str
    shown: Callable[[Figures], str]
    met: Callable[[Figures], bool]
    needs: tuple[str, ...]


TARGETS = (
    Target("one start (to /api/status via the proxy)", "<= 0.5 x a bare jupyter lab start",
           lambda f: f"{f['one_start'] / f['bare_start']:.2f} x "
                     f"({f['one_start']:.2f} s / {f['bare_start']:.2f} s)",
           lambda f: f["one_start"] <= 0.5 * f["bare_start"], ("one_start", "bare_start")),
    Target("10 concurrent starts, all up", ">= 3 starts/s",
           lambda f: f"{f['starts_per_s_10']:.2f}/s",
           lambda f: f["starts_per_s_10"] >= 3, ("starts_per_s_10",)),
    Target("GET one at c=16", ">= 5 x JupyterHub's GET user",
           lambda f: f"{f['get_one_ratio']:.2f} x", lambda f: f["get_one_ratio"] >= 5,
           ("get_one_ratio",)),
    Target("list 200 at c=16", ">= 8 x JupyterHub's list 200",
           lambda f: f"{f['list_ratio']:.2f} x", lambda f: f["list_ratio"] >= 8,
           ("list_ratio",)),
    Target("PSS per idle notebook", "<= 60 MiB",
           lambda f: f"{f['idle_pss']:.0f} MiB", lambda f: f["idle_pss"] <= 60, ("idle_pss",)),
    Target("control plane, 1,000 instances", "<= 100 MiB RSS, idle / after reads",
           lambda f: f"{f['control_rss']:.0f} / {f['control_rss_after']:.0f} MiB",
           lambda f: max(f["control_rss"], f["control_rss_after"]) <= 100,
           ("control_rss", "control_rss_after")),
    Target("GET one p99 while the engine sweeps", "<= 3 x its p50",
           lambda f: f"{f['get_one_p99'] / f['get_one_p50']:.1f} x "
                     f"(p50 {f['get_one_p50']:.1f} ms, p99 {f['get_one_p99']:.1f} ms)",
           lambda f: f["get_one_p99"] <= 3 * f["get_one_p50"], ("get_one_p50", "get_one_p99")),
)


def report(figures: Figures) -> list[str]:
    """One line per target: what it promises, what was measured, and whether it held."""
    lines = [f"{'target':<42} {'promise':<36} {'measured':<36} met"]
    for target in TARGETS:
        if not all(name in figures for name in target.needs):
            lines.append(f"{target.measure:<42} {target.promise:<36} {'not measured':<36} -")
            continue
        verdict = "yes" if target.met(figures) else "NO"
        lines.append(f"{target.measure:<42} {target.promise:<36} "
                     f"{target.shown(figures):<36} {verdict}")
    return lines
