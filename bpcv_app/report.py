"""``bpcv report RUN_DIR``: figures and a Markdown summary of one run, from what the coordinator wrote
(``coordinator.json``: the rounds; ``metrics.sqlite``: samples, broker traffic, round events).

The tables come from ``bpcv_app.rundata`` (pure functions), the figures from ``bpcv_app.figures``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bpcv.model_spec import describe
from bpcv_app.figures import plot_chain, plot_metric, plot_quality, plot_resources, plot_traffic
from bpcv_app.rundata import (
    MB,
    Breakdown,
    RunData,
    Timeline,
    bytes_per_round,
    coordinator_timeline,
    load_run,
    node_table,
    processes,
    round_breakdown,
)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _others(metrics: dict[str, float | None]) -> str:
    return "".join(f" ({m} {_fmt(v, '.4f')})" for m, v in metrics.items())


def summary_markdown(data: RunData, traffic: list[dict[str, Any]], figures: list[Path]) -> str:
    s, rounds = data.summary, data.rounds
    task = s.task
    eliminated = [f"{r.eliminated} (round {r.round})" for r in rounds if r.eliminated]
    lines = [
        f"# Run report: task {task.get('task_id', '?')}",
        "",
        f"- dataset {task.get('dataset', '?')}, model {describe(task.get('model', '?'))}, {len(rounds)} rounds, "
        f"stopped because: {s.stopped_because or s.error or '?'}",
        f"- final {data.metric} on the {s.evaluated_on}: {_fmt(s.final_value, '.4f')}; final model digest "
        f"`{(s.final_model_digest or '-')[:16]}`",
        f"- chain: height {rounds[-1].chain_height if rounds else '-'}, "
        f"{sum(1 for r in rounds if r.on_chain)}/{len(rounds)} rounds on chain",
        f"- eliminated: {', '.join(eliminated) or '-'}",
        f"- samples: {len(data.samples)} from {len({x['node'] for x in data.samples})} nodes in "
        f"{len(processes(data.samples))} processes",
    ]
    if traffic:
        total = [r.get("received", 0) + r.get("sent", 0) for r in traffic]
        lines.append(
            f"- broker traffic per round (in + out): median {statistics.median(total) / MB:.1f} MiB, "
            f"total {sum(total) / MB:.1f} MiB"
        )
    lines += [
        "",
        f"| round | {data.metric} | eliminated | admitted | block by (rank) | height |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        block = f"{r.block_proposer} ({r.block_rank})" if r.on_chain else "none"
        lines.append(
            f"| {r.round} | {_fmt(r.value, '.4f')}{_others(r.other_metrics)} | {r.eliminated or '-'} | "
            f"{', '.join(r.admitted) or '-'} | {block} | {r.chain_height} |"
        )
    lines += [
        "",
        "| node | status | reward | CPU median % | CPU peak % | RSS peak MiB | ledger CPU s | privacy ε spent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in node_table(data):
        lines.append(
            f"| {n['node']} | {n['status']} | {_fmt(n['reward'], '.2f')} | {_fmt(n['cpu_median'], '.1f')} | "
            f"{_fmt(n['cpu_peak'], '.1f')} | {_fmt(n['rss_peak_mb'], '.0f')} | {_fmt(n['ledger_cpu_s'], '.3f')} | "
            f"{n['epsilon']} |"
        )
    lines += ["", "CPU is of the node's process, in % of one core; agents pooled in one process show that process.", ""]
    lines += breakdown_markdown(round_breakdown(data.round_times))
    lines += timeline_markdown(coordinator_timeline(data.events))
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def seconds_table(
    intro: str, what: str, per: str, share_of: str, median_s: dict[str, float], share: dict[str, float]
) -> list[str]:
    """A paragraph, then one row per ``what`` (phase, stage): median seconds ``per`` round and share."""
    lines = [intro, "", f"| {what} | median s per {per} | share of {share_of} |", "|---|---|---|"]
    for name, seconds in median_s.items():
        lines.append(f"| {name} | {seconds:.3f} | {f'{share[name]:.1%}' if name in share else '-'} |")
    return [*lines, ""]


def breakdown_markdown(b: Breakdown | None) -> list[str]:
    """The agents' rounds by phase: median seconds per agent-round and share of the busy seconds."""
    if b is None:
        return []
    intro = (
        f"Where the agents' rounds went ({b.agent_rounds} agent-rounds, a window from one global model to the "
        f"next; median window {b.median_wall_s:.2f} s). Busy time is on the agent's worker thread; waiting is "
        "for peers, stragglers, the broker and, in a pool, the other agents. Not training or scoring: "
        f"**{b.overhead:.1%}** of the busy time."
    )
    lines = seconds_table(intro, "phase", "agent-round", "busy time", b.median_s, b.busy_share)
    if not b.received:
        return lines
    total = b.received["all"]
    intro = (
        "What an agent received a round (payload bytes of the messages it handled, by kind; median over "
        "the agent-rounds: the kinds need not add up to the median total). Models travel as `global` and "
        "`update`; `block`, `result` and `manifest` are about every node of the round."
    )
    lines += [
        intro,
        "",
        "| kind | median kB per agent-round | share of the median total |",
        "|---|---|---|",
    ]
    for kind, nbytes in b.received.items():
        lines.append(f"| {kind} | {nbytes / 1000:.1f} | {nbytes / total:.1%} |" if total else f"| {kind} | 0.0 | - |")
    return [*lines, ""]


def timeline_markdown(t: Timeline | None) -> list[str]:
    """The coordinator's rounds by stage: median seconds per round and share of the rounds' seconds."""
    if t is None:
        return []
    intro = (
        f"The coordinator's rounds by stage ({t.rounds} rounds followed by another; median round "
        f"{t.median_round_s:.2f} s): updates = global model out until every update is in (training, transfer, "
        "stragglers), votes = manifest out until every vote is in, decide = ranking, aggregation, evaluation "
        "and the result, block = until the round's block is in its replica (only where the next round waited "
        "for it: a round's block is written while the next round runs), between = on to the next round."
    )
    return seconds_table(intro, "stage", "round", "the rounds", t.median_s, t.share)


def write_report(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write the figures and ``report.md`` into ``out_dir`` (default RUN_DIR/report); return the paths."""
    data = load_run(run_dir)
    out = out_dir or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if data.rounds:
        figures += [plot_metric(data, out / f"{data.metric}.png"), plot_quality(data, out / "quality_ranking.png")]
    if data.events:
        figures.append(plot_chain(data, out / "chain_height.png"))
    if data.samples:
        figures.append(plot_resources(data, out / "cpu_memory.png"))
    traffic = bytes_per_round(data)
    if traffic:
        figures.append(plot_traffic(traffic, out / "traffic.png"))
    markdown = out / "report.md"
    markdown.write_text(summary_markdown(data, traffic, figures))
    return [*figures, markdown]
