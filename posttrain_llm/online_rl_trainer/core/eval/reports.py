"""Evaluation reports on disk: the full JSON, a one-minute Markdown summary, and PNG plots.

``write_eval_report(result, out_dir)`` takes either one ``ModelEvaluator.evaluate`` result or a comparison
(``{"a": ..., "b": ..., "comparison": ...}`` from ``compare``) and writes, with ``stem`` (default ``eval``):

- ``<stem>.json``: everything, per-sample records included;
- ``<stem>.md``: the headline table (accuracy with its 95% interval, strict and lenient for math, pass@k/maj@k,
  judge errors), breakdown tables, and for a comparison the paired difference, the discordant counts, McNemar's
  p and a one-line verdict;
- ``<stem>_accuracy.png`` (accuracy per extraction rule with intervals; two models side by side),
  ``<stem>_by_<field>.png`` per breakdown field, and ``<stem>_pass_at_k.png`` when several samples were drawn.

matplotlib runs headless (Agg). Intervals are the result's own (``accuracy_ci_method``: Wilson with one sample per
problem, a bootstrap over problems with several), per model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..files.atomic import json_default
from .agents import transcripts_markdown


def is_comparison(result: dict[str, Any]) -> bool:
    return "comparison" in result and "a" in result and "b" in result


def write_eval_report(result: dict[str, Any], out_dir: str | Path, *, stem: str = "eval",
                      title: str | None = None) -> dict[str, Path]:
    """Write the JSON, Markdown and PNG files; returns {"json": path, "markdown": path, "<plot>": path, ...}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=2, default=json_default))
    models = _models(result)
    plots = {"accuracy": _plot_accuracy(models, out / f"{stem}_accuracy.png")}
    for field_name in _breakdown_fields(models):
        plots[f"by_{field_name}"] = _plot_breakdown(models, field_name, out / f"{stem}_by_{_safe(field_name)}.png")
    if any("pass_at_k" in r for _, r in models):
        plots["pass_at_k"] = _plot_pass_at_k(models, out / f"{stem}_pass_at_k.png")
    paths.update({k: v for k, v in plots.items() if v is not None})
    paths["markdown"].write_text(markdown_summary(result, title=title, plots=paths))
    return paths


# ---------------------------------------------------------------------------------------------------- markdown
def markdown_summary(result: dict[str, Any], *, title: str | None = None, plots: dict[str, Path] | None = None) -> str:
    """The Markdown report (also what ``evaluate_model`` prints, minus the plot links)."""
    models = _models(result)
    first = models[0][1]
    dataset = result.get("dataset") or "the evaluation set"
    heading = title or (f"Comparison on {dataset}" if is_comparison(result) else f"Evaluation of {first['model']} on {dataset}")
    lines = [f"# {heading}", ""]
    gen = first.get("generation", {})
    decoding = "greedy" if not gen.get("temperature") else f"temperature {gen['temperature']}, top-p {gen.get('top_p')}"
    lines += [
        f"{first['n']} problems (fingerprint `{first.get('dataset_fingerprint')}`), "
        f"{first['num_samples_per_problem']} sample(s) per problem, {decoding}, max {gen.get('max_new_tokens')} "
        f"new tokens, seed {gen.get('seed')}; reward `{first.get('reward')}`"
        + (f" ({result['grading']})" if result.get("grading") else "") + ".",
        f"Intervals: 95%, {_ci_method(first)}"
        + ("; the difference: a paired bootstrap over problems." if is_comparison(result) else "."),
        "",
    ]
    lines += summary_table(result).splitlines()
    if is_comparison(result):
        c = result["comparison"]
        lines += ["", f"Solved only by A: **{c['only_a']}**, only by B: **{c['only_b']}**, both: {c['both']}, "
                      f"neither: {c['neither']} (first sample per problem); exact McNemar p = **{c['mcnemar_p']:.3g}**"
                      + (f"; {c['excluded_problems']} problem(s) left out for judge errors" if c["excluded_problems"] else "")
                      + ".", "", f"**Verdict:** {verdict(c)}"]
    for field_name in _breakdown_fields(models):
        lines += ["", f"## By {field_name}", "", _breakdown_table(models, field_name)]
    for name, r in models:
        shown = transcripts_markdown(r.get("records", []))
        if shown:
            lines += ["", shown if len(models) == 1 else shown.replace("## Transcripts", f"## {name}: transcripts", 1)]
    if plots:
        pngs = [(k, p) for k, p in plots.items() if str(p).endswith(".png")]
        if pngs:
            lines += ["", "## Plots", ""] + [f"![{k}]({Path(p).name})" for k, p in pngs]
    versions = first.get("versions", {})
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return "\n".join(lines) + "\n"


def summary_table(result: dict[str, Any]) -> str:
    """The headline Markdown table: one row per metric, one column per model (plus the difference)."""
    models = _models(result)
    comparison = result.get("comparison") if is_comparison(result) else None
    header = ["metric"] + [_label(name, r) for name, r in models]
    if comparison:
        header += ["difference B − A [95% CI]", "McNemar p"]
    rows = []
    for mode, key in _accuracy_rows(models[0][1]):
        row = [f"accuracy ({mode})" if mode else "accuracy"] + [_acc_cell(key(r)) for _, r in models]
        if comparison:
            c = comparison["by_extraction"][mode] if mode and "by_extraction" in comparison else comparison
            lo, hi = c["difference_ci95"]
            row += [f"{c['difference_b_minus_a']:+.3f} [{lo:+.3f}, {hi:+.3f}]", f"{c['mcnemar_p']:.3g}"]
        rows.append(row)
    pad = [""] * (2 if comparison else 0)
    for key, label in (("pass_at_k", "pass@{k}"), ("maj_at_k", "maj@{k}")):
        ks = list(models[0][1].get(key, {}))
        for k in ks:
            rows.append([label.format(k=k)] + [_k_cell(r, key, k) for _, r in models] + pad)
    rows.append(["mean reward"] + [f"{r['mean_reward']:.3f}" for _, r in models] + pad)
    rows.append(["judge errors"] + [str(r["judge_errors"]) for _, r in models] + pad)
    rows.append(["mean completion tokens"] + [f"{r['mean_completion_length']:.1f}" for _, r in models] + pad)
    if all("agent" in r for _, r in models):  # multi-turn rollouts (eval/agents.py)
        for key, label in (("turns_mean", "mean turns"), ("tool_calls_mean", "mean tool calls"),
                           ("tool_errors_total", "tool errors"), ("malformed_calls_total", "malformed calls")):
            rows.append([label] + [f"{r['agent'][key]:g}" for _, r in models] + pad)
        reasons = sorted({k for _, r in models for k in r["agent"] if k.startswith("stop/")})
        for key in reasons:
            rows.append([f"stopped: {key[5:]}"] + [f"{r['agent'].get(key, 0):g}" for _, r in models] + pad)
    return _table(header, rows)


def _ci_method(r: dict[str, Any]) -> str:
    method = r.get("accuracy_ci_method", "wilson")
    return "Wilson score interval over judged samples" if method == "wilson" else method


def verdict(c: dict[str, Any], alpha: float = 0.05) -> str:
    lo, hi = c["difference_ci95"]
    diff = c["difference_b_minus_a"]
    if math.isnan(diff):
        return "no problem could be compared (every pair had a judge error)."
    if c["mcnemar_p"] < alpha and (lo > 0 or hi < 0):
        better = "B" if diff > 0 else "A"
        return (f"{better} is better ({diff:+.3f}; the paired 95% interval excludes 0 and McNemar p = "
                f"{c['mcnemar_p']:.3g} < {alpha}).")
    return (f"no significant difference at {alpha} ({diff:+.3f}, paired 95% interval [{lo:+.3f}, {hi:+.3f}], "
            f"McNemar p = {c['mcnemar_p']:.3g}).")


def _accuracy_rows(result: dict[str, Any]):
    if "by_extraction" in result:
        return [(mode, (lambda r, m=mode: r["by_extraction"][m])) for mode in result["by_extraction"]]
    return [("", lambda r: r)]


def _k_cell(r: dict[str, Any], key: str, k: Any) -> str:
    if k not in r.get(key, {}):
        return ""
    ci = r.get(f"{key}_ci", {}).get(k)
    return f"{r[key][k]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _acc_cell(s: dict[str, Any]) -> str:
    lo, hi = s["accuracy_ci"]
    return f"{s['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] ({s['num_correct']}/{s['num_judged']})"


def _breakdown_table(models: list[tuple[str, dict]], field_name: str) -> str:
    values = list(models[0][1]["breakdowns"][field_name])
    header = [field_name, "n"] + [_label(name, r) for name, r in models]
    rows = []
    for v in values:
        cells = []
        for _, r in models:
            g = r["breakdowns"][field_name].get(v)
            cells.append("" if g is None else f"{g['accuracy']:.3f} [{g['accuracy_ci'][0]:.3f}, {g['accuracy_ci'][1]:.3f}]")
        rows.append([v, str(models[0][1]["breakdowns"][field_name][v]["n"])] + cells)
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _models(result: dict[str, Any]) -> list[tuple[str, dict]]:
    if is_comparison(result):
        return [("A", result["a"]), ("B", result["b"])]
    return [("", result)]


def _label(name: str, r: dict[str, Any]) -> str:
    model = str(r.get("model"))
    short = model if len(model) <= 40 else "…" + model[-39:]
    return f"{name}: {short}" if name else short


def _breakdown_fields(models: list[tuple[str, dict]]) -> list[str]:
    return list(models[0][1].get("breakdowns", {}))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# ------------------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, groups: list[str], models: list[tuple[str, dict]], stats) -> None:
    """Grouped bars with 95% interval error bars: one group per x label, one bar per model."""
    width = 0.8 / len(models)
    for j, (name, r) in enumerate(models):
        accs, errs = [], [[], []]
        for g in groups:
            s = stats(r, g)
            acc = s["accuracy"] if s else math.nan
            lo, hi = s["accuracy_ci"] if s else (math.nan, math.nan)
            accs.append(acc)
            errs[0].append(max(acc - lo, 0) if s else 0)
            errs[1].append(max(hi - acc, 0) if s else 0)
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, accs, width, yerr=errs, capsize=3, label=_label(name, r) if name else None, alpha=0.85)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                       fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% interval)")
    ax.grid(axis="y", alpha=0.3)
    if len(models) > 1:
        ax.legend(fontsize=8)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_accuracy(models: list[tuple[str, dict]], path: Path) -> Path:
    plt = _pyplot()
    first = models[0][1]
    modes = list(first.get("by_extraction", {})) or ["accuracy"]
    fig, ax = plt.subplots(figsize=(max(4.5, 2 + 1.5 * len(modes)), 3.8))
    _bars(ax, modes, models, lambda r, m: r["by_extraction"][m] if "by_extraction" in r else r)
    ax.set_title("accuracy" + (" by extraction rule" if len(modes) > 1 else ""))
    return _save(fig, path, plt)


def _plot_breakdown(models: list[tuple[str, dict]], field_name: str, path: Path) -> Path:
    plt = _pyplot()
    groups = list(models[0][1]["breakdowns"][field_name])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.8 * len(groups) * len(models)), 4.0))
    _bars(ax, groups, models, lambda r, g: r["breakdowns"][field_name].get(g))
    ax.set_title(f"accuracy by {field_name}")
    return _save(fig, path, plt)


def _plot_pass_at_k(models: list[tuple[str, dict]], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for j, (name, r) in enumerate(models):
        color = f"C{j}"
        label = _label(name, r) if name else ""
        for key, style, what in (("pass_at_k", "o-", "pass@k"), ("maj_at_k", "s--", "maj@k")):
            if key in r:
                ks = [int(k) for k in r[key]]
                ax.plot(ks, list(r[key].values()), style, color=color, label=f"{what} {label}".strip())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("fraction of problems")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("pass@k and maj@k")
    return _save(fig, path, plt)
