"""What ``tune.py`` shows: a line per trial, the classic summary, a table, plots.

Plots (PNG through matplotlib, HTML through plotly, in ``<study dir>/plots/``):
optimization history, intermediate values (pruned trials' curves included),
parameter importances (needs two or more completed trials) and the slice of
``bg_grid_size`` (or of the first parameter when the space has no
``bg_grid_size``). A plot Optuna cannot draw (too few trials) is skipped with
a note, never an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from wsol_lightning.tuning.study import OVER_BUDGET_KEY, is_journal, redact, retried_numbers


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def format_params(params: Dict[str, Any]) -> str:
    """``bg_grid_size=0.412 lr=0.0123``."""
    return " ".join(f"{key}={_fmt(value)}" for key, value in params.items())


def trial_line(trial: FrozenTrial) -> str:
    """One line per trial as it ends: number, params, value, state, epochs (and why, if not complete)."""
    value = "-" if trial.value is None else f"{trial.value:.2f}"
    epochs = trial.user_attrs.get("epochs", "-")
    line = (f"trial {trial.number:>3d}  {trial.state.name:<8s} value {value:>6s}  epochs {epochs}  "
            f"{format_params(trial.params)}")
    why = trial.user_attrs.get("reason") or trial.user_attrs.get("error")
    if trial.state == TrialState.PRUNED and "pruned_epoch" in trial.user_attrs and not why:
        why = f"pruned at epoch {trial.user_attrs['pruned_epoch']}"
    if why and trial.state != TrialState.COMPLETE:
        line += f"  ({why[:160]})"
    return line


class TrialPrinter:
    """``study.optimize`` callback printing :func:`trial_line` (skips trials abandoned over budget)."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:  # noqa: D102
        if trial.system_attrs.get(OVER_BUDGET_KEY):
            return
        print(trial_line(trial), flush=True)


def visible_trials(study: optuna.Study) -> List[FrozenTrial]:
    """The study's trials without those abandoned over budget."""
    return [t for t in study.get_trials(deepcopy=False) if not t.system_attrs.get(OVER_BUDGET_KEY)]


def classic_summary(study: optuna.Study) -> List[str]:
    """What the classic Optuna example prints: finished trials, best value, best params."""
    trials = visible_trials(study)
    finished = [t for t in trials if t.state.is_finished()]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    retried = retried_numbers(trials)
    failed = sum(t.state == TrialState.FAIL for t in finished)
    lines = [f"Number of finished trials: {len(finished)}",
             f"  pruned: {len(pruned)}  complete: {len(complete)}  failed: {failed}"
             + (f" ({len(retried)} of them re-queued after their worker died or was interrupted, counted once)"
                if retried else "")]
    if not complete:
        lines.append("No completed trial: no best value yet.")
        return lines
    best = study.best_trial
    lines += ["Best trial:", f"  Number: {best.number}", f"  Value: {best.value}", "  Params: "]
    lines += [f"    {key}: {value}" for key, value in best.params.items()]
    return lines


def summary_table(study: optuna.Study, top: Optional[int] = None) -> List[str]:
    """A table of the trials (best first among completed, then the others by number)."""
    trials = visible_trials(study)
    keys: List[str] = []
    for trial in trials:
        keys += [k for k in trial.params if k not in keys]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete = sorted([t for t in trials if t.state == TrialState.COMPLETE], key=lambda t: t.value, reverse=reverse)
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    rows = complete + others
    if top is not None:
        rows = rows[:top]
    header = ["trial", "state", "value", "epochs", *keys, "MaxBoxAccV2", "top1"]
    table = [header]
    for t in rows:
        table.append([str(t.number), t.state.name, "-" if t.value is None else f"{t.value:.2f}",
                      str(t.user_attrs.get("epochs", "-")), *[_fmt(t.params.get(k, "-")) for k in keys],
                      _fmt(t.user_attrs.get("val/MaxBoxAccV2", "-")), _fmt(t.user_attrs.get("val/top1", "-"))])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in table]


def epochs_trained(study: optuna.Study) -> int:
    """Total epochs over the study's trials (from their ``epochs`` user attribute)."""
    return sum(int(t.user_attrs.get("epochs", 0)) for t in visible_trials(study))


def save_plots(study: optuna.Study, out_dir: Path, slice_param: str = "bg_grid_size") -> Dict[str, str]:
    """Write the four plots as PNG and HTML; returns ``{name: path or 'skipped: why'}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization as vis
    from optuna.visualization import matplotlib as vis_mpl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = visible_trials(study)
    params = [k for t in trials for k in t.params]
    if slice_param not in params and params:
        slice_param = params[0]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    plots = {
        "optimization_history": (vis.plot_optimization_history, vis_mpl.plot_optimization_history, {}),
        "intermediate_values": (vis.plot_intermediate_values, vis_mpl.plot_intermediate_values, {}),
        "param_importances": (vis.plot_param_importances, vis_mpl.plot_param_importances, {}),
        "slice_" + slice_param: (vis.plot_slice, vis_mpl.plot_slice, {"params": [slice_param]}),
    }
    results: Dict[str, str] = {}
    for name, (plotly_fn, mpl_fn, kwargs) in plots.items():
        if name == "param_importances" and (len(complete) < 2 or len(set(params)) < 1):
            results[name] = "skipped: needs two completed trials"
            continue
        if not complete and name != "intermediate_values":
            results[name] = "skipped: no completed trial"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = plotly_fn(study, **kwargs)
                figure.write_html(str(out_dir / f"{name}.html"), include_plotlyjs="cdn")
                axes = mpl_fn(study, **kwargs)
                fig = _figure_of(axes)
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                fig.savefig(out_dir / f"{name}.png", dpi=100)
                plt.close(fig)
            results[name] = str(out_dir / f"{name}.png")
        except Exception as error:  # noqa: BLE001 - a plot never fails the study
            results[name] = f"skipped: {type(error).__name__}: {' '.join(str(error).split())[:200]}"
            plt.close("all")
    return results


def _figure_of(axes: Any):
    if hasattr(axes, "figure"):
        return axes.figure
    first = axes.flatten()[0] if hasattr(axes, "flatten") else axes[0]
    return first.figure


def print_summary(study: optuna.Study, storage_url: str, plots_dir: Optional[Path], elapsed: float) -> None:
    """What tune.py prints when its study has its trials: totals, summary, table, best trial, plots, dashboard."""
    print(f"\nfinished in {elapsed:.0f} s; {epochs_trained(study)} epochs trained in the study")
    print("\n".join(classic_summary(study)))
    print("\n".join(summary_table(study)))
    if any(t.state == TrialState.COMPLETE for t in visible_trials(study)):
        best = study.best_trial
        if "bg_grid_size" in best.params:
            print(f"best bg_grid_size: {best.params['bg_grid_size']:.4f} (val/localization {best.value:.2f}, "
                  f"trial {best.number})")
        if "config" in best.user_attrs:
            print(f"reproduce the best trial: python scripts/fit.py --config {best.user_attrs['config']}")
    if plots_dir is not None:
        for name, path in save_plots(study, plots_dir).items():
            print(f"plot {name}: {path}")
    print(f"dashboard: optuna-dashboard {storage_url if is_journal(storage_url) else redact(storage_url)}")
