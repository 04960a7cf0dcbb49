"""The embedding output, prediction sets and unknown-item plumbing, end to end on a tiny random-init resnet18 at
32 px: gcv export writes and gates them, both runtimes return them, gcv classify writes them into the rows and the
embeddings file."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from garmentcv.artifact import (
    EMBEDDING_NAME,
    INPUT_FLOAT32,
    OOD_SCORE_NAME,
    OUTPUT_NAME,
    ModelInfo,
    UnknownDetector,
)
from garmentcv.calibration import softmax
from garmentcv.conformal import ConformalPredictor, class_scores
from garmentcv.errors import ExportError, ModelFileError
from garmentcv.export import checks, runtime_gates
from garmentcv.export.embedding import WithEmbedding
from garmentcv.export.exporter import ExportConfig, export_checkpoint, split_held_out
from garmentcv.image import load_input
from garmentcv.infer.classify import ClassifyConfig, ClassifyUsageError
from garmentcv.infer.engines.local import classify_folder
from garmentcv.infer.model_file import read_model_info
from garmentcv.infer.rows import write_rows
from garmentcv.infer.runtimes import open_runtime, openvino_installed
from garmentcv.models import MODELS, build_model, get_spec
from tests.conftest import build_onnx_model
from tests.test_export import CLASSES, EXTRA_ARCHS, make_run

COVERAGE = 0.8  # 6 held-out images of 12 are enough for 80% (min_images(0.8) == 4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A run folder, its FP32 export with the embedding output and prediction sets, and a folder of its
    validation images."""
    root = tmp_path_factory.mktemp("embed")
    ckpt = make_run(root / "run", "resnet18")
    cfg = ExportConfig(checkpoint=ckpt, out=root / "model.onnx", input_format=INPUT_FLOAT32, embedding=True,
                       coverage=COVERAGE)
    result = export_checkpoint(cfg, progress=False)
    with open(root / "run" / "val.csv", encoding="utf-8") as handle:
        val = [(Path(r["path"]), r["label"]) for r in csv.DictReader(handle)]
    folder = root / "val"
    folder.mkdir()
    for path, _ in val:
        shutil.copy(path, folder / path.name)
    return ckpt, result, val, folder


def _torch_embedding(ckpt: Path, inputs: np.ndarray) -> np.ndarray:
    state = torch.load(ckpt, weights_only=True)
    model = build_model("resnet18", len(CLASSES), "none").model
    model.load_state_dict(state["state_dict"])
    with torch.no_grad():
        return WithEmbedding(model.eval(), "fc").eval()(torch.from_numpy(inputs))[1].numpy()


def test_export_declares_gates_and_reads_back_the_embedding_and_sets(exported) -> None:
    _, r, _, _ = exported
    info = read_model_info(r.out)
    assert info == r.info
    assert info.outputs == (OUTPUT_NAME, EMBEDDING_NAME) and info.embedding_dim == 512 and info.format_version == 3
    assert r.embedding_parity is not None and r.embedding_parity.passed
    assert r.embedding_parity.min_cosine >= checks.EMBEDDING_MIN_COSINE["fp32"] and r.embedding_parity.images == 12
    assert all(g.embedding_min_cosine is not None for g in info.runtime_gates)
    assert info.conformal is not None and info.conformal.method == "lac" and info.conformal.images == 6
    assert info.metrics["export"]["temperature_images"] == 6


def test_conformal_qhat_is_the_hand_computed_quantile_of_the_held_out_half(exported) -> None:
    _, r, val, _ = exported
    model = open_runtime(r.out, "onnxruntime", "cpu")
    inputs = np.stack([load_input(p, r.info.preprocessing) for p, _ in val])
    targets = np.array([CLASSES.index(label) for _, label in val])
    probs = softmax(model.logits(inputs), r.info.applied_temperature)
    _, held = split_held_out(targets)
    assert len(held) == 6 and sorted(targets[held].tolist()) == [0, 0, 1, 1, 2, 2]
    scores = np.sort(1.0 - probs[held, targets[held]])
    k = math.ceil((6 + 1) * COVERAGE)  # 6: the 6th smallest of 6 scores
    assert r.info.conformal.qhat == (pytest.approx(scores[k - 1], abs=1e-12),)


def test_split_held_out_alternates_within_each_class() -> None:
    first, second = split_held_out(np.array([0, 0, 1, 0, 1, 1, 0]))
    assert first.tolist() == [0, 2, 3, 5] and second.tolist() == [1, 4, 6]


def test_classify_rows_carry_the_prediction_set_and_need_review_unless_one_label(exported, tmp_path: Path) -> None:
    _, r, _, folder = exported
    out = tmp_path / "rows.csv"
    summary = classify_folder(ClassifyConfig(folder=folder, out=out, model=r.out, provider="cpu", progress=False))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0])[:5] == ["path", "label", "confidence", "prediction_set", "needs_review"]
    predictor = r.info.conformal
    unclear = 0
    for row in rows:
        probs = np.array([[float(row[f"prob_{c}"]) for c in CLASSES]])
        inside = class_scores(probs, "lac")[0] <= predictor.qhat[0] + 1e-6  # probabilities rounded to 6 decimals
        expected = [CLASSES[i] for i in np.argsort(-probs[0], kind="stable") if inside[i]]
        assert (row["prediction_set"].split("|") if row["prediction_set"] else []) == expected
        assert row["needs_review"] == ("false" if len(expected) == 1 else "true")
        unclear += len(expected) != 1
    assert summary.coverage == COVERAGE and summary.unclear_sets == unclear == summary.needs_review
    jsonl = tmp_path / "rows.jsonl"
    classify_folder(ClassifyConfig(folder=folder, out=jsonl, model=r.out, provider="cpu", progress=False,
                                   format="jsonl"))  # type: ignore[arg-type]
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [rec["prediction_set"] for rec in records] == [
        row["prediction_set"].split("|") if row["prediction_set"] else [] for row in rows]
    off = tmp_path / "off.csv"
    classify_folder(ClassifyConfig(folder=folder, out=off, model=r.out, provider="cpu", progress=False,
                                   prediction_sets="off"))
    assert "prediction_set" not in off.read_text(encoding="utf-8").splitlines()[0]


def test_rows_with_sets_and_unknowns_by_hand() -> None:
    import io

    sets = ConformalPredictor("lac", 0.9, (0.6,))
    rows = [
        {"path": "a.jpg", "label": "x", "probs": [0.7, 0.3], "error": None, "ood_score": 1.5},
        {"path": "b.jpg", "label": "x", "probs": [0.5, 0.5], "error": None, "ood_score": 0.2},
        {"path": "c.jpg", "label": None, "probs": None, "error": "truncated file", "ood_score": None},
    ]
    handle = io.StringIO()
    write_rows(handle, rows, ["x", "y"], "csv", sets=sets, unknown_threshold=1.0)
    assert handle.getvalue().splitlines() == [
        "path,label,confidence,prediction_set,needs_review,prob_x,prob_y,unknown,ood_score,error",
        "a.jpg,x,0.700000,x,false,0.700000,0.300000,true,1.500000,",
        "b.jpg,x,0.500000,x|y,true,0.500000,0.500000,false,0.200000,",
        "c.jpg,,,,,,,,,truncated file",
    ]
    handle = io.StringIO()
    write_rows(handle, rows, ["x", "y"], "kaggle", unknown_threshold=1.0, exclude_unknown=True)
    assert handle.getvalue().splitlines() == ["index,label", "a,", "b,x", "c,"]
    handle = io.StringIO()
    write_rows(handle, rows, ["x", "y"], "kaggle", unknown_threshold=1.0)
    assert handle.getvalue().splitlines() == ["index,label", "a,x", "b,x", "c,"]
    handle = io.StringIO()
    write_rows(handle, rows[:2], ["x", "y"], "jsonl", min_confidence=0.6, sets=sets, unknown_threshold=1.0)
    first, second = (json.loads(line) for line in handle.getvalue().splitlines())
    assert (first["prediction_set"], first["needs_review"], first["unknown"], first["ood_score"]) == (["x"], False,
                                                                                                        True, 1.5)
    assert (second["prediction_set"], second["needs_review"], second["unknown"]) == (["x", "y"], True, False)


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_classify_writes_embeddings_aligned_with_the_rows(exported, tmp_path: Path, suffix: str) -> None:
    ckpt, r, _, folder = exported
    out, target = tmp_path / "rows.csv", tmp_path / f"emb{suffix}"
    (folder / "broken.png").write_bytes(b"not an image")
    try:
        summary = classify_folder(ClassifyConfig(folder=folder, out=out, model=r.out, provider="cpu", progress=False,
                                                 embeddings=target))
    finally:
        (folder / "broken.png").unlink()
    assert summary.embeddings == target
    paths = [row["path"] for row in csv.DictReader(out.open(encoding="utf-8"))]
    if suffix == ".npy":
        array = np.load(target)
        index = [row["path"] for row in csv.DictReader((tmp_path / "emb.paths.csv").open(encoding="utf-8"))]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(target).to_pydict()
        index = table["path"]
        array = np.array([v if v is not None else [np.nan] * 512 for v in table["embedding"]], dtype=np.float32)
    assert index == paths and array.shape == (13, 512) and array.dtype == np.float32
    broken = paths.index("broken.png")
    assert np.isnan(array[broken]).all()
    keep = [i for i in range(13) if i != broken]
    inputs = np.stack([load_input(folder / paths[i], r.info.preprocessing) for i in keep])
    cosine = checks.cosine_similarity(_torch_embedding(ckpt, inputs), array[keep])
    assert cosine.min() >= checks.EMBEDDING_MIN_COSINE["fp32"]


@pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed (garmentcv[openvino])")
def test_both_runtimes_return_the_embedding_and_the_same_sets(exported, tmp_path: Path) -> None:
    """OpenVINO (f32, or bf16 where this CPU has it and the file's gate passed) against onnxruntime: the embedding
    within its precision's cosine bound, and the same prediction set for every image whose class scores all lie
    farther than the gates' probability tolerance from qhat (a set can only change at such a margin)."""
    _, r, val, folder = exported
    inputs = np.stack([load_input(p, r.info.preprocessing) for p, _ in val])
    ort_out = open_runtime(r.out, "onnxruntime", "cpu").outputs(inputs)
    openvino = open_runtime(r.out, "openvino", "cpu")
    ov_out = openvino.outputs(inputs)
    assert set(ort_out) == set(ov_out) == {OUTPUT_NAME, EMBEDDING_NAME}
    bound = checks.EMBEDDING_MIN_COSINE[openvino.inference_precision]
    assert checks.cosine_similarity(ort_out[EMBEDDING_NAME], ov_out[EMBEDDING_NAME]).min() >= bound
    rows = {}
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"{runtime}.csv"
        classify_folder(ClassifyConfig(folder=folder, out=out, model=r.out, provider="cpu", progress=False,
                                       runtime=runtime))
        rows[runtime] = list(csv.DictReader(out.open(encoding="utf-8")))
    compared = 0
    for a, b in zip(rows["onnxruntime"], rows["openvino"], strict=True):
        scores = 1.0 - np.array([float(a[f"prob_{c}"]) for c in CLASSES])
        if np.abs(scores - r.info.conformal.qhat[0]).min() > runtime_gates.PROBABILITY_TOLERANCE:
            assert (a["path"], a["prediction_set"]) == (b["path"], b["prediction_set"])
            compared += 1
    assert compared >= 6


def test_embeddings_refused_for_a_file_without_that_output_and_for_other_suffixes(tmp_path: Path) -> None:
    model, _ = build_onnx_model(tmp_path / "plain.onnx")
    folder = tmp_path / "images"
    folder.mkdir()
    with pytest.raises(ClassifyUsageError, match="no embedding output.*--embedding"):
        classify_folder(ClassifyConfig(folder=folder, out=tmp_path / "r.csv", model=model, provider="cpu",
                                       progress=False, embeddings=tmp_path / "e.npy"))
    with pytest.raises(ClassifyUsageError, match=r"\.npy.*\.parquet"):
        classify_folder(ClassifyConfig(folder=folder, out=tmp_path / "r.csv", model=model, provider="cpu",
                                       progress=False, embeddings=tmp_path / "e.csv"))
    from garmentcv.errors import OutputPathError

    (tmp_path / "blocker").write_text("a file, not a folder", encoding="utf-8")
    with pytest.raises(OutputPathError, match="--embeddings"):  # refused before any work
        classify_folder(ClassifyConfig(folder=folder, out=tmp_path / "r.csv", model=model, provider="cpu",
                                       progress=False, embeddings=tmp_path / "blocker" / "e.npy"))


def test_embedding_gate_refuses_a_drifting_embedding() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 8)).astype(np.float32)
    drifted = reference.copy()
    drifted[2] += rng.normal(size=8).astype(np.float32)  # one image far off
    parity = checks.compare_embeddings(reference, drifted, ["a", "b", "c", "d"], checks.EMBEDDING_MIN_COSINE["fp16"])
    assert not parity.passed and parity.rows_below == 1 and parity.worst_file == "c"
    with pytest.raises(ExportError, match="FP16 embedding parity failed.*worst c"):
        checks.require_embedding(parity, "FP16")
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    seen = runtime_gates.GateInputs(logits, ("a", "b", "c", "d"), np.array([0, 1, 2, 0]), None, reference)
    gate = runtime_gates.judge("openvino", "bf16", logits, seen, runtime_gates.BF16_TOLERANCE, 1.0, embedding=drifted)
    assert not gate.passed and "embedding cosine similarity" in gate.note
    assert gate.embedding_min_cosine == pytest.approx(parity.min_cosine)
    ok = runtime_gates.judge("openvino", "bf16", logits, seen, runtime_gates.BF16_TOLERANCE, 1.0, embedding=reference)
    assert ok.passed and ok.embedding_min_cosine == pytest.approx(1.0)


@pytest.mark.parametrize("arch", list(MODELS) + EXTRA_ARCHS)
def test_every_arch_family_gives_its_own_logits_and_the_heads_input(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 3, "none").model.eval()
    wrapped = WithEmbedding(model, get_spec(arch).head).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, embedding = wrapped(x)
        expected = model(x)
    head = model.get_submodule(get_spec(arch).head)
    assert embedding.shape == (2, head.in_features)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5 * max(1.0, expected.abs().max().item()))


def test_metadata_of_unknown_detector_and_outputs_round_trips_and_is_checked(exported) -> None:
    _, r, _, _ = exported
    detector = UnknownDetector("energy", 1.25, 0.95, reference_size=0, images=6)
    info = ModelInfo(**{**r.info.__dict__, "outputs": (OUTPUT_NAME, EMBEDDING_NAME, OOD_SCORE_NAME),
                        "unknown": detector})
    props = info.to_metadata()
    assert json.loads(props["garmentcv.outputs"]) == ["logits", "embedding", "ood_score"]
    assert json.loads(props["garmentcv.unknown"]) == {"method": "energy", "threshold": 1.25, "recall": 0.95,
                                                      "reference_size": 0, "images": 6}
    assert ModelInfo.from_metadata(props) == info
    with pytest.raises(ModelFileError, match="damaged"):
        ModelInfo.from_metadata({**props, "garmentcv.outputs": '["embedding", "logits"]'})
    old = {k: v for k, v in props.items() if k not in ("garmentcv.outputs", "garmentcv.embedding_dim")}
    old["garmentcv.format_version"] = "1"
    assert ModelInfo.from_metadata(old).outputs == (OUTPUT_NAME,)


def test_evaluate_reports_empirical_coverage_and_set_size_overall_and_per_class(exported, tmp_path: Path) -> None:
    from garmentcv.infer.evaluate import EvaluateConfig, evaluate_model

    _, r, val, _ = exported
    data = tmp_path / "val.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label"), *((str(p), label) for p, label in val)])
    result = evaluate_model(EvaluateConfig(data=data, out=tmp_path / "ev", model=r.out, provider="cpu",
                                           runtime="onnxruntime", progress=False))
    model = open_runtime(r.out, "onnxruntime", "cpu")
    inputs = np.stack([load_input(p, r.info.preprocessing) for p, _ in val])
    targets = np.array([CLASSES.index(label) for _, label in val])
    inside = r.info.conformal.contains(softmax(model.logits(inputs), r.info.applied_temperature))
    covered = inside[np.arange(12), targets]
    assert result.sets_coverage == COVERAGE and result.prediction_sets.images == 12
    assert result.prediction_sets.coverage == pytest.approx(covered.mean())
    assert result.prediction_sets.mean_size == pytest.approx(inside.sum(axis=1).mean())
    for c, name in enumerate(CLASSES):
        assert result.prediction_sets_per_class[name].coverage == pytest.approx(covered[targets == c].mean())
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["prediction_sets"]["coverage"] == pytest.approx(covered.mean())
    assert metrics["prediction_sets"]["target_coverage"] == COVERAGE
    assert set(metrics["prediction_sets"]["per_class"]) == set(CLASSES)
    assert "prediction_sets" in (tmp_path / "ev" / "report.html").read_text(encoding="utf-8")


def test_classify_report_has_an_unknown_gallery(tmp_path: Path) -> None:
    import io

    from garmentcv.report import write_classify_report
    from tests.conftest import write_image

    folder = tmp_path / "photos"
    for name in ("a.png", "b.png", "c.png"):
        write_image(folder / name)
    rows = [{"path": "a.png", "label": "x", "probs": [0.9, 0.1], "error": None, "ood_score": 3.0},
            {"path": "b.png", "label": "y", "probs": [0.2, 0.8], "error": None, "ood_score": 0.5},
            {"path": "c.png", "label": "x", "probs": [0.6, 0.4], "error": None, "ood_score": 2.5}]
    handle = io.StringIO()
    write_rows(handle, rows, ["x", "y"], "csv", unknown_threshold=1.0)
    results = tmp_path / "rows.csv"
    results.write_text(handle.getvalue(), encoding="utf-8")
    page = write_classify_report(tmp_path / "page.html", results, folder).read_text(encoding="utf-8")
    section = page[page.index('<section id="unknown">'):]
    section = section[:section.index("</section>")]
    assert "Unknown (none of the classes)" in section and "2 images" in section
    assert "a.png" in section and "c.png" in section and "b.png" not in section
    assert "<th>unknown</th><td>2</td>" in page.replace("\n", "")


def test_ray_engine_gives_the_local_rows_sets_unknowns_and_embeddings(exported, tmp_path: Path) -> None:
    """A file with every optional output (embedding, prediction sets, a vim detector) through both engines."""
    pytest.importorskip("ray", reason="the Ray engine needs garmentcv[ray]")
    from garmentcv.infer.engines.ray import RayOptions, classify_ray
    from tests.test_ray_engine import local_ray

    ckpt, _, _, folder = exported
    r = export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "model.onnx", embedding=True,
                                       coverage=COVERAGE, unknown_score="vim", unknown_recall=0.75), progress=False)
    assert r.info.outputs == (OUTPUT_NAME, EMBEDDING_NAME, OOD_SCORE_NAME)
    local = ClassifyConfig(folder=folder, out=tmp_path / "local.csv", model=r.out, provider="cpu", progress=False,
                           embeddings=tmp_path / "local.npy")
    classify_folder(local)
    with local_ray() as address:
        classify_ray(ClassifyConfig(folder=folder, out=tmp_path / "ray.csv", model=r.out, progress=False,
                                    embeddings=tmp_path / "ray.npy"), RayOptions(address=address, num_workers=1))
    local_rows = list(csv.DictReader((tmp_path / "local.csv").open(encoding="utf-8")))
    ray_rows = list(csv.DictReader((tmp_path / "ray.csv").open(encoding="utf-8")))
    assert [(a["path"], a["prediction_set"], a["needs_review"], a["unknown"]) for a in local_rows] == [
        (b["path"], b["prediction_set"], b["needs_review"], b["unknown"]) for b in ray_rows]
    assert sum(row["unknown"] == "true" for row in local_rows) == 3  # 12 images at 75% recall
    np.testing.assert_allclose([float(b["ood_score"]) for b in ray_rows], [float(a["ood_score"]) for a in local_rows],
                               rtol=1e-5, atol=1e-5)  # the same file on the same runtime: float32 noise at most
    np.testing.assert_allclose(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def with_detector(exported, tmp_path_factory: pytest.TempPathFactory):
    """The same checkpoint exported with an energy-score detector (no embedding output), as gcv export writes it
    (uint8 input)."""
    ckpt, _, _, _ = exported
    out = tmp_path_factory.mktemp("ood") / "model.onnx"
    return export_checkpoint(ExportConfig(checkpoint=ckpt, out=out, unknown_score="energy", unknown_recall=0.75,
                                          coverage=COVERAGE), progress=False)


def test_export_unknown_adds_a_gated_ood_score_and_its_threshold(with_detector, exported) -> None:
    from garmentcv.unknowns import scores

    _, _, val, _ = exported
    r = with_detector
    info = read_model_info(r.out)
    assert info == r.info and info.outputs == (OUTPUT_NAME, OOD_SCORE_NAME) and info.format_version == 3
    assert info.unknown.method == "energy" and info.unknown.images == 12 and info.unknown.reference_size == 0
    assert r.unknown_score_diff is not None and r.unknown_score_diff <= 1e-3
    model = open_runtime(r.out, "onnxruntime", "cpu")
    from garmentcv.image import load_crop

    out = model.outputs(np.stack([load_crop(p, info.preprocessing) for p, _ in val]))
    expected = scores.score("energy", out[OUTPUT_NAME], None, {}, info.applied_temperature)
    np.testing.assert_allclose(out[OOD_SCORE_NAME], expected, rtol=1e-5, atol=1e-5)
    assert info.unknown.threshold == float(np.sort(out[OOD_SCORE_NAME])[8])  # ceil(0.75 * 12) = 9th of its own scores
    assert info.unknown.recall == pytest.approx(0.75)


def test_classify_rows_say_unknown_from_the_files_score(with_detector, exported, tmp_path: Path) -> None:
    _, _, _, folder = exported
    r = with_detector
    out = tmp_path / "rows.csv"
    summary = classify_folder(ClassifyConfig(folder=folder, out=out, model=r.out, provider="cpu", progress=False))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0])[-3:] == ["unknown", "ood_score", "error"]
    flagged = [row["path"] for row in rows if row["unknown"] == "true"]
    assert flagged == [row["path"] for row in rows if float(row["ood_score"]) > r.info.unknown.threshold + 1e-6]
    assert summary.unknown_checked and summary.unknown == len(flagged) == 3  # 12 images at 75% recall
    off = tmp_path / "off.csv"
    classify_folder(ClassifyConfig(folder=folder, out=off, model=r.out, provider="cpu", progress=False,
                                   unknown="off"))
    assert "unknown" not in off.read_text(encoding="utf-8").splitlines()[0]
    kaggle = tmp_path / "kaggle.csv"
    classify_folder(ClassifyConfig(folder=folder, out=kaggle, model=r.out, provider="cpu", progress=False,
                                   format="kaggle", exclude_unknown=True))  # type: ignore[arg-type]
    empty = [row["index"] for row in csv.DictReader(kaggle.open(encoding="utf-8")) if not row["label"]]
    assert empty == [Path(p).stem for p in flagged]


@pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed (garmentcv[openvino])")
def test_both_runtimes_give_the_same_ood_score_within_their_precision(with_detector, exported) -> None:
    """OpenVINO at f32 (or bf16 where this CPU runs it) against onnxruntime: the energy score is ``-T logsumexp
    (logits / T)``, so it moves at most as far as the logits, within the pair's logit tolerance x the logit scale."""
    from garmentcv.image import load_crop

    _, _, val, _ = exported
    r = with_detector
    inputs = np.stack([load_crop(p, r.info.preprocessing) for p, _ in val])
    ort_out = open_runtime(r.out, "onnxruntime", "cpu").outputs(inputs)
    openvino = open_runtime(r.out, "openvino", "cpu")
    ov_out = openvino.outputs(inputs)
    assert set(ov_out) == {OUTPUT_NAME, OOD_SCORE_NAME}
    tolerance = runtime_gates.tolerance_for("fp32", openvino.inference_precision)
    scale = checks.logit_scale(ort_out[OUTPUT_NAME])
    assert (np.abs(ov_out[OOD_SCORE_NAME] - ort_out[OOD_SCORE_NAME]) <= tolerance * scale + 1e-6).all()


def test_evaluate_reports_auroc_and_let_through_of_other_images(with_detector, exported, tmp_path: Path) -> None:
    from garmentcv.image import load_crop
    from garmentcv.infer.evaluate import EvaluateConfig, EvaluateUsageError, evaluate_model
    from garmentcv.unknowns import scores
    from tests.conftest import write_image

    _, plain, val, _ = exported
    r = with_detector
    data = tmp_path / "val.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label"), *((str(p), label) for p, label in val)])
    other = tmp_path / "other"
    files = [write_image(other / f"o{i}.png", colour=(128, 128, 128), seed=50 + i) for i in range(5)]
    result = evaluate_model(EvaluateConfig(data=data, out=tmp_path / "ev", model=r.out, provider="cpu",
                                           runtime="onnxruntime", progress=False, other_data=other))
    model = open_runtime(r.out, "onnxruntime", "cpu")
    s_in = model.outputs(np.stack([load_crop(p, r.info.preprocessing) for p, _ in val]))[OOD_SCORE_NAME]
    s_out = model.outputs(np.stack([load_crop(p, r.info.preprocessing) for p in files]))[OOD_SCORE_NAME]
    u = result.unknown
    assert (u["images"], u["other_images"], u["method"]) == (12, 5, "energy")
    assert u["auroc"] == pytest.approx(scores.auroc(s_in, s_out), abs=1e-9)
    assert u["let_through"] == pytest.approx((s_out <= r.info.unknown.threshold).mean())
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["unknown"]["auroc"] == pytest.approx(u["auroc"])
    with pytest.raises(EvaluateUsageError, match="no unknown-item detector"):
        evaluate_model(EvaluateConfig(data=data, out=tmp_path / "ev2", model=plain.out, provider="cpu",
                                      progress=False, other_data=other))


def test_export_cli_summary_names_the_embedding_and_the_sets(exported, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from garmentcv.export import cli as export_cli

    ckpt, _, _, _ = exported
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(export_cli.main, [str(ckpt), "--out", str(out), "--embedding", "--coverage", "0.8",
                                                  "--conformal-method", "aps", "-q"])
    assert result.exit_code == 0, result.output
    info = read_model_info(out)
    assert info.has_embedding and info.conformal is not None and info.conformal.method == "aps"
    assert "embedding output, 512 features: embedding cosine similarity to FP32 at least" in result.output
    assert f"prediction sets: {info.conformal.describe()} (gcv classify writes each row's set)" in result.output
    none = tmp_path / "none.onnx"
    result = CliRunner().invoke(export_cli.main, [str(ckpt), "--out", str(none), "--no-prediction-sets", "-q"])
    assert result.exit_code == 0, result.output
    assert read_model_info(none).conformal is None and "prediction sets" not in result.output


def test_int8_export_with_an_unknown_detector_writes_a_valid_file_with_its_score(exported, tmp_path: Path) -> None:
    """The quantizer leaves metadata on the INT8 graph; joining the score behind it must keep each key once."""
    import onnx

    ckpt, _, val, _ = exported
    r = export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "int8.onnx", precision="int8",
                                       unknown_score="energy", unknown_recall=0.75, max_accuracy_drop=100.0),
                          progress=False)  # fmt: skip
    model = onnx.load(r.out)
    onnx.checker.check_model(model)
    keys = [p.key for p in model.metadata_props]
    assert len(keys) == len(set(keys))
    info = read_model_info(r.out)
    assert info.outputs == (OUTPUT_NAME, OOD_SCORE_NAME) and info.unknown.method == "energy"
    assert r.unknown_score_diff is not None and r.unknown_score_diff <= 1e-3


def test_score_check_compares_the_joined_graph_with_its_own_outputs_not_another_sessions(exported, monkeypatch,
                                                                                        tmp_path: Path) -> None:
    """Two sessions of the same network may differ in the last float32 digits of the embedding, and vim amplifies
    those (a small residual times a large scale). The check must judge the score's arithmetic on the outputs of the
    run that computed it: here the classifier's own session is made to drift, and the export still passes."""
    ckpt, _, _, _ = exported
    real = checks.run_outputs

    def drifting(session, inputs, batch_size=32):
        out = real(session, inputs, batch_size)
        if OOD_SCORE_NAME not in out and EMBEDDING_NAME in out:  # the classifier alone, not the joined graph
            out[EMBEDDING_NAME] = out[EMBEDDING_NAME] * np.float32(1.01)  # the cosine gates cannot see a scale
        return out

    monkeypatch.setattr(checks, "run_outputs", drifting)
    r = export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "vim.onnx", unknown_score="vim",
                                       unknown_recall=0.75, coverage=None), progress=False)  # fmt: skip
    assert r.unknown_score_diff is not None and r.unknown_score_diff <= 1e-5
    assert read_model_info(r.out).outputs == (OUTPUT_NAME, OOD_SCORE_NAME)


def test_a_covariance_score_fitted_on_fewer_images_than_dimensions_is_flagged(exported, caplog,
                                                                              tmp_path: Path) -> None:
    """The run's few training images against resnet18's 512-d embedding: vim's principal subspace swallows every
    reference image, so the export says its scores are unreliable and what to give instead."""
    ckpt, _, _, _ = exported
    with caplog.at_level(logging.WARNING, logger="garmentcv.export.exporter"):
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "vim.onnx", unknown_score="vim",
                                       unknown_recall=0.75, coverage=None), progress=False)  # fmt: skip
    images = len(list(csv.DictReader((ckpt.parent.parent / "train.csv").open(encoding="utf-8"))))
    assert (f"the vim unknown score was fitted on {images} reference images, no more than the embedding's 512 "
            "dimensions") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="garmentcv.export.exporter"):
        export_checkpoint(ExportConfig(checkpoint=ckpt, out=tmp_path / "knn.onnx", unknown_score="knn",
                                       unknown_recall=0.75, coverage=None), progress=False)  # fmt: skip
    assert "reference images, no more than" not in caplog.text
