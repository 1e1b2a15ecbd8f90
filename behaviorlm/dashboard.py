"""A W&B workspace and report for one sweep, built with `wandb-workspaces` (pip install -e ".[dashboards]").

    behaviorlm dashboard results/paper-main                          # save both (needs `wandb login`)
    behaviorlm dashboard multirun/behaviorlm/2026-12-03_10-00-00 --dry-run --output spec.json   # no network
    make dashboard SWEEP=results/paper-main

The sweep folder is a `run.py -m` folder (`<N>/metrics.json`) or a make target's (`runs/<N>/metrics.json`), with
each job's `.hydra/` and, after `behaviorlm collect`, `table.md`. From it we read the W&B project and group the jobs
logged to, and the swept key: the first override that differs between jobs other than the seed. The workspace
shows only the sweep's group, its runs grouped by that key, in four sections:
- **Head and tail**: test accuracy on anchor behaviors, tail behaviors and overall, one bar per value of the swept
  key, averaged over seeds with the min-max range;
- **More test metrics**: macro-F1 and acc@5 the same way, and the per-behavior table (`test/per_behavior`);
- **Stages**: each stage's training loss against its optimizer steps and its validation accuracy (overall and
  tail) against its epochs;
- **Sweep**: parallel coordinates from the swept key to anchor, tail and overall accuracy.
The report, titled after the sweep, repeats the head/tail bars and carries `table.md` (means, t-intervals and the
paired tests) as text. Runs logged offline must be uploaded first: `behaviorlm sync <sweep folder>`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from behaviorlm.stage_plan import TUNING_STAGES
from behaviorlm.sweeps import SWEPT_KEYS, jobs_root, load_sweep
from behaviorlm.tracking import has_wandb_credentials, logged_where
from behaviorlm.utils import atomic_write_text

HEAD_TAIL = ("test/acc_anchor", "test/acc_tail", "test/acc_overall")
MORE_TEST = ("test/macro_f1", "test/acc_at_5")


@dataclass
class Panel:
    kind: str              # bar | line | parallel | table
    title: str
    metrics: list[str]
    groupby: Optional[str] = None  # a config key: one bar per value, mean over seeds, min-max range
    x: Optional[str] = None


@dataclass
class Section:
    name: str
    panels: list[Panel]


@dataclass
class DashboardSpec:
    """What the workspace and the report show, independent of the W&B library (the tests read this)."""
    title: str
    project: str
    entity: Optional[str]
    group: str
    swept_key: str
    sections: list[Section] = field(default_factory=list)
    table_md: str = ""


class DashboardError(ValueError):
    """The sweep folder cannot be turned into a dashboard; the message says why."""


def sweep_jobs(sweep_dir: Path) -> tuple[pd.DataFrame, str]:
    """(one row per completed job: its metrics.json, swept overrides and the W&B settings from its Hydra config;
    the key the panels group by: the first the sweep varies)."""
    jobs, keys = load_sweep(sweep_dir)
    jobs = jobs[jobs["status"] == "completed"] if "status" in jobs else jobs.iloc[:0]
    if jobs.empty:
        raise DashboardError(f"sweep folder '{sweep_dir}' has no completed job (neither runs/<N>/metrics.json nor "
                             "<N>/metrics.json)")
    where = [{f"_{name}": value for name, value in logged_where(jobs_root(sweep_dir) / job, sweep_dir.name).items()
              if value is not None} for job in jobs["job"]]
    jobs = jobs.join(pd.DataFrame(where, index=jobs.index))
    if not keys:
        raise DashboardError(f"no swept key varies across the jobs (no override but the seed differs, and none of "
                             f"{', '.join(SWEPT_KEYS)} does)")
    return jobs, keys[0]


def build_spec(sweep_dir: Path) -> DashboardSpec:
    jobs, key = sweep_jobs(sweep_dir)
    first = jobs.iloc[0]
    stages = [s for s in TUNING_STAGES if f"{s}/final_train_loss" in jobs]
    sections = [
        Section("Head and tail", [Panel("bar", f"{m} by {key}", [m], key) for m in HEAD_TAIL]),
        Section("More test metrics", [Panel("bar", f"{m} by {key}", [m], key) for m in MORE_TEST]
                + [Panel("table", "per-behavior test accuracy", ["test/per_behavior"])]),
        Section("Stages", [Panel("line", f"{s} training loss", [f"{s}/train/loss"], key, x=f"{s}/train/step")
                           for s in stages]
                + [Panel("line", f"{s} validation accuracy by epoch", [f"{s}/val/acc_overall", f"{s}/val/acc_tail"],
                         key, x=f"{s}/epoch") for s in stages]),
        Section("Sweep", [Panel("parallel", f"{key} to accuracy", [f"config:{key}", *HEAD_TAIL])]),
    ]
    table = sweep_dir / "table.md"
    return DashboardSpec(title=f"BehaviorLM: {sweep_dir.name}", project=first.get("_project", "behaviorlm"),
                         entity=first.get("_entity"), group=str(first.get("_group", sweep_dir.name)),
                         swept_key=key, sections=sections, table_md=table.read_text() if table.exists() else "")


def _panel(panel: Panel):
    import wandb_workspaces.reports.v2 as wr

    if panel.kind == "bar":
        return wr.BarPlot(title=panel.title, metrics=panel.metrics, groupby=wr.Config(panel.groupby),
                          groupby_aggfunc="mean", groupby_rangefunc="minmax", orientation="v")
    if panel.kind == "line":
        return wr.LinePlot(title=panel.title, x=panel.x, y=panel.metrics, groupby=wr.Config(panel.groupby),
                           groupby_aggfunc="mean", groupby_rangefunc="minmax")
    if panel.kind == "parallel":
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(m.split(":", 1)[1]) if m.startswith("config:")
                                                    else wr.SummaryMetric(m)) for m in panel.metrics]
        return wr.ParallelCoordinatesPlot(title=panel.title, columns=columns)
    return wr.WeavePanelSummaryTable(table_name=panel.metrics[0])


def _group_filter(spec: DashboardSpec) -> str:
    return f"Metric('Group') == '{spec.group}'"


def to_workspace(spec: DashboardSpec, entity: str):
    import wandb_workspaces.workspaces as ws

    return ws.Workspace(entity=entity, project=spec.project, name=spec.title,
                        sections=[ws.Section(name=s.name, panels=[_panel(p) for p in s.panels], is_open=True)
                                  for s in spec.sections],
                        runset_settings=ws.RunsetSettings(filters=_group_filter(spec),
                                                          groupby=[ws.Config(spec.swept_key)]))


def to_report(spec: DashboardSpec, entity: Optional[str]):
    """The report; without an entity its run set is left unbound (a dry run must not look up the project)."""
    import wandb_workspaces.reports.v2 as wr

    head_tail = next(s for s in spec.sections if s.name == "Head and tail")
    runset = wr.Runset(entity=entity or "", project=spec.project if entity else "", filters=_group_filter(spec))
    return wr.Report(entity=entity or "dry-run", project=spec.project, title=spec.title,
                     description=f"Anchor vs tail accuracy across {spec.swept_key} (group {spec.group})",
                     blocks=[wr.H1(spec.title),
                             wr.P(f"Test accuracy by {spec.swept_key}, mean over seeds with the min-max range."),
                             wr.PanelGrid(panels=[_panel(p) for p in head_tail.panels], runsets=[runset]),
                             wr.H2("Table (behaviorlm collect)"),
                             wr.MarkdownBlock(text=spec.table_md or "no table.md in the sweep folder")])


def definitions(spec: DashboardSpec, entity: str) -> dict[str, Any]:
    """Everything a dry run writes: our spec and the library's own workspace and report models."""
    return {"spec": asdict(spec),
            "workspace": to_workspace(spec, entity)._spec,
            "report": to_report(spec, None)._to_model().model_dump(by_alias=True, exclude_none=True)}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="behaviorlm dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--entity", help="W&B entity (default: the jobs' logger.entity, else your default entity)")
    parser.add_argument("--dry-run", action="store_true", help="write the definitions as JSON; no network")
    parser.add_argument("--output", type=Path, help="with --dry-run: the JSON file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        sys.exit("error: dashboards need wandb-workspaces: pip install -e '.[dashboards]'")
    try:
        spec = build_spec(args.sweep_dir)
    except DashboardError as err:
        sys.exit(f"error: {err}")
    entity = args.entity or spec.entity
    if args.dry_run:
        text = json.dumps(definitions(spec, entity or "dry-run"), indent=1, default=str)
        if args.output:
            atomic_write_text(args.output, text)
            print(f"dashboard definitions ({spec.swept_key}, group {spec.group}) -> {args.output}")
        else:
            print(text)
        return
    import wandb

    if not has_wandb_credentials():
        sys.exit(f"error: not logged in to W&B: run `wandb login` (or set WANDB_API_KEY), then `behaviorlm sync "
                 f"{args.sweep_dir}` to upload the sweep's offline runs, and run this again")
    entity = entity or wandb.Api().default_entity
    workspace = to_workspace(spec, entity)
    workspace.save()
    report = to_report(spec, entity)
    report.save()
    print(f"workspace: {workspace.url}\nreport: {report.url}")


if __name__ == "__main__":
    main()
