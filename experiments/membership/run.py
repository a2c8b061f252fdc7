"""Membership inference against GD-DP federated training on MNIST: what the privacy is worth.

    .venv/bin/python experiments/membership/run.py --seeds 0 1 2 --agents 10 --rounds 20 \
        --out experiments/membership

For every seed and every setting (``off``, and ``laplace`` / ``gaussian`` at each ``--epsilons``,
each agent's total budget for the whole task), one federated run of ``--agents`` IID agents, each
holding one of ``--shards`` (30) MNIST shards, with the live system's Trainer (GD-DP optimizer, ghost
clipping), accountant and FedAvg; the noise multiplier is calibrated for the whole task
(``--rounds`` x steps per round), as ``experiments/dp_accuracy/run.py`` does. Agent 0 is the target.
Its training set also holds canaries: ``--canaries`` images of the unused pool (below) given a random
wrong label for each entry of ``--canary-repeats`` (default: 10 put in once, 10 put in 5 times each). The attacks are run against:

- ``update@R``: agent 0's local model after its local training in round R (what every peer sees),
  with the global model it started from (also seen by every peer) as the attacker's reference;
- ``final``: the final global model (FedAvg of the last round);
- ``control``: the negative control, ``--control-model`` (mlp:128) trained by agent 0 alone for
  ``--control-epochs`` local epochs from the initial model (batch 32, lr 0.2), same data, same settings.

Members: agent 0's own training records (the canaries left out). Non-members: as many records of
the same pool that no agent trains on (the shards of agents that are not run), drawn per seed.
Attacks (scores; AUC by sklearn's roc_auc_score):
- ``loss``: threshold on the per-record loss (member score -loss);
- ``loss_drop`` (updates and control only): threshold on loss(model before) - loss(update);
- ``logreg``: logistic regression on (loss, log loss, max prob, entropy[, the reference model's loss,
  log loss, loss drop]), AUC of out-of-fold probabilities from 5-fold stratified cross-validation.
Canaries: per canary, the rank of its (wrong) canary label's loss among the 9 wrong labels of the same
image (1 = the lowest loss; uniform on 1..9, mean 5, when nothing is memorised), and the loss gap.

Writes results.csv (one row per target, mechanism, epsilon, seed, attack), canaries.csv (one row
per canary), summary.csv and canary_summary.csv (over seeds), and auc_vs_epsilon.png. Rows of a
(setting, seed) pair already in results.csv are kept and the pair is skipped, so a run can be resumed.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

CLIP = {"laplace": 50.0, "gaussian": 3.0}  # Laplace: L1 norm; Gaussian: L2 norm
RESULT_FIELDS = [
    "target",
    "model",
    "mechanism",
    "epsilon_budget",
    "epsilon_spent",
    "delta",
    "clip",
    "noise_multiplier",
    "seed",
    "round",
    "attack",
    "auc",
    "n_members",
    "n_nonmembers",
    "member_accuracy",
    "nonmember_accuracy",
    "test_accuracy",
]
CANARY_FIELDS = [
    "target",
    "mechanism",
    "epsilon_budget",
    "seed",
    "canary",
    "repeats",
    "true_label",
    "canary_label",
    "rank_wrong9",
    "loss_gap",
    "rank_same_class",
    "n_same_class",
    "exposure_bits",
    "predicted_canary_label",
]


def settings(args: argparse.Namespace) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = [("off", math.inf)]
    for mechanism in args.mechanisms:
        out += [(mechanism, float(e)) for e in args.epsilons]
    return out


# ---------------------------------------------------------------- data


class Data:
    """Agent shards, agent 0's training set with canaries, the non-member pool, the canaries."""

    def __init__(self, ds, seed: int, args: argparse.Namespace) -> None:
        from bpcv.data import make_shard, partition_iid

        self.ds = ds
        self.shards = [make_shard(ds, i, args.shards, "iid", seed=seed) for i in range(args.agents)]
        rng = np.random.default_rng(10_000 + seed)
        # the pool no agent trains on: the shards of agents that are not run (or the test set if none)
        unused = partition_iid(len(ds.y_train), args.shards, seed)[args.agents :]
        if unused:
            pool_x, pool_y, pool = ds.x_train, ds.y_train, np.concatenate(unused)
        else:
            pool_x, pool_y, pool = ds.x_test, ds.y_test, np.arange(len(ds.y_test))
        s0 = self.shards[0]
        self.members_x, self.members_y = s0.x_train, s0.y_train
        # canaries: pool images given a random wrong label (``--canaries`` of them for each entry of
        # ``--canary-repeats``, each put in that many times); non-members: as many pool records as members
        count = args.canaries * len(args.canary_repeats)
        pick = rng.choice(pool, size=count + len(self.members_y), replace=False)
        canaries, nonmembers = pick[:count], pick[count:]
        self.canary_x = pool_x[canaries]
        self.canary_true = pool_y[canaries]
        self.canary_label = (self.canary_true + rng.integers(1, ds.num_classes, size=count)) % ds.num_classes
        self.canary_repeats = np.repeat(np.asarray(args.canary_repeats), args.canaries)
        self.x0 = np.concatenate([s0.x_train, np.repeat(self.canary_x, self.canary_repeats, axis=0)])
        self.y0 = np.concatenate([s0.y_train, np.repeat(self.canary_label, self.canary_repeats)])
        self.nonmembers_x, self.nonmembers_y = pool_x[nonmembers], pool_y[nonmembers]
        self.x_test, self.y_test = ds.x_test, ds.y_test
        self.attack_x = np.concatenate([self.members_x, self.nonmembers_x])
        self.attack_y = np.concatenate([self.members_y, self.nonmembers_y])
        self.is_member = np.concatenate([np.ones(len(self.members_y)), np.zeros(len(self.nonmembers_y))])

    def train_sets(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.x0, self.y0)] + [(s.x_train, s.y_train) for s in self.shards[1:]]


# ---------------------------------------------------------------- attacks


def record_features(logp: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-record attack features from log-probabilities (taken from the logits: no softmax underflow)."""
    p = np.exp(logp)
    loss = -logp[np.arange(len(labels)), labels]
    return {
        "loss": loss,
        "log_loss": np.log(loss + 1e-12),
        "max_prob": p.max(axis=1),
        "entropy": -(p * logp).sum(axis=1),
        "correct": (np.argmax(logp, axis=1) == labels).astype(np.float64),
    }


def midrank(values: np.ndarray, x: float) -> float:
    """1 + how many of ``values`` are below ``x``, ties counted half (a saturated model ties often)."""
    return 1.0 + float(np.sum(values < x)) + 0.5 * float(np.sum(values == x))


def attack_aucs(is_member: np.ndarray, feats: dict, before: dict | None, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {"loss": float(roc_auc_score(is_member, -feats["loss"]))}
    columns = [feats["loss"], feats["log_loss"], feats["max_prob"], feats["entropy"]]
    if before is not None:
        drop = before["loss"] - feats["loss"]
        out["loss_drop"] = float(roc_auc_score(is_member, drop))
        columns += [before["loss"], before["log_loss"], drop]
    x = np.column_stack(columns)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    prob = cross_val_predict(clf, x, is_member, cv=folds, method="predict_proba")[:, 1]
    out["logreg"] = float(roc_auc_score(is_member, prob))
    return out


def canary_rows(logp: np.ndarray, attack_logp: np.ndarray, data: Data) -> list[dict]:
    """Per canary (image x of true class t given the wrong label c), two exposures:
    - rank of loss(x, c) among the image's 9 wrong labels (1 = lowest; uniform on 1..9 when nothing is
      memorised), and the loss gap (mean loss of the 8 other wrong labels - loss(x, c));
    - rank of loss(x, c) among loss(x', c) for the non-member images x' of the same class t (1 = lowest;
      uniform on 1..N+1 when nothing is memorised, whatever the model's bias between classes), and
      exposure = log2(N+1) - log2(rank) in bits (mean about 1.4 when nothing is memorised).
    Ranks count ties half."""
    losses = -logp
    ref = ~(data.is_member == 1)
    ref_losses = -attack_logp[ref]
    ref_labels = data.attack_y[ref]
    rows = []
    for k in range(len(data.canary_label)):
        true, canary = int(data.canary_true[k]), int(data.canary_label[k])
        wrong = [c for c in range(losses.shape[1]) if c != true]
        others = [c for c in wrong if c != canary]
        rank = midrank(losses[k, others], losses[k, canary])
        same = ref_losses[ref_labels == true, canary]
        ref_rank = midrank(same, losses[k, canary])
        rows.append(
            {
                "canary": k,
                "repeats": int(data.canary_repeats[k]),
                "true_label": true,
                "canary_label": canary,
                "rank_wrong9": rank,
                "loss_gap": round(float(losses[k, others].mean() - losses[k, canary]), 4),
                "rank_same_class": ref_rank,
                "n_same_class": len(same),
                "exposure_bits": round(math.log2(len(same) + 1) - math.log2(ref_rank), 4),
                "predicted_canary_label": int(np.argmax(logp[k]) == canary),
            }
        )
    return rows


# ---------------------------------------------------------------- training


def noise_for(mechanism: str, budget: float, sizes: list[int], task, rounds: int, delta: float) -> float:
    """One noise multiplier for all agents: the largest any agent needs for its budget over the task."""
    from edge_agent.privacy.accountant import calibrate_noise_multiplier
    from edge_agent.privacy.settings import steps_per_round

    return max(
        calibrate_noise_multiplier(
            mechanism, budget, min(1.0, task.batch_size / n), rounds * steps_per_round(n, task), delta
        )
        for n in sorted(set(sizes))
    )


def spent(mechanism: str, noise: float, n: int, task, rounds: int, delta: float) -> float:
    from edge_agent.privacy.accountant import epsilon_for
    from edge_agent.privacy.settings import steps_per_round

    if mechanism == "off":
        return math.inf
    return epsilon_for(mechanism, noise, min(1.0, task.batch_size / n), rounds * steps_per_round(n, task), delta)


class Evaluator:
    """Scores one set of weights: attack features of members/non-members, canary losses, accuracy."""

    def __init__(self, trainer, data: Data) -> None:
        import tensorflow as tf

        self.trainer, self.data = trainer, data
        model = trainer.model
        # the logits: the model without its final softmax layer (same weights)
        assert isinstance(model.layers[-1], tf.keras.layers.Activation), "expected a final softmax layer"
        self.logits = tf.keras.Model(model.inputs, model.layers[-2].output)

    def log_probs(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import log_softmax

        from bpcv.metrics import predict

        return log_softmax(predict(self.logits, x).astype(np.float64), axis=1)

    def __call__(self, weights) -> dict:
        self.trainer.model.set_weights(weights)
        d = self.data
        logp = self.log_probs(d.attack_x)
        feats = record_features(logp, d.attack_y)
        m = d.is_member == 1
        return {
            "feats": feats,
            "logp": logp,
            "canary_logp": self.log_probs(d.canary_x),
            "member_accuracy": float(feats["correct"][m].mean()),
            "nonmember_accuracy": float(feats["correct"][~m].mean()),
            "test_accuracy": float(np.mean(np.argmax(self.log_probs(d.x_test), axis=1) == d.y_test)),
        }


def federated_run(data: Data, mechanism: str, budget: float, seed: int, args: argparse.Namespace) -> list[tuple]:
    """One federated task; returns (target, round, epsilon_spent, evaluation, reference evaluation)."""
    from bpcv.task import TaskSpec
    from coordinator.aggregate import fedavg
    from edge_agent.privacy.settings import PrivacySettings
    from edge_agent.trainer import Trainer

    task = TaskSpec(
        task_id="membership",
        coordinator="c",
        model=args.model,
        local_epochs=1,
        batch_size=args.batch,
        learning_rate=args.lr,
    )
    sets = data.train_sets()
    sizes = [len(y) for _, y in sets]
    privacy, noise = None, 0.0
    if mechanism != "off":
        noise = noise_for(mechanism, budget, sizes, task, args.rounds, args.delta)
        privacy = PrivacySettings(mechanism, CLIP[mechanism], noise)
    trainer = Trainer(task, data.ds.input_shape, data.ds.num_classes, privacy)
    evaluate = Evaluator(trainer, data)
    weights = trainer.model.get_weights()
    attack_rounds = {args.rounds if r == "last" else int(r) for r in args.attack_rounds}
    out = []
    for round_no in range(1, args.rounds + 1):
        updates = [
            trainer.train(weights, x, y, seed=seed * 100003 + round_no * 1009 + i)[0] for i, (x, y) in enumerate(sets)
        ]
        if round_no in attack_rounds:
            eps = spent(mechanism, noise, sizes[0], task, round_no, args.delta)
            out.append((f"update@{round_no}", round_no, eps, evaluate(updates[0]), evaluate(weights)))
        weights = fedavg(updates, sizes)
    eps = spent(mechanism, noise, sizes[0], task, args.rounds, args.delta)
    out.append(("final", args.rounds, eps, evaluate(weights), None))
    return [(t, r, e, ev, ref, noise) for t, r, e, ev, ref in out]


def control_run(data: Data, mechanism: str, budget: float, seed: int, args: argparse.Namespace) -> list[tuple]:
    """The negative control: agent 0 alone trains an overfitting model for many local epochs."""
    from bpcv.task import TaskSpec
    from edge_agent.privacy.settings import PrivacySettings
    from edge_agent.trainer import Trainer

    task = TaskSpec(
        task_id="control",
        coordinator="c",
        model=args.control_model,
        local_epochs=args.control_epochs,
        batch_size=32,
        learning_rate=0.2,
    )
    n = len(data.y0)
    privacy, noise = None, 0.0
    if mechanism != "off":
        noise = noise_for(mechanism, budget, [n], task, 1, args.delta)
        privacy = PrivacySettings(mechanism, CLIP[mechanism], noise)
    trainer = Trainer(task, data.ds.input_shape, data.ds.num_classes, privacy)
    evaluate = Evaluator(trainer, data)
    start = trainer.model.get_weights()
    before = evaluate(start)
    weights, _ = trainer.train(start, data.x0, data.y0, seed=seed * 100003 + 7)
    eps = spent(mechanism, noise, n, task, 1, args.delta)
    return [("control", 1, eps, evaluate(weights), before, noise)]


# ---------------------------------------------------------------- bookkeeping


def done_pairs(path: Path) -> set[tuple[str, str, int]]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {
            (r["target"].split("@")[0], f"{r['mechanism']}:{r['epsilon_budget']}", int(r["seed"]))
            for r in csv.DictReader(f)
        }


def append(path: Path, fields: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def fmt_eps(budget: float) -> str:
    return "inf" if math.isinf(budget) else f"{budget:g}"


def record(
    results: list[tuple], data: Data, mechanism: str, budget: float, seed: int, model: str, args, out: Path
) -> None:
    rows, crow = [], []
    for target, round_no, eps, ev, ref, noise in results:
        aucs = attack_aucs(data.is_member, ev["feats"], ref["feats"] if ref else None, seed)
        for attack, auc in aucs.items():
            rows.append(
                {
                    "target": target,
                    "model": model,
                    "mechanism": mechanism,
                    "epsilon_budget": fmt_eps(budget),
                    "epsilon_spent": "inf" if math.isinf(eps) else round(eps, 4),
                    "delta": args.delta if mechanism != "off" else 0,
                    "clip": CLIP.get(mechanism, 0),
                    "noise_multiplier": round(noise, 5),
                    "seed": seed,
                    "round": round_no,
                    "attack": attack,
                    "auc": round(auc, 5),
                    "n_members": int(data.is_member.sum()),
                    "n_nonmembers": int((1 - data.is_member).sum()),
                    "member_accuracy": round(ev["member_accuracy"], 4),
                    "nonmember_accuracy": round(ev["nonmember_accuracy"], 4),
                    "test_accuracy": round(ev["test_accuracy"], 4),
                }
            )
        for row in canary_rows(ev["canary_logp"], ev["logp"], data):
            crow.append(
                {"target": target, "mechanism": mechanism, "epsilon_budget": fmt_eps(budget), "seed": seed, **row}
            )
        shown = " ".join(f"{a} {v:.3f}" for a, v in aucs.items())
        mine = [r for r in crow if r["target"] == target and r["repeats"] == max(args.canary_repeats)]
        ranks = np.mean([r["rank_wrong9"] for r in mine])
        bits = np.mean([r["exposure_bits"] for r in mine])
        print(
            f"  {target:<10} eps spent {eps:>7.3f} test acc {ev['test_accuracy']:.4f} "
            f"member/non acc {ev['member_accuracy']:.3f}/{ev['nonmember_accuracy']:.3f} | AUC {shown} "
            f"| canaries x{max(args.canary_repeats)}: rank (of 9) {ranks:.2f}, exposure {bits:.2f} bits",
            flush=True,
        )
    append(out / "results.csv", RESULT_FIELDS, rows)
    append(out / "canaries.csv", CANARY_FIELDS, crow)


# ---------------------------------------------------------------- summary and figure


def ci(values: list[float]) -> tuple[float, float, float, float]:
    """mean, half-width 1.96 sd / sqrt(n), min, max."""
    a = np.asarray(values, dtype=float)
    half = 1.96 * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
    return float(a.mean()), float(half), float(a.min()), float(a.max())


def order_key(mechanism: str, eps: str) -> tuple:
    return ({"off": 0, "gaussian": 1, "laplace": 2}.get(mechanism, 3), -float(eps))


def summarise(out: Path) -> None:
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["mechanism"], r["epsilon_budget"], r["attack"]), []).append(r)
    summary = []
    for (target, mechanism, eps, attack), rs in groups.items():
        mean, half, lo, hi = ci([float(r["auc"]) for r in rs])
        summary.append(
            {
                "target": target,
                "mechanism": mechanism,
                "epsilon_budget": eps,
                "epsilon_spent": rs[0]["epsilon_spent"],
                "attack": attack,
                "seeds": len(rs),
                "auc_mean": round(mean, 4),
                "auc_ci95_half": round(half, 4),
                "auc_min": round(lo, 4),
                "auc_max": round(hi, 4),
                "test_accuracy_mean": round(float(np.mean([float(r["test_accuracy"]) for r in rs])), 4),
                "member_accuracy_mean": round(float(np.mean([float(r["member_accuracy"]) for r in rs])), 4),
                "nonmember_accuracy_mean": round(float(np.mean([float(r["nonmember_accuracy"]) for r in rs])), 4),
            }
        )
    summary.sort(key=lambda s: (s["target"], order_key(s["mechanism"], s["epsilon_budget"]), s["attack"]))
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)

    with (out / "canaries.csv").open() as f:
        crows = list(csv.DictReader(f))
    cgroups: dict[tuple, list[dict]] = {}
    for r in crows:
        cgroups.setdefault((r["target"], r["mechanism"], r["epsilon_budget"], int(r["repeats"])), []).append(r)
    csum = []
    for (target, mechanism, eps, repeats), rs in cgroups.items():
        per_seed_rank: dict[str, list[float]] = {}
        per_seed_bits: dict[str, list[float]] = {}
        for r in rs:
            per_seed_rank.setdefault(r["seed"], []).append(float(r["rank_wrong9"]))
            per_seed_bits.setdefault(r["seed"], []).append(float(r["exposure_bits"]))
        mean, half, lo, hi = ci([float(np.mean(v)) for v in per_seed_rank.values()])
        csum.append(
            {
                "target": target,
                "mechanism": mechanism,
                "epsilon_budget": eps,
                "repeats": repeats,
                "canaries": len(rs),
                "mean_rank_wrong9": round(mean, 3),
                "rank_ci95_half": round(half, 3),
                "top1_share": round(float(np.mean([float(r["rank_wrong9"]) == 1 for r in rs])), 3),
                "mean_exposure_bits": round(float(np.mean([float(r["exposure_bits"]) for r in rs])), 3),
                "exposure_ci95_half": round(ci([float(np.mean(v)) for v in per_seed_bits.values()])[1], 3),
                "top1_same_class_share": round(float(np.mean([float(r["rank_same_class"]) == 1 for r in rs])), 3),
                "median_loss_gap": round(float(np.median([float(r["loss_gap"]) for r in rs])), 3),
                "predicted_canary_share": round(float(np.mean([int(r["predicted_canary_label"]) for r in rs])), 3),
            }
        )
    csum.sort(key=lambda s: (s["target"], s["repeats"], order_key(s["mechanism"], s["epsilon_budget"])))
    with (out / "canary_summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csum[0]))
        writer.writeheader()
        writer.writerows(csum)
    plot(summary, out / "auc_vs_epsilon.png")


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({s["target"] for s in summary}, key=lambda t: (t == "control", t == "final", t))
    eps_values = sorted({float(s["epsilon_budget"]) for s in summary if s["mechanism"] != "off"}, reverse=True)
    xs = {fmt_eps(e): i + 1 for i, e in enumerate(eps_values)} | {"inf": 0}
    cols = 2
    rows = math.ceil(len(targets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 4.2 * rows), sharey=True, squeeze=False)
    titles = {
        "final": "final global model",
        "control": "negative control: mlp:128, 30 local epochs, agent 0 alone",
    }
    styles = {"loss": "-", "loss_drop": ":", "logreg": "--"}
    colours = {"gaussian": "tab:blue", "laplace": "tab:red"}
    for ax, target in zip(axes.flat, targets):
        for mechanism in ("gaussian", "laplace"):
            for attack, style in styles.items():
                pts = [
                    s
                    for s in summary
                    if s["target"] == target
                    and s["attack"] == attack
                    and (s["mechanism"] == mechanism or s["mechanism"] == "off")
                ]
                if not pts:
                    continue
                pts.sort(key=lambda s: xs[s["epsilon_budget"]])
                x = [xs[s["epsilon_budget"]] + (0.06 if mechanism == "laplace" else -0.06) for s in pts]
                ax.errorbar(
                    x,
                    [s["auc_mean"] for s in pts],
                    yerr=[s["auc_ci95_half"] for s in pts],
                    fmt=style,
                    marker="o",
                    ms=3,
                    capsize=2,
                    color=colours[mechanism],
                    label=f"{mechanism}, {attack}",
                )
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.axhline(0.55, color="black", lw=0.8, ls="--")
        ax.set_xticks(list(xs.values()), ["off" if k == "inf" else k for k in xs])
        ax.set_xlabel("total epsilon per agent (task budget)")
        ax.set_title(titles.get(target, f"agent 0's update, round {target.split('@')[-1]}"), fontsize=9)
    for ax in axes.flat[len(targets) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("membership AUC (mean over seeds, ±1.96 sd/√n)")
    axes.flat[len(targets) - 1].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        "Membership inference vs GD-DP budget (MNIST, wavelet:2,4,4, 10 agents, 20 rounds; dashed: the 0.55 target)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--agents", type=int, default=10, help="agents that train (shards 0..agents-1)")
    parser.add_argument("--shards", type=int, default=30, help="the IID split (1,500 training records each at 30)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--attack-rounds", nargs="+", default=["10", "last"], help="rounds whose update is attacked")
    parser.add_argument("--mechanisms", nargs="+", default=["gaussian", "laplace"])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[10.0, 3.0, 1.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--model", default="wavelet:2,4,4")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--canaries", type=int, default=10, help="canaries per entry of --canary-repeats")
    parser.add_argument("--canary-repeats", type=int, nargs="+", default=[1, 5], help="copies of each canary")
    parser.add_argument("--control-model", default="mlp:128")
    parser.add_argument("--control-epochs", type=int, default=30)
    parser.add_argument("--skip-federated", action="store_true")
    parser.add_argument("--skip-control", action="store_true")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the summaries and figure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="experiments/membership")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        summarise(out)
        return

    from bpcv.models import configure_tensorflow

    configure_tensorflow(args.threads)
    import tensorflow as tf

    from bpcv.data import load_dataset

    ds = load_dataset("mnist")
    done = done_pairs(out / "results.csv")
    started = time.monotonic()
    jobs = []
    if not args.skip_control:
        jobs.append(("control", control_run, args.control_model))
    if not args.skip_federated:
        jobs.append(("federated", federated_run, args.model))
    for kind, run, model in jobs:
        for mechanism, budget in settings(args):
            for seed in args.seeds:
                key = ("control" if kind == "control" else "update", f"{mechanism}:{fmt_eps(budget)}", seed)
                if key in done:
                    print(f"{kind} {mechanism} eps {fmt_eps(budget)} seed {seed}: already in results.csv, skipped")
                    continue
                t0 = time.monotonic()
                data = Data(ds, seed, args)
                results = run(data, mechanism, budget, seed, args)
                noise = results[0][-1]
                print(
                    f"{kind} {mechanism} eps {fmt_eps(budget)} seed {seed} (noise multiplier {noise:.3f}): "
                    f"{time.monotonic() - t0:.1f}s, {time.monotonic() - started:.0f}s total",
                    flush=True,
                )
                record(results, data, mechanism, budget, seed, model, args, out)
                tf.keras.backend.clear_session()
    summarise(out)
    print(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
