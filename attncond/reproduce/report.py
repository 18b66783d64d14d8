"""Render reproduce results: ``index.md`` (findings, figures, key numbers) and ``results.json`` (everything)."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..report import fmt, to_json
from ._common import ExperimentResult, check_out

_SUMMARY_KEYS = {
    "S24": ("summary", "two_stage_summary", "landscape_summary"),
    "Q25": ("kappa_vs_scale", "regimes", "median_final_over_initial", "weyl", "spearman_rate_vs_inv_kappa2"),
    "I25": ("per_tau", "spearman_iterations_random_vs_kappaH", "spearman_iterations_slowest_vs_kappaH",
            "median_observed_over_predicted_iterations"),
    "H24": ("per_variant", "qk_over_v_grad_curve", "baseline_final_accuracy", "target_accuracy_95pct"),
}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_cell(x)}" for k, x in v.items()) + "}"
    return fmt(v)


def _md_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _numbers_section(res: ExperimentResult) -> str:
    lines = []
    for key in _SUMMARY_KEYS.get(res.name, ()):
        v = res.numbers.get(key)
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            rows = [{"": k, **{kk: vv for kk, vv in x.items() if not isinstance(vv, (list, dict))}}
                    for k, x in v.items()]
            lines.append(f"**{key}**\n\n" + _md_table(rows))
        else:
            lines.append(f"**{key}**: {_cell(v)}\n")
    return "\n".join(lines)


def render_markdown(results: Sequence[ExperimentResult], command: str) -> str:
    """The text of ``index.md`` for ``results``."""
    import torch

    total = sum(r.seconds for r in results)
    md = ["# attncond reproduce — report", "",
          f"Command: `{command}`  ", f"Generated: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  ",
          f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); total compute {total:.1f} s  ",
          "All numbers are in `results.json`. Every experiment is seeded; rerunning the command reproduces it.",
          "", "## Findings", "",
          "What our runs say about each paper's claims, at what scale and with what confidence. "
          "Verdicts: **held** (the test decides for the claim), **finding** (it decides against it: a "
          "counterexample, or a significant effect the other way), **inconclusive** (it does not decide). "
          "Every test is two-sided at level 0.05; rates carry a 95% Clopper–Pearson interval. "
          "These are laptop-scale runs of reconstructed models (MATH.md), not the papers' set-ups.", ""]
    rows = [{"paper": f.paper, "claim": f.claim, "verdict": f"**{f.verdict}**", "seeds": str(f.seeds),
             "confidence": f.confidence, "evidence": f.evidence, "scale": f.scale}
            for r in results for f in r.findings]
    md.append(_md_table(rows))
    for r in results:
        md += ["", f"## {r.title}", "",
               f"Size `{r.size}`, seed {r.seed}, {r.seconds:.1f} s.", ""]
        for fig in r.figures:
            md += [f"![{fig.caption}]({fig.path})", "", f"*{fig.caption}*", ""]
        md += ["### Key numbers", "", _numbers_section(r)]
        if r.notes:
            md += ["### Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    md += ["## Closing note", "",
           "Which of the papers' claims held, which did not, which the statistics leave open, and at what "
           "scale "
           "(the scale of each experiment is in the findings table and in `results.json`).", ""]
    labels = {"held": "Held", "finding": "Finding (the claim did not hold)", "inconclusive": "Inconclusive"}
    for verdict, label in labels.items():
        hits = [(r, f) for r in results for f in r.findings if f.verdict == verdict]
        if hits:
            md.append(f"**{label}** ({len(hits)}):")
            md.append("")
            md += [f"- [{f.paper}] {f.claim} ({r.size} size, {f.seeds} seeds: {f.confidence})" for r, f in hits]
            md.append("")
    md.append("")
    return "\n".join(md)


def write_report(results: Sequence[ExperimentResult], out: str | Path, command: str = "attncond reproduce"
                 ) -> dict[str, Path]:
    """Write ``out/index.md`` and ``out/results.json``; return their paths.

    ``results.json`` is strict JSON in the encoding of every ``--json`` output
    (:func:`attncond.report.to_json`): non-finite floats are the strings ``"inf"``, ``"-inf"``, ``"nan"``.
    """
    outp = check_out(out)
    if outp is None:
        raise ValueError("out must name a folder")
    if not results:
        raise ValueError("results must hold at least one ExperimentResult")
    for r in results:
        if not isinstance(r, ExperimentResult):
            raise TypeError(f"results must hold ExperimentResult objects, got {type(r).__name__}")
    outp.mkdir(parents=True, exist_ok=True)
    index = outp / "index.md"
    index.write_text(render_markdown(results, command), encoding="utf-8")
    payload = {"command": command, "experiments": {r.name: r.to_dict() for r in results}}
    js = outp / "results.json"
    js.write_text(to_json(payload, indent=1), encoding="utf-8")
    return {"index": index, "json": js}
