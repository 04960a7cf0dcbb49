"""Does ``gcv data label-next`` choose labels that teach more than random choice? Pool-based rounds, offline.

Data: the ten Fashion-MNIST classes of its test file (``gcv data fashion-mnist --all-classes``), which the embedder
never saw: per seed, a stratified ``--test-share`` of them is the test set and the rest the unlabelled pool. The
embedder is the curate experiment's (:func:`benchmarks.experiments.curate.build_embedder`: resnet18 trained from
scratch on seven Fashion-MNIST classes of the training file, exported with ``gcv export --embedding``); every image
is embedded once (:func:`garmentcv.curate.embed.embed_images`).

Each run starts from ``--start-per-class`` labelled images per class (drawn with the seed) and labels
``--per-round`` more per round for ``--rounds`` rounds. The model of a round is the audit's linear head on the
normalised embeddings of the labelled images (:func:`garmentcv.curate.audit.linear_head`), refitted each round; its
test accuracy is recorded before the first round and after each. The next labels are chosen by:

* ``label-next``: gcv data label-next's choice with its defaults, :func:`garmentcv.curate.label_next.choose`
  (the image nearest each centre of an uncertainty-weighted k-means of the most uncertain images, no
  near-duplicates) on :func:`garmentcv.curate.label_next.uncertainty`'s ``combined`` score of the head's
  probabilities;
* ``uncertainty``: the images of highest ``combined`` uncertainty alone;
* ``random``: a seeded random draw.

The target: the test accuracy random choice reaches with all its labels, reached by label-next with at most 60% of
them. Writes ``OUT/<machine>/label_next[-NAME].json`` (the rounds' rows, then ``section`` ``mean``: each method and
round over the seeds, and ``target``), ``.md`` (the table of mean accuracy per round) and ``.csv`` (one row per
method, seed and round). Usage::

    python -m benchmarks label_next --work experiments/curate
    python -m benchmarks label_next --tiny --work experiments/curate-tiny
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from benchmarks import options, results
from benchmarks.experiments.curate import build_embedder, ten_class_test_set
from garmentcv.cli_utils import handle_errors, quiet_option, setup_logging, verbose_option
from garmentcv.curate.audit import linear_head
from garmentcv.curate.embed import embed_images, normalise
from garmentcv.curate.label_next import choose, uncertainty
from garmentcv.data.fashion_mnist import DEFAULT_SOURCE

logger = logging.getLogger(__name__)

#: How the next labels are chosen (see the module docstring).
METHODS = ("label-next", "uncertainty", "random")
#: Label-next should reach random choice's final accuracy with at most this share of random choice's labels.
TARGET_SHARE = 0.6


@dataclass(frozen=True)
class Row:
    """One method, seed and round: labels in hand (``labelled``) and the head's test accuracy, 0..1."""

    method: str
    seed: int
    round: int
    labelled: int
    test_accuracy: float


def split(labels: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified pool and test indices, seeded."""
    from sklearn.model_selection import train_test_split

    pool, test = train_test_split(np.arange(len(labels)), test_size=test_share, stratify=labels, random_state=seed)
    return np.sort(pool), np.sort(test)


def next_labels(method: str, x: np.ndarray, labelled: np.ndarray, probs: np.ndarray, n: int,
                rng: np.random.Generator, seed: int) -> np.ndarray:
    """``n`` pool indices (of ``x``, not yet in ``labelled``) chosen by ``method`` from the head's ``probs`` over the
    unlabelled pool (rows in the order of the unlabelled indices)."""
    free = np.setdiff1d(np.arange(len(x)), labelled)
    if method == "random":
        return rng.choice(free, size=min(n, len(free)), replace=False)
    combined = uncertainty(probs)["combined"]
    if method == "uncertainty":
        return free[np.argsort(-combined, kind="stable")[:n]]
    picks = choose(x[free], combined, n, labelled=x[labelled], seed=seed)
    return free[[i for i, _ in picks]]


def run_method(method: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, classes: int,
               seed: int, start_per_class: int, per_round: int, rounds: int) -> list[Row]:
    """One method's rounds from a seeded start of ``start_per_class`` per class; a row per round (0: the start)."""
    rng = np.random.default_rng(seed)
    labelled = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), size=start_per_class, replace=False)
                                       for c in range(classes)]))
    rows = []
    for r in range(rounds + 1):
        head = linear_head().fit(x[labelled], y[labelled])
        accuracy = float((head.predict(x_test) == y_test).mean())
        rows.append(Row(method, seed, r, len(labelled), accuracy))
        logger.info("%s seed %d round %d: %d labels, test accuracy %.4f", method, seed, r, len(labelled), accuracy)
        if r == rounds:
            break
        free = np.setdiff1d(np.arange(len(x)), labelled)
        probs = np.zeros((len(free), classes))
        probs[:, head.classes_] = head.predict_proba(x[free])
        chosen = next_labels(method, x, labelled, probs, per_round, rng, seed)
        labelled = np.sort(np.concatenate([labelled, chosen]))
    return rows


def labels_to_reach(rows: list[Row], method: str, accuracy: float) -> int | None:
    """The fewest labels at which ``method``'s mean accuracy over the seeds reaches ``accuracy`` (``None``: never)."""
    by_round: dict[int, list[Row]] = {}
    for row in rows:
        if row.method == method:
            by_round.setdefault(row.round, []).append(row)
    for r in sorted(by_round):
        if np.mean([x.test_accuracy for x in by_round[r]]) >= accuracy:
            return int(np.mean([x.labelled for x in by_round[r]]))
    return None


def mean_rows(rows: list[Row]) -> list[dict[str, float | int | str]]:
    """Per method and round: labels in hand and the test accuracy's mean, min and max over the seeds (``section``
    ``mean``)."""
    out = []
    for method in METHODS:
        for rnd in sorted({r.round for r in rows}):
            runs = [r for r in rows if r.method == method and r.round == rnd]
            acc = [r.test_accuracy for r in runs]
            out.append({"section": "mean", "method": method, "round": rnd, "labelled": runs[0].labelled,
                        "seeds": len(runs), "test_accuracy": float(np.mean(acc)), "min": min(acc), "max": max(acc)})
    return out


def summary_table(rows: list[Row], seconds: dict[str, float]) -> tuple[str, dict[str, float | int | bool | None]]:
    """Markdown: mean (min..max) test accuracy per round and method, and the target; the target's figures."""
    rounds = sorted({r.round for r in rows})
    lines = ["| round | labels | " + " | ".join(METHODS) + " |", "|---:|---:|" + "---:|" * len(METHODS)]
    for rnd in rounds:
        cells = []
        for method in METHODS:
            acc = [r.test_accuracy for r in rows if r.method == method and r.round == rnd]
            cells.append(f"{np.mean(acc):.4f} ({min(acc):.3f}..{max(acc):.3f})")
        labels = next(r.labelled for r in rows if r.round == rnd)
        lines.append(f"| {rnd} | {labels:,} | " + " | ".join(cells) + " |")
    final = [r for r in rows if r.method == "random" and r.round == rounds[-1]]
    goal = float(np.mean([r.test_accuracy for r in final]))
    budget = int(final[0].labelled)
    needed = labels_to_reach(rows, "label-next", goal)
    uncertain = labels_to_reach(rows, "uncertainty", goal)
    met = needed is not None and needed <= TARGET_SHARE * budget
    lines += ["", f"Random choice reaches {goal:.4f} with {budget:,} labels. Label-next reaches it with "
              f"{'never' if needed is None else f'{needed:,}'} labels"
              f"{'' if needed is None else f' ({needed / budget:.0%})'}; uncertainty alone with "
              f"{'never' if uncertain is None else f'{uncertain:,}'}. Target: at most {TARGET_SHARE:.0%} "
              f"({'met' if met else 'NOT met'}).", "",
              f"Embedder built in {seconds['embedder_seconds']:.0f} s (reused from --work when present); "
              f"{int(seconds['images']):,} images embedded in {seconds['embed_seconds']:.1f} s; the rounds took "
              f"{seconds['rounds_seconds']:.0f} s."]
    target = {"random_final_accuracy": goal, "random_labels": budget, "label_next_labels": needed,
              "uncertainty_labels": uncertain, "target_share": TARGET_SHARE, "met": met}
    return "\n".join(lines) + "\n", target


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("experiments/curate"),
              help="Folder for the data and the embedder (shared with the curate experiment, reused when present).")
@click.option("--start-per-class", type=click.IntRange(min=1), default=20, help="Labelled images per class at first.")
@click.option("--per-round", type=click.IntRange(min=1), default=100, help="Images labelled per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=10, help="Rounds of labelling.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, help="Seeds of the split, start and random draws.")
@click.option("--test-share", type=click.FloatRange(0.05, 0.5), default=0.2,
              help="Share of the ten-class images held out for the test accuracy.")
@click.option("--pretrain-per-class", type=click.IntRange(min=10), default=1000,
              help="Images per class of the embedder's seven classes (when it is built).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, help="Epochs of the embedder's training.")
@click.option("--image-size", type=click.IntRange(min=16), default=32, help="Model input side in px.")
@click.option("--tiny", is_flag=True, help="A few-minute run: 150 pretraining per class, 1 epoch, 1 seed, 3 rounds.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SOURCE,
              help="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist).")
@options.click_shared(repeats=None, quiet=False)
@quiet_option
@verbose_option
@handle_errors
def main(work: Path, start_per_class: int, per_round: int, rounds: int, seeds: int, test_share: float,
         pretrain_per_class: int, epochs: int, image_size: int, tiny: bool, source: Path, out: Path,
         name: str | None, quiet: bool, verbose: bool) -> None:
    """Label-next against random and uncertainty choice: test accuracy per round of labelling."""
    setup_logging(quiet, verbose)
    if tiny:
        pretrain_per_class, epochs, seeds, rounds = 150, 1, 1, 3
        name = name or "tiny"
    begun = results.start("label_next")
    started = time.perf_counter()
    model, _ = build_embedder(work, pretrain_per_class, pretrain_per_class, epochs, image_size, source)
    built = time.perf_counter() - started
    paths, labels, classes = ten_class_test_set(work, source)
    started = time.perf_counter()
    embedded = embed_images(model, paths)
    embed_seconds = time.perf_counter() - started
    index = {p: i for i, p in enumerate(paths)}
    order = np.asarray([index[p] for p in embedded.paths])
    x_all, y_all = normalise(embedded.embeddings), labels[order]
    started = time.perf_counter()
    rows: list[Row] = []
    for seed in range(seeds):
        pool, test = split(y_all, test_share, seed)
        for method in METHODS:
            rows += run_method(method, x_all[pool], y_all[pool], x_all[test], y_all[test], len(classes), seed,
                               start_per_class, per_round, rounds)
    timing = {"embedder_seconds": built, "embed_seconds": embed_seconds, "images": float(len(paths)),
              "rounds_seconds": time.perf_counter() - started}
    text, target = summary_table(rows, timing)
    results.write(begun, [dataclasses.asdict(r) for r in rows] + mean_rows(rows)
                  + [{"section": "target", **target}], out, name, markdown=text,
                  csv_rows=[dataclasses.asdict(r) for r in rows])
    if not quiet:
        click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
