"""gcv data audit, the fix list's round trip into gcv train --corrections, gcv data label-next and the Label Studio
files, end to end on a tiny random-init resnet18 at 32 px with the embedding output and generated two-colour
images."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from garmentcv.conformal import ConformalPredictor
from garmentcv.curate.audit import AuditConfig, find_duplicates, find_outliers
from garmentcv.curate.embed import embed_images, normalise
from garmentcv.curate.fixes import DEFAULT_DUPLICATE_COSINE, FIX_COLUMNS, Fix, fixes_to_corrections
from garmentcv.curate.label_next import (
    CHOICE_COLUMNS,
    LabelNextConfig,
    Pick,
    choose,
    label_studio_to_manifest,
    write_label_studio_tasks,
)
from garmentcv.data.cli import main as data_main
from garmentcv.data.corrections import DROP, RELABEL, Correction, apply_corrections, read_corrections
from garmentcv.data.layouts import Layout, load_dataset
from tests.curate_fixtures import (
    CLASS_COLOURS,
    build_embedding_model,
    colour_image,
    set_prediction_sets,
    set_unknown_threshold,
)

PER_CLASS = 30
#: The ``--duplicate-cosine`` of the audits of the ``audited`` fixture: this random-init embedder puts the resized
#: copy at about 0.96 of its original, below the default (set from the copies of a trained embedder), so the
#: fixture audits at 0.95 to check how near-duplicates are paired and flagged.
FIXTURE_COSINE = "0.95"
#: Images given the other class's label: (class index, image number).
FLIPPED = ((0, 3), (0, 7), (1, 2), (1, 5))


def _name(c: int, i: int) -> str:
    names = list(CLASS_COLOURS)
    label = names[1 - c] if (c, i) in FLIPPED else names[c]
    return f"{c}{i:03d}_{label}.png"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The graph gcv export --embedding writes (WithEmbedding: logits and the head's input) and its metadata, from a
    random-init resnet18 at 32 px whose BatchNorm statistics come from the two classes' colours."""
    return build_embedding_model(tmp_path_factory.mktemp("curate-model") / "model.onnx")


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, model: Path) -> tuple[Path, Path, Path]:
    """A lamoda-layout set of 2 x 30 images with 4 planted flips, an exact copy and a resized copy; a test split
    holding an exact copy of a training image; the audit run through the CLI. Returns (data, test split, out)."""
    root = tmp_path_factory.mktemp("curate-audit")
    data = root / "data"
    for c, colour in enumerate(CLASS_COLOURS.values()):
        for i in range(PER_CLASS):
            colour_image(data / _name(c, i), colour, seed=100 * c + i)
    shutil.copy(data / _name(0, 5), data / "9000_bluzy.png")  # exact copy, same label
    Image.open(data / _name(1, 10)).resize((56, 72)).save(data / "9001_bryuki.png")  # resized copy
    test = root / "test"
    test.mkdir()
    shutil.copy(data / _name(0, 12), test / "t1.png")  # a training image leaked into the test split
    colour_image(test / "t2.png", list(CLASS_COLOURS.values())[1], seed=777)
    out = root / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out", str(out),
                                          "--split", str(test), "--duplicate-cosine", FIXTURE_COSINE, "-q"])
    assert done.exit_code == 0, done.output
    return data, test, out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_audit_flags_exactly_the_planted_label_flips_with_the_true_class_suggested(audited) -> None:
    _, _, out = audited
    found = {(r["path"], r["given_label"], r["suggested_label"]) for r in _rows(out / "fix_list.csv")
             if r["issue"] == "label"}
    names = list(CLASS_COLOURS)
    assert found == {(_name(c, i), names[1 - c], names[c]) for c, i in FLIPPED}


def test_audit_finds_exact_and_resized_copies_within_and_across_splits(audited) -> None:
    _, test, out = audited
    fixes = {(r["path"], r["issue"]) for r in _rows(out / "fix_list.csv") if r["issue"].endswith("duplicate")}
    assert fixes == {("9000_bluzy.png", "exact_duplicate"), (_name(0, 12), "exact_duplicate"),
                     ("9001_bryuki.png", "near_duplicate")}
    copies = {(r["path"], r["split"], r["copy_of"], r["copy_of_split"], r["exact"])
              for r in _rows(out / "duplicates.csv")}
    assert copies == {("9000_bluzy.png", "data", _name(0, 5), "data", "true"),
                      ("9001_bryuki.png", "data", _name(1, 10), "data", "false"),
                      (_name(0, 12), "data", str(test / "t1.png"), "test", "true")}
    near = next(r for r in _rows(out / "fix_list.csv") if r["issue"] == "near_duplicate")
    assert 0.95 <= float(near["score"]) < 1.0


def test_fix_list_has_exactly_its_columns_in_order_and_rows_by_issue_then_score(audited) -> None:
    _, _, out = audited
    lines = (out / "fix_list.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,given_label,suggested_label,issue,score" == ",".join(FIX_COLUMNS)
    rows = _rows(out / "fix_list.csv")
    order = ["label", "exact_duplicate", "near_duplicate", "unknown", "outlier"]
    keys = [(order.index(r["issue"]), -float(r["score"]), r["path"]) for r in rows]
    assert keys == sorted(keys)
    assert all(len(r["score"].split(".")[1]) == 6 for r in rows)
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert summary["images"] == 2 * PER_CLASS + 2 and summary["folds"] == 5
    assert summary["flagged"]["label"] == 4 and summary["unknown_detector"] is False


def test_fix_list_round_trips_into_the_corrections_gcv_train_applies(audited, tmp_path: Path) -> None:
    data, _, out = audited
    corrections = tmp_path / "corrections.csv"
    done = CliRunner().invoke(data_main, ["corrections", str(out / "fix_list.csv"), "--out", str(corrections)])
    assert done.exit_code == 0, done.output
    dataset, applied = apply_corrections(load_dataset(data), read_corrections(corrections))
    names = list(CLASS_COLOURS)
    assert {(p.name, old, new) for p, old, new in applied.relabelled} == {
        (_name(c, i), names[1 - c], names[c]) for c, i in FLIPPED}
    assert {p.name for p in applied.dropped} == {"9000_bluzy.png", _name(0, 12)}  # exact copies only
    assert len(dataset.samples) == 2 * PER_CLASS + 2 - 2
    assert f"{len(FLIPPED) + 2} corrections ({len(FLIPPED)} relabel, 2 drop) -> {corrections}" in done.output
    assert ("not acted on: near_duplicate 1 row; review them, then run again with --issue label --issue "
            "exact_duplicate --issue unknown --issue near_duplicate to act on them too") in done.output


def test_near_duplicates_are_dropped_when_asked(audited, tmp_path: Path) -> None:
    data, _, out = audited
    corrections = tmp_path / "corrections.csv"
    issues = [arg for issue in ("label", "exact_duplicate", "near_duplicate") for arg in ("--issue", issue)]
    done = CliRunner().invoke(data_main, ["corrections", str(out / "fix_list.csv"), "--out", str(corrections),
                                          *issues])  # fmt: skip
    assert done.exit_code == 0, done.output
    dataset, applied = apply_corrections(load_dataset(data), read_corrections(corrections))
    assert {p.name for p in applied.dropped} == {"9000_bluzy.png", "9001_bryuki.png", _name(0, 12)}
    assert len(dataset.samples) == 2 * PER_CLASS + 2 - 3
    assert "not acted on" not in done.output


def test_a_relabelled_duplicate_is_dropped_and_near_duplicates_and_outliers_only_when_asked() -> None:
    fixes = [Fix("a.png", "x", "y", "label", 0.9), Fix("a.png", "x", "", "near_duplicate", 0.97),
             Fix("b.png", "x", "y", "label", 0.8), Fix("c.png", "x", "", "outlier", 0.5)]
    assert fixes_to_corrections(fixes) == [Correction("a.png", "y", RELABEL), Correction("b.png", "y", RELABEL)]
    assert fixes_to_corrections(fixes, ["label", "near_duplicate"]) == [
        Correction("a.png", "", DROP), Correction("b.png", "y", RELABEL)]
    assert fixes_to_corrections(fixes, ["outlier"]) == [Correction("c.png", "", DROP)]


def test_audit_page_has_a_gallery_per_issue_and_loads_in_chromium(audited) -> None:
    from tests.test_report_browser import _check, _chromium

    _, _, out = audited
    dom, _ = _chromium(out / "audit.html")
    for ident in ("summary", "issue-label", "issue-exact-duplicate", "issue-near-duplicate", "issue-unknown",
                  "issue-outlier"):
        assert f'id="{ident}"' in dom, ident
    assert "the model file has no unknown-item detector" in dom
    shown = len(_rows(out / "fix_list.csv"))
    assert _check(out / "audit.html") == f"images={shown} broken=0 dangling=0"


def test_audit_flags_exactly_the_images_above_the_unknown_detectors_threshold(audited, tmp_path: Path) -> None:
    data, _, _ = audited
    model = build_embedding_model(tmp_path / "with-detector.onnx", unknown_threshold=0.0)
    paths = sorted(p for p in data.iterdir())
    scores = embed_images(model, paths).ood_scores
    threshold = float(np.median(scores))
    set_unknown_threshold(model, threshold)
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out", str(out), "-q",
                                          "--no-report"])
    assert done.exit_code == 0, done.output
    unknown = {r["path"]: float(r["score"]) for r in _rows(out / "fix_list.csv") if r["issue"] == "unknown"}
    expected = {p.name: float(s) for p, s in zip(paths, scores, strict=True) if s > threshold}
    assert unknown.keys() == expected.keys() and 0 < len(expected) < len(paths)
    assert all(abs(unknown[k] - expected[k]) <= 1e-6 for k in expected)
    assert json.loads((out / "audit.json").read_text(encoding="utf-8"))["unknown_detector"] is True
    assert not (out / "audit.html").exists()


def test_audit_runs_on_a_file_gcv_export_writes_with_embedding_in_the_uint8_format(audited, tmp_path: Path) -> None:
    from garmentcv.export.exporter import ExportConfig, export_checkpoint
    from tests.test_export import make_run

    data, test, _ = audited
    cfg = ExportConfig(checkpoint=make_run(tmp_path / "run", "resnet18"), out=tmp_path / "model.onnx",
                       embedding=True, coverage=None)
    model = export_checkpoint(cfg, progress=False).out
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out", str(out), "-q",
                                          "--split", str(test), "--no-report"])
    assert done.exit_code == 0, done.output
    exact = {r["path"] for r in _rows(out / "fix_list.csv") if r["issue"] == "exact_duplicate"}
    assert exact == {"9000_bluzy.png", _name(0, 12)}
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert summary["images"] == 2 * PER_CLASS + 2 and summary["out_of_sample_accuracy"] > 0.8


def test_duplicates_pair_each_copy_with_its_most_similar_earlier_image() -> None:
    x = np.asarray([[1, 0, 0], [0, 1, 0], [0.999, 0.04, 0], [0, 0, 1]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert [(i, j) for i, j, _ in find_duplicates(x, ["a", "b", "c", "b"], 0.95)] == [(0, 2), (1, 3)]


def test_audit_and_label_next_share_one_near_duplicate_default(tmp_path: Path) -> None:
    from garmentcv.curate import label_next

    audit_default = AuditConfig(data=tmp_path, model=tmp_path / "m.onnx").duplicate_cosine
    label_next_default = next(f.default for f in dataclasses.fields(LabelNextConfig) if f.name == "duplicate_cosine")
    assert audit_default == label_next_default == DEFAULT_DUPLICATE_COSINE == label_next.DEFAULT_DUPLICATE_COSINE
    for command in ("audit", "label-next"):
        option = next(p for p in data_main.commands[command].params if p.name == "duplicate_cosine")
        assert option.default == DEFAULT_DUPLICATE_COSINE, command


def test_a_pair_at_cosine_0_99_is_no_near_duplicate_by_default_and_a_pair_at_0_999_is() -> None:
    """Two pairs in orthogonal planes, at cosine 0.99 (images 0, 1) and 0.999 (images 2, 3): the audit's default
    pairs the second only; 0.95, the audit's former default, paired both."""
    x = np.zeros((4, 4), dtype=np.float64)
    x[0, 0], x[1, :2] = 1.0, (0.99, np.sqrt(1 - 0.99 ** 2))
    x[2, 2], x[3, 2:] = 1.0, (0.999, np.sqrt(1 - 0.999 ** 2))
    x = normalise(x)
    hashes = ["a", "b", "c", "d"]
    default = AuditConfig(data=Path("data"), model=Path("model.onnx")).duplicate_cosine
    pairs = find_duplicates(x, hashes, default)
    assert [(i, j) for i, j, _ in pairs] == [(2, 3)] and pairs[0][2] == pytest.approx(0.999, abs=1e-6)
    assert [(i, j) for i, j, _ in find_duplicates(x, hashes, 0.95)] == [(0, 1), (2, 3)]


def test_outliers_lie_beyond_the_far_out_fence() -> None:
    rng = np.random.default_rng(0)
    axes = np.eye(16)
    x = np.vstack([axes[0] + rng.normal(0, 0.05, (30, 16)), axes[1:2]]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, outlying = find_outliers(x, 5, 3.0)
    assert np.flatnonzero(outlying).tolist() == [30]


def test_choose_takes_one_image_per_cluster_before_a_second_and_skips_near_duplicates() -> None:
    centres = np.eye(4, dtype=np.float32)
    rng = np.random.default_rng(1)
    x = np.vstack([c + rng.normal(0, 0.1, (5, 4)) for c in centres]).astype(np.float32)
    x = np.vstack([x, x[:1]])  # index 20: an exact copy of image 0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    picks = choose(x, np.ones(len(x)), 4, seed=0)
    assert sorted(i // 5 for i, _ in picks) == [0, 1, 2, 3]
    everything = [i for i, _ in choose(x, np.ones(len(x)), len(x), duplicate_cosine=0.999, seed=0)]
    assert not ({0, 20} <= set(everything)) and len(everything) == 20
    assert choose(x, np.ones(len(x)), 6, seed=3) == choose(x, np.ones(len(x)), 6, seed=3)
    labelled = x[:5]  # the first cluster is labelled: its images come last
    assert all(i >= 5 for i, _ in choose(x, np.ones(len(x)), 3, labelled=labelled, seed=0))


def _hand_made_pool() -> tuple[np.ndarray, np.ndarray]:
    """Six unit vectors and their uncertainties: A (0) and its exact copy (5), A' and B' at cosine 0.9 of A and B,
    B, and C, far from all and the least uncertain."""
    x = np.asarray([[1, 0, 0], [0.9, 0.435890, 0], [0, 1, 0], [0.435890, 0.9, 0], [0, 0, 1], [1, 0, 0]],
                   dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.asarray([0.9, 0.8, 0.7, 0.85, 0.2, 0.9])


def test_choose_picks_the_image_nearest_each_weighted_cluster_of_the_most_uncertain() -> None:
    x, scores = _hand_made_pool()
    # prefilter 2 x 2: A or its copy (the seed breaks their tie; the other is skipped as a near-duplicate), B', A',
    # B; clusters {A, A'} and {B', B}; the uncertainty pulls each centre to A and B'; ranked A first (more
    # uncertain), then B' at cosine distance 1 - 0.43589
    picks = choose(x, scores, 2, seed=0, prefilter=2)
    assert [i for i, _ in picks] == [5, 3]
    assert [d for _, d in picks] == pytest.approx([1.0, 1 - 0.435890], abs=1e-6)
    assert [i for i, _ in choose(x, scores, 2, seed=4, prefilter=2)] == [0, 3]
    picks = choose(x, scores, 3, seed=0, prefilter=1)  # prefilter 1: uncertainty alone
    assert [i for i, _ in picks] == [5, 3, 1] and picks[2][1] == pytest.approx(0.1, abs=1e-6)


def test_choose_picks_only_among_the_prefiltered_most_uncertain() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = rng.uniform(size=300)
    for n, prefilter in ((5, 1.0), (5, 4.0), (20, 3.0)):
        picks = [i for i, _ in choose(x, scores, n, seed=0, prefilter=prefilter)]
        top = set(np.argsort(-scores)[:int(prefilter * n)].tolist())  # no two of these are near-duplicates here
        assert len(picks) == len(set(picks)) == n and set(picks) <= top, (n, prefilter)
    assert choose(x, scores, 20, seed=7, prefilter=3) == choose(x, scores, 20, seed=7, prefilter=3)
    with pytest.raises(ValueError, match="prefilter must be at least 1, got 0.5"):
        choose(x, scores, 5, prefilter=0.5)


def test_choose_never_picks_two_near_duplicates_at_the_default_cosine() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # a near-copy of each at the default cosine and one just below it (off in another direction, so the two are not
    # near-duplicates of each other): the first is never picked with its original

    def at(cosine: float) -> np.ndarray:
        off = rng.normal(size=(40, 32))
        off -= (off * base).sum(axis=1, keepdims=True) * base
        off /= np.linalg.norm(off, axis=1, keepdims=True)
        return cosine * base + np.sqrt(1 - cosine ** 2) * off

    near, apart = at(DEFAULT_DUPLICATE_COSINE + 0.002), at(DEFAULT_DUPLICATE_COSINE - 0.01)
    x = np.vstack([base, near, apart]).astype(np.float32)
    scores = np.concatenate([np.full(40, 0.5), np.full(40, 0.6), np.full(40, 0.4)])  # the copies most uncertain
    picks = [i for i, _ in choose(x, scores, 120, seed=0)]
    assert len(picks) == 80 and set(picks) == set(range(40, 120))  # each original left out for its near-copy
    similar = x[picks] @ x[picks].T
    np.fill_diagonal(similar, 0)
    assert similar.max() < DEFAULT_DUPLICATE_COSINE
    labelled = [i for i, _ in choose(x, scores, 120, labelled=base[:10], seed=0)]
    assert len(labelled) == 70 and not set(labelled) & (set(range(10)) | set(range(40, 50)))


def test_label_next_is_deterministic_for_a_seed_and_never_picks_two_near_duplicates(model: Path,
                                                                                    tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    for c, colour in enumerate(CLASS_COLOURS.values()):
        for i in range(8):
            colour_image(pool / f"p{c}{i}.png", colour, seed=500 + 10 * c + i)
    shutil.copy(pool / "p00.png", pool / "copy.png")
    Image.open(pool / "p13.png").resize((56, 72)).save(pool / "resized.png")
    runs = []
    for name in ("a", "b"):  # this random-init embedder puts the resized copy at cosine 0.97 of its original
        done = CliRunner().invoke(data_main, ["label-next", str(pool), "--model", str(model), "-n", "17",
                                              "--out", str(tmp_path / name), "--seed", "4", "--duplicate-cosine",
                                              "0.95", "-q"])
        assert done.exit_code == 0, done.output
        runs.append((tmp_path / name / "label_next.csv").read_text(encoding="utf-8"))
    assert runs[0] == runs[1]
    rows = list(csv.DictReader(runs[0].splitlines()))
    assert runs[0].splitlines()[0] == ",".join(CHOICE_COLUMNS)
    chosen = [r["path"] for r in rows]
    assert len(chosen) == len(set(chosen)) == 16  # 18 images, two of them copies: at most 16 picks
    assert not {"p00.png", "copy.png"} <= set(chosen) and not {"p13.png", "resized.png"} <= set(chosen)
    x = embed_images(model, [pool / p for p in chosen]).normalised
    similar = x @ x.T
    np.fill_diagonal(similar, 0)
    assert similar.max() < 0.95
    tasks = json.loads((tmp_path / "a" / "label_studio_tasks.json").read_text(encoding="utf-8"))
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d={p}" for p in chosen]


def test_label_studio_export_reads_back_as_a_manifest_gcv_train_loads(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    for i, name in enumerate(["a.png", "sub/b c.png", "d.png", "e.png"]):
        colour_image(pool / name, (200, 40, 40), seed=i)
    picks = [Pick(i + 1, name, 0.5, 0.5, 1.0, "bluzy", 0.6, 0.2, 0.9)
             for i, name in enumerate(["a.png", "sub/b c.png", "d.png", "e.png"])]
    tasks_file = write_label_studio_tasks(tmp_path / "tasks.json", picks)
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    assert tasks[1]["data"]["image"] == "/data/local-files/?d=sub/b c.png"
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["bluzy"]}
    exported = []  # what Label Studio's JSON export gives: ids, annotations, the task data kept
    for i, task in enumerate(tasks):
        annotations = [{"was_cancelled": False, "result": [{"type": "choices", "from_name": "label",
                                                            "to_name": "image", "value": {"choices": [label]}}]}
                       for label in [["bluzy"], ["bluzy", "bryuki"], [], ["bluzy"]][i]]
        if i == 3:
            annotations[0]["was_cancelled"] = True
        data = {"image": task["data"]["image"]} if i == 1 else task["data"]  # a task without gcv_path: the URL
        exported.append({"id": i + 1, "data": data, "annotations": annotations})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(exported), encoding="utf-8")
    out = tmp_path / "labels" / "manifest.csv"
    done = CliRunner().invoke(data_main, ["from-label-studio", str(export), "--pool", str(pool), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert out.read_text(encoding="utf-8").splitlines() == [
        "path,label", "../pool/a.png,bluzy", "../pool/sub/b c.png,bryuki"]  # the latest annotation of b wins
    summary = label_studio_to_manifest(export, pool, out)
    assert (summary.rows, summary.unlabelled, summary.unmatched) == (2, 2, 0)
    samples = load_dataset(out, Layout.CSV).samples
    assert [(s.path.name, s.label) for s in samples] == [("a.png", "bluzy"), ("b c.png", "bryuki")]


@pytest.fixture(scope="module")
def scored_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model file with every ingredient of the uncertainty (an unknown-item detector and LAC prediction sets whose
    threshold gives half of the pool two labels), and its pool: 2 x 6 images, one in a sub-folder, an exact copy and
    a file that does not decode. Returns (model, pool)."""
    root = tmp_path_factory.mktemp("label-next-run")
    pool = root / "pool"
    for c, colour in enumerate(CLASS_COLOURS.values()):
        for i in range(6):
            colour_image(pool / ("sub" if i == 5 else "") / f"p{c}{i}.png", colour, seed=900 + 10 * c + i)
    shutil.copy(pool / "p01.png", pool / "p01-copy.png")
    (pool / "broken.png").write_bytes(b"not an image")
    model = build_embedding_model(root / "model.onnx", unknown_threshold=0.0)
    probs = embed_images(model, sorted(pool.rglob("p*.png"))).probs
    set_prediction_sets(model, ConformalPredictor("lac", 0.9, (1.0 - float(np.median(probs.min(axis=1))),)))
    return model, pool


def _classify(pool: Path, model: Path, rows: Path, embeddings: Path) -> None:
    from garmentcv.infer.cli import classify_main

    fmt = rows.suffix[1:]
    done = CliRunner().invoke(classify_main, [str(pool), "--model", str(model), "--out", str(rows), "--format", fmt,
                                              "--embeddings", str(embeddings), "--device", "cpu", "-q"])
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize(("rows_name", "embeddings_name"),
                         [("rows.csv", "emb.npy"), ("rows.jsonl", "emb.parquet"), ("rows.parquet", "emb.npy")])
def test_label_next_from_a_classify_run_writes_the_files_of_the_pool_route(scored_model, tmp_path: Path,
                                                                         rows_name: str, embeddings_name: str) -> None:
    model, pool = scored_model
    labelled = tmp_path / "labelled"
    colour_image(labelled / "0001_bluzy.png", CLASS_COLOURS["bluzy"], seed=901)  # a near copy of p01's colours
    colour_image(labelled / "0002_bryuki.png", CLASS_COLOURS["bryuki"], seed=3)
    common = ["-n", "9", "--seed", "2", "--labelled", str(labelled), "--model", str(model), "-q"]
    direct = CliRunner().invoke(data_main, ["label-next", str(pool), "--out", str(tmp_path / "direct"), *common])
    assert direct.exit_code == 0, direct.output
    rows, embeddings = tmp_path / rows_name, tmp_path / embeddings_name
    _classify(pool, model, rows, embeddings)
    from_run = CliRunner().invoke(data_main, ["label-next", "--rows", str(rows), "--embeddings", str(embeddings),
                                              "--out", str(tmp_path / "run"), *common])
    assert from_run.exit_code == 0, from_run.output
    assert "chose 9 of 13 images (1 not decoded, left out)" in from_run.output
    assert "chose 9 of 13 images (1 not decoded, left out)" in direct.output
    for name in ("label_next.csv", "label_studio_tasks.json", "label_studio_config.xml"):  # byte for byte
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    picks = _rows(tmp_path / "run" / "label_next.csv")
    assert [p["rank"] for p in picks] == [str(i) for i in range(1, 10)]
    assert {p["set_size"] for p in picks} == {"1", "2"} and all(p["ood_score"] for p in picks)
    assert not {"p01.png", "p01-copy.png"} <= {p["path"] for p in picks} and "broken.png" not in str(picks)


def _hand_rows(tmp_path: Path, index: list[str]) -> tuple[Path, Path]:
    rows = tmp_path / "rows.csv"
    rows.write_text("path,label,confidence,prediction_set,needs_review,prob_a,prob_b,unknown,ood_score,error\n"
                    "x.png,a,0.700000,a,false,0.700000,0.300000,false,-1.500000,\n"
                    "bad.png,,,,,,,,,cannot decode: truncated\n"
                    "y.png,b,0.550000,a|b,true,0.450000,0.550000,true,0.250000,\n"
                    "z.png,a,0.900000,a,false,0.900000,0.100000,false,-2.000000,\n", encoding="utf-8")
    embeddings = tmp_path / "emb.npy"
    np.save(embeddings, np.eye(len(index), 4, dtype=np.float32))
    (tmp_path / "emb.paths.csv").write_text("path\n" + "".join(f"{p}\n" for p in index), encoding="utf-8")
    return rows, embeddings


def test_label_next_from_rows_skips_error_rows_and_scores_sets_and_unknown_scores(tmp_path: Path) -> None:
    from garmentcv.curate.label_next import LabelNextConfig, label_next, uncertainty

    rows, embeddings = _hand_rows(tmp_path, ["x.png", "bad.png", "y.png", "z.png"])
    result = label_next(LabelNextConfig(pool=None, model=None, n=3, out=tmp_path / "out", rows=rows,
                                        embeddings=embeddings))
    assert (result.pool_images, result.skipped) == (3, 1)
    expected = uncertainty(np.asarray([[0.7, 0.3], [0.45, 0.55], [0.9, 0.1]]), np.asarray([1, 2, 1]),
                           np.asarray([-1.5, 0.25, -2.0]))["combined"]  # ood ranks 1, 2, 0 of 2
    assert np.allclose(expected, [(0.6 + 0.881291 + 0.5 + 0.5) / 4, (0.9 + 0.992774 + 1 + 1) / 4,
                                  (0.2 + 0.468996 + 0.5 + 0) / 4], atol=1e-6)
    assert [(p.path, p.predicted, p.set_size, p.ood_score) for p in result.picks] == [
        ("y.png", "b", 2, 0.25), ("x.png", "a", 1, -1.5), ("z.png", "a", 1, -2.0)]  # orthogonal: by uncertainty
    assert [p.uncertainty for p in result.picks] == pytest.approx([expected[1], expected[0], expected[2]], abs=1e-12)
    config = (tmp_path / "out" / "label_studio_config.xml").read_text(encoding="utf-8")
    assert '<Choice value="a"/>' in config and '<Choice value="b"/>' in config


def test_label_next_names_the_first_row_the_embeddings_lack(tmp_path: Path) -> None:
    rows, embeddings = _hand_rows(tmp_path, ["x.png", "z.png", "w.png"])
    done = CliRunner().invoke(data_main, ["label-next", "--rows", str(rows), "--embeddings", str(embeddings), "-n",
                                          "2", "--out", str(tmp_path / "out")])
    assert done.exit_code == 1
    assert "no embedding for 'y.png', a row of rows.csv" in done.output and str(embeddings) in done.output
    assert not (tmp_path / "out" / "label_next.csv").exists()


def test_label_next_refuses_rows_without_a_probability_per_class(tmp_path: Path) -> None:
    rows = tmp_path / "top.csv"
    rows.write_text("path,label,confidence,top1_label,top1_prob,error\nx.png,a,0.7,a,0.7,\n", encoding="utf-8")
    _, embeddings = _hand_rows(tmp_path, ["x.png"])
    done = CliRunner().invoke(data_main, ["label-next", "--rows", str(rows), "--embeddings", str(embeddings), "-n",
                                          "1", "--out", str(tmp_path / "out")])
    assert done.exit_code == 1 and "no probability per class (written with --topk?)" in done.output


@pytest.mark.parametrize(("given", "message"), [
    ((), "give the images to choose from: POOL with --model"),
    (("POOL", "--model", "MODEL", "--rows", "ROWS", "--embeddings", "EMB"), "not both"),
    (("POOL", "--rows", "ROWS"), "not both"),
    (("POOL",), "POOL needs --model"),
    (("--rows", "ROWS"), "--rows needs --embeddings"),
    (("--embeddings", "EMB"), "--embeddings needs --rows"),
    (("--rows", "ROWS", "--embeddings", "EMB", "--model", "MODEL"), "--model with --rows is used only to embed"),
    (("--rows", "ROWS", "--embeddings", "EMB", "--labelled", "POOL"), "--labelled with --rows needs --model"),
])
def test_label_next_refuses_neither_route_both_or_half_of_one(tmp_path: Path, given: tuple[str, ...],
                                                              message: str) -> None:
    files = {"POOL": tmp_path / "pool", "MODEL": tmp_path / "m.onnx", "ROWS": tmp_path / "rows.csv",
             "EMB": tmp_path / "emb.npy"}
    files["POOL"].mkdir()
    for name in ("MODEL", "ROWS", "EMB"):
        files[name].write_bytes(b"")
    args = [str(files.get(a, a)) for a in given]
    done = CliRunner().invoke(data_main, ["label-next", *args, "-n", "1", "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and message in done.output, done.output
    assert not (tmp_path / "out").exists()


def _section(page: str, ident: str) -> str:
    part = page[page.index(f'<section id="{ident}">'):]
    return part[: part.index("</section>")]


def test_audit_page_overlays_the_explained_class_on_flagged_images_with_a_cam_model(audited,
                                                                                    tmp_path: Path) -> None:
    import re

    from garmentcv.artifact import CAM_NAME, INPUT_FLOAT32, OUTPUT_NAME
    from garmentcv.image import load_crop, normalize
    from garmentcv.infer.model_file import read_model_info
    from garmentcv.infer.runtimes import open_runtime
    from garmentcv.report.heatmap import overlay
    from tests.test_report_browser import _check

    data, _, _ = audited
    model = build_embedding_model(tmp_path / "cam.onnx", cam=True, unknown_threshold=0.0)
    scores = embed_images(model, sorted(data.iterdir())).ood_scores
    set_unknown_threshold(model, float(np.quantile(scores, 0.9)))  # a tenth of the images are unknown
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out", str(out), "-q"])
    assert done.exit_code == 0, done.output
    page = (out / "audit.html").read_text(encoding="utf-8")
    fixes = _rows(out / "fix_list.csv")
    issues = {f["issue"] for f in fixes}
    assert {"label", "unknown"} <= issues  # label errors (the planted flips) and unknowns to show
    info = read_model_info(model)
    session = open_runtime(model, "onnxruntime", "cpu")
    for issue in ("label", "unknown", "outlier"):
        section = _section(page, f"issue-{issue}")
        shown = [f for f in fixes if f["issue"] == issue]
        heatmaps = re.findall(r'<img class="heatmap" src="audit_files/(h\d{5}\.jpg)" alt="([^"]+), heatmap of (\w+)"',
                              section)
        assert [path for _, path, _ in heatmaps] == [f["path"] for f in shown], issue
        for (name, path, explained), fix in zip(heatmaps, shown, strict=True):
            crop = load_crop(data / path, info.preprocessing)  # 64 px: under the 96 px thumbnail, kept as it is
            batch = normalize(crop, info.preprocessing)[None] if info.input_format == INPUT_FLOAT32 else crop[None]
            outputs = session.outputs(batch)
            maps = outputs[CAM_NAME][0]
            if issue == "label":  # a label issue's map is its suggested label's
                assert explained == fix["suggested_label"] and f"heatmap of {explained}</span>" in section
            else:  # the others' is the model's top class
                assert explained == info.classes[int(outputs[OUTPUT_NAME][0].argmax())]
                assert f"heatmap of {explained} (the model&#x27;s top class)</span>" in section
            written = np.asarray(Image.open(out / "audit_files" / name).convert("RGB"), dtype=np.float32)
            assert written.shape == crop.shape and np.abs(written - crop).mean() > 10  # not the plain picture
            # the map of the class named: JPEG-close to its overlay, and closer to it than to the other class's
            errors = {c: float(np.abs(written - overlay(crop, maps[k])).mean()) for k, c in enumerate(info.classes)}
            # JPEG at quality 85 of these noisy pictures is off by about 5 levels; the other class's overlay by 25+
            assert errors[explained] < 8.0 and errors[explained] < min(v for c, v in errors.items() if c != explained)
    for issue in ("exact-duplicate", "near-duplicate"):
        assert "heatmap" not in _section(page, f"issue-{issue}")
    assert page.count('class="heatmap"') == sum(f["issue"] in ("label", "outlier", "unknown") for f in fixes)
    shown = len(fixes)  # every thumbnail or heatmap decodes in chromium
    assert _check(out / "audit.html") == f"images={shown} broken=0 dangling=0"


def test_audit_page_without_a_cam_output_has_no_heatmaps(audited) -> None:
    _, _, out = audited
    page = (out / "audit.html").read_text(encoding="utf-8")
    assert "heatmap" not in page and not list((out / "audit_files").glob("h*.jpg"))


# gcv data audit --embeddings: the embeddings of a gcv classify run, no model run ----------------------------------

#: The files of an audit that hold its findings (audit.json also says which route made them).
FINDINGS = ("fix_list.csv", "duplicates.csv", "out_of_sample.csv")


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_audit_from_a_classify_runs_embeddings_writes_the_files_of_the_model_route(audited, model: Path,
                                                                                  tmp_path: Path, suffix: str) -> None:
    """gcv classify over the folder holding DATA, the test split and more (the first audit's pages), then the audit
    from its embeddings file: the same findings, byte for byte (the file keeps the model's float32 embeddings as
    they are, so nothing is rounded); no unknown check, no heatmaps, and audit.json names the route."""
    data, test, direct = audited
    root = data.parent
    rows, embeddings = tmp_path / "rows.csv", tmp_path / f"emb{suffix}"
    _classify(root, model, rows, embeddings)
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--embeddings", str(embeddings), "--embeddings-root",
                                          str(root), "--out", str(out), "--split", str(test), "--duplicate-cosine",
                                          FIXTURE_COSINE])
    assert done.exit_code == 0, done.output
    for name in FINDINGS:
        assert (out / name).read_bytes() == (direct / name).read_bytes(), name
    assert "audit stage reading embeddings: " in done.stderr and "audit stage embedding: " not in done.stderr
    assert "flagged: 4 label, 2 exact_duplicate, 1 near_duplicate, unknown not checked, " in done.stdout
    assert "unknown check not run: no model file to score unknown items: give --rows" in done.stdout
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    first = json.loads((direct / "audit.json").read_text(encoding="utf-8"))
    assert (summary["route"], summary["model"], summary["embeddings"], summary["embeddings_root"], summary["rows"]) == (
        "embeddings", None, str(embeddings), str(root), None)
    assert (first["route"], first["model"], first["embeddings"], first["embeddings_root"]) == (
        "model", str(model), None, None)
    assert (summary["unknown_check"], summary["unknown_detector"]) == ("not run", False)
    assert summary["unknown_check_note"].startswith("no model file to score unknown items")
    assert {k: summary[k] for k in ("images", "flagged", "duplicates", "settings", "out_of_sample_accuracy")} == {
        k: first[k] for k in ("images", "flagged", "duplicates", "settings", "out_of_sample_accuracy")}
    page = (out / "audit.html").read_text(encoding="utf-8")
    assert "no model file to score unknown items" in page and "heatmap" not in page


def test_audit_from_embeddings_takes_the_unknown_flags_and_scores_of_the_runs_rows(audited, tmp_path: Path) -> None:
    """A model file with an unknown-item detector flagging half of the images: the audit from the classify run's
    embeddings and rows (jsonl, its ood_score at 6 decimals) writes the fix list of the model route, unknowns
    included; the embeddings root defaults to DATA, the folder classified."""
    data, _, _ = audited
    model = build_embedding_model(tmp_path / "with-detector.onnx", unknown_threshold=0.0)
    scores = embed_images(model, sorted(data.iterdir())).ood_scores
    set_unknown_threshold(model, float(np.median(scores)))
    rows, embeddings = tmp_path / "rows.jsonl", tmp_path / "emb.npy"
    _classify(data, model, rows, embeddings)
    common = ["--no-report", "-q"]
    direct = CliRunner().invoke(data_main, ["audit", str(data), "--model", str(model), "--out",
                                            str(tmp_path / "direct"), *common])
    assert direct.exit_code == 0, direct.output
    done = CliRunner().invoke(data_main, ["audit", str(data), "--embeddings", str(embeddings), "--rows", str(rows),
                                          "--out", str(tmp_path / "run"), *common])
    assert done.exit_code == 0, done.output
    for name in FINDINGS:
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    unknown = [r for r in _rows(tmp_path / "run" / "fix_list.csv") if r["issue"] == "unknown"]
    assert len(unknown) == len(scores) // 2  # above the median of an even count
    summary = json.loads((tmp_path / "run" / "audit.json").read_text(encoding="utf-8"))
    assert (summary["unknown_check"], summary["unknown_check_note"], summary["embeddings_root"]) == (
        "rows", None, str(data))
    assert json.loads((tmp_path / "direct" / "audit.json").read_text(encoding="utf-8"))["unknown_check"] == "model"


def test_audit_names_the_first_image_the_embeddings_file_lacks_and_what_to_do(audited, model: Path,
                                                                             tmp_path: Path) -> None:
    data, test, _ = audited
    rows, embeddings = tmp_path / "rows.csv", tmp_path / "emb.parquet"
    _classify(data, model, rows, embeddings)  # DATA only: the test split's images are not in the file
    out = tmp_path / "audit"
    args = ["audit", str(data), "--embeddings", str(embeddings), "--split", str(test), "--out", str(out), "-q"]
    done = CliRunner().invoke(data_main, args)
    assert done.exit_code == 1, done.output
    assert done.stderr == (f"Error: {embeddings}: no embedding for {test / 't1.png'}, which lies outside "
                           f"{data.resolve()}, the folder its paths are relative to; give --embeddings-root, the "
                           "folder that gcv classify run classified, or run gcv classify --embeddings on a folder "
                           "holding DATA and every --split\n")
    # a root the images lie under, with paths the run (over DATA itself) did not give them
    shifted = CliRunner().invoke(data_main, [*args, "--embeddings-root", str(data.parent)])
    assert shifted.exit_code == 1, shifted.output
    first = sorted(data.iterdir())[0].name
    assert shifted.stderr.startswith(f"Error: {embeddings}: no embedding for {data / first}, a row named "
                                     f"'data/{first}' (relative to {data.parent.resolve()}); give --embeddings-root")
    assert not (out / "fix_list.csv").exists()


def test_audit_leaves_out_the_images_the_classify_run_could_not_decode(tmp_path: Path, model: Path) -> None:
    data = tmp_path / "data"
    for c, colour in enumerate(CLASS_COLOURS.values()):
        for i in range(4):
            colour_image(data / f"{c}{i}_{list(CLASS_COLOURS)[c]}.png", colour, seed=40 * c + i)
    (data / "9_bluzy.png").write_bytes(b"not an image")
    rows, embeddings = tmp_path / "rows.parquet", tmp_path / "emb.npy"
    _classify(data, model, rows, embeddings)
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--embeddings", str(embeddings), "--out", str(out),
                                          "--no-report", "-q"])
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert (summary["images"], summary["not_decoded"]) == (8, 1)
    assert [r["path"] for r in _rows(out / "out_of_sample.csv")] == sorted(p.name for p in data.iterdir())[:8]


@pytest.mark.parametrize(("given", "message"), [
    ((), "give the images' embeddings: --model M.onnx"),
    (("--model", "MODEL", "--embeddings", "EMB"), "--model and --embeddings both give the embeddings: give one"),
    (("--model", "MODEL", "--rows", "ROWS"), "--rows goes with --embeddings"),
    (("--model", "MODEL", "--embeddings-root", "DATA"), "--embeddings-root goes with --embeddings"),
])
def test_audit_takes_exactly_one_of_model_and_embeddings(tmp_path: Path, given: tuple[str, ...],
                                                         message: str) -> None:
    files = {"DATA": tmp_path / "data", "MODEL": tmp_path / "m.onnx", "EMB": tmp_path / "emb.npy",
             "ROWS": tmp_path / "rows.csv"}
    files["DATA"].mkdir()
    for name in ("MODEL", "EMB", "ROWS"):
        files[name].write_bytes(b"")
    args = [str(files.get(a, a)) for a in given]
    done = CliRunner().invoke(data_main, ["audit", str(files["DATA"]), *args, "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and done.stderr.startswith(f"Error: {message}"), done.output
    assert not (tmp_path / "out").exists()


def test_parquet_embeddings_read_back_exactly_with_nan_for_error_rows_in_several_row_groups(tmp_path: Path) -> None:
    """read_embeddings reads the parquet columns as arrays (not Python floats): the float32 values exactly, NaN on an
    error row, across row groups; embeddings of two widths are refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from garmentcv.infer.rows import read_embeddings

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 3)).astype(np.float32)
    rows = [{"path": f"{i}.png", "embedding": None if i == 2 else vectors[i].tolist()} for i in range(5)]
    schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])
    with pq.ParquetWriter(tmp_path / "emb.parquet", schema) as writer:
        for part in (rows[:2], rows[2:]):
            writer.write_table(pa.Table.from_pylist(part, schema=schema))
    paths, array = read_embeddings(tmp_path / "emb.parquet")
    assert paths == ["0.png", "1.png", "2.png", "3.png", "4.png"] and array.dtype == np.float32
    assert np.isnan(array[2]).all() and np.array_equal(array[[0, 1, 3, 4]], vectors[[0, 1, 3, 4]])
    pq.write_table(pa.Table.from_pylist([{"path": "a", "embedding": [1.0]}, {"path": "b", "embedding": [1.0, 2.0]}],
                                        schema=schema), tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match=r"mixed.parquet: embeddings of different lengths \[1, 2\]"):
        read_embeddings(tmp_path / "mixed.parquet")


def test_audit_from_embeddings_refuses_rows_without_the_unknown_columns(audited, model: Path, tmp_path: Path) -> None:
    data, _, _ = audited
    rows, embeddings = tmp_path / "rows.csv", tmp_path / "emb.npy"
    _classify(data, model, rows, embeddings)  # a model file without a detector: no unknown or ood_score column
    out = tmp_path / "audit"
    done = CliRunner().invoke(data_main, ["audit", str(data), "--embeddings", str(embeddings), "--rows", str(rows),
                                          "--out", str(out), "-q"])
    assert done.exit_code == 1, done.output
    assert done.stderr == (f"Error: {rows}: the rows have no unknown and ood_score columns (a model file without an "
                           "unknown-item detector, or gcv classify --unknown off); give the rows of a run whose model "
                           "file has one, or leave --rows out to skip the unknown check\n")
    assert not (out / "fix_list.csv").exists()


def test_audit_of_a_manifest_from_the_embeddings_of_a_classify_run_over_that_manifest(audited, model: Path,
                                                                                      tmp_path: Path) -> None:
    """gcv classify reads a path,label manifest as a list of files and names each row as the manifest writes it,
    relative to the manifest's folder, the default --embeddings-root of a manifest: the two routes agree."""
    data, _, _ = audited
    manifest = data.parent / "manifest.csv"
    names = sorted(p.name for p in data.iterdir())
    manifest.write_text("path,label\n" + "".join(f"data/{n},{n.rsplit('_', 1)[1][:-4]}\n" for n in names),
                        encoding="utf-8")
    try:
        rows, embeddings = tmp_path / "rows.csv", tmp_path / "emb.parquet"
        _classify(manifest, model, rows, embeddings)
        for route, given in (("direct", ["--model", str(model)]), ("run", ["--embeddings", str(embeddings)])):
            done = CliRunner().invoke(data_main, ["audit", str(manifest), *given, "--out", str(tmp_path / route),
                                                  "--no-report", "-q"])
            assert done.exit_code == 0, done.output
    finally:
        manifest.unlink()
    for name in FINDINGS:
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    assert [r["path"] for r in _rows(tmp_path / "run" / "out_of_sample.csv")] == [f"data/{n}" for n in names]


def test_label_next_refuses_a_prefilter_below_one(tmp_path: Path) -> None:
    from garmentcv.curate.label_next import LabelNextConfig

    (tmp_path / "pool").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="prefilter must be at least 1, got 0.5"):
        LabelNextConfig(pool=tmp_path / "pool", model=tmp_path / "m.onnx", n=1, out=tmp_path / "out", prefilter=0.5)
    done = CliRunner().invoke(data_main, ["label-next", str(tmp_path / "pool"), "--model", str(tmp_path / "m.onnx"),
                                          "-n", "1", "--out", str(tmp_path / "out"), "--prefilter", "0.5"])
    assert done.exit_code == 2 and "--prefilter" in done.output, done.output
    assert not (tmp_path / "out").exists()
