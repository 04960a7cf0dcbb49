"""Object storage that fails: reads retried with backoff, a run stopped (rows kept) when the store keeps failing,
rows of unread objects never reused by --resume and never an exit 0; one GET per object; keys pyarrow cannot read."""

from __future__ import annotations

import csv
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from garmentcv.data.layouts import SkippedFile
from garmentcv.errors import GarmentCVError, ImageDecodeError
from garmentcv.image import Preprocessing
from garmentcv.infer import classify as classify_module
from garmentcv.infer.classify import ClassifyConfig, classify_folder
from garmentcv.infer.sources import Entry, ObjectReadError, ReadRetry, RemoteFile, StorageReadError, load_file

from .conftest import write_image
from .s3_server import moto_s3, upload

#: Retries that keep a test fast: 3 reads in all, 1 ms apart.
FAST_RETRY = ReadRetry(attempts=3, backoff_s=0.001, max_backoff_s=0.001)

#: Reads of each fake object by uri; objects in HEALED read without failing from then on.
READS: Counter[str] = Counter()
HEALED: set[str] = set()
THROTTLED = "AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate."


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    READS.clear()
    HEALED.clear()
    yield


@dataclass(frozen=True)
class FakeObject(RemoteFile):
    """An object whose first ``failures`` reads fail as a throttled or unreachable store does."""

    data: bytes = b""
    failures: int = 0
    delay_s: float = 0.0

    def read(self) -> bytes:
        READS[self.uri] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if READS[self.uri] <= self.failures and self.uri not in HEALED:
            raise OSError(THROTTLED)
        return self.data


@dataclass(frozen=True)
class FakeStore:
    """A source of :class:`FakeObject` entries, in the given (row) order."""

    objects: tuple[FakeObject, ...]
    identity: str = "fake://shop/photos"
    folder: None = None

    def entries(self, recursive: bool, skipped: list[SkippedFile]) -> Iterator[Entry]:
        for obj in self.objects:
            yield Entry(obj.uri.rsplit("/", 1)[1], obj, len(obj.data), 1_000)


def photos(tmp: Path, count: int) -> list[bytes]:
    return [write_image(tmp / f"src{i:02d}.jpg", seed=i, size=(30 + i % 5, 36)).read_bytes() for i in range(count)]


def store(images: list[bytes], failures: dict[int, int] | None = None, delay_s: float = 0.0) -> FakeStore:
    return FakeStore(tuple(FakeObject(f"fake://shop/photos/o{i:02d}.jpg", data, (failures or {}).get(i, 0), delay_s)
                           for i, data in enumerate(images)))


def classify_fake(fake: FakeStore, out: Path, model: Path, monkeypatch: pytest.MonkeyPatch, **kw: object):
    monkeypatch.setattr(classify_module, "open_source", lambda spec: fake)
    cfg = ClassifyConfig(folder="fake://shop/photos", out=out, model=model, provider="cpu", progress=False,
                         batch_size=4, workers=1, read_retry=FAST_RETRY, **kw)  # type: ignore[arg-type]
    return classify_folder(cfg)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def partial_rows(out: Path) -> list[str]:
    """The lines of the partial results' segments, headers left out."""
    return [line for seg in sorted(out.with_name(out.name + ".partial").glob("run-*.jsonl"))
            for line in seg.read_text(encoding="utf-8").splitlines()[1:]]


def test_a_read_that_fails_then_succeeds_is_retried(tmp_path: Path, onnx_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    images = photos(tmp_path, 6)
    clean = classify_fake(store(images), tmp_path / "clean.csv", onnx_model, monkeypatch)
    READS.clear()
    flaky = classify_fake(store(images, failures={i: 2 for i in range(6)}), tmp_path / "flaky.csv", onnx_model,
                          monkeypatch)
    assert (tmp_path / "flaky.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert (flaky.files, flaky.errors, clean.errors) == (6, 0, 0)
    assert sorted(READS.values()) == [3] * 6  # two failures, then the read that worked


def test_reads_that_always_fail_stop_the_run_after_the_consecutive_limit(tmp_path: Path, onnx_model: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    images = photos(tmp_path, 40)
    fake = store(images, failures={i: 10**6 for i in range(10, 40)})  # the store goes down after 10 objects
    out = tmp_path / "out.csv"
    with pytest.raises(StorageReadError) as caught:
        classify_fake(fake, out, onnx_model, monkeypatch, max_consecutive_read_errors=5)
    message = str(caught.value)
    assert isinstance(caught.value, GarmentCVError) and caught.value.exit_code == 1
    assert message.startswith("the storage is failing: 5 objects in a row could not be read (the last, o14.jpg: "
                              f"cannot read: {THROTTLED}); 16 rows are saved in {out}.partial")
    assert message.endswith("when it works again, run the same command with --resume to finish")
    assert not out.exists()
    rows = partial_rows(out)
    assert len(rows) == 16  # whole batches of 4: the one holding the 5th failure in a row is saved too
    assert sum('"error": null' in r for r in rows) == 10
    assert READS["fake://shop/photos/o10.jpg"] == 3  # each object read FAST_RETRY.attempts times
    assert READS["fake://shop/photos/o39.jpg"] == 0  # stopped without trying the rest


def test_rows_of_unread_objects_fail_the_run_and_are_read_again_on_resume(tmp_path: Path, onnx_model: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    images = photos(tmp_path, 7)
    classify_fake(store(images), tmp_path / "clean.csv", onnx_model, monkeypatch)
    fake = store(images, failures={3: 10**6})
    out = tmp_path / "out.csv"
    with pytest.raises(StorageReadError) as caught:
        classify_fake(fake, out, onnx_model, monkeypatch)
    assert caught.value.exit_code == 1
    assert (caught.value.summary.files, caught.value.summary.errors, caught.value.summary.read_errors) == (7, 1, 1)
    assert caught.value.summary.error_reasons == {"cannot read": 1}
    assert str(caught.value) == (
        f"1 object could not be read: o03.jpg; its row in {out} has the error 'cannot read: ...'. When the storage "
        "works again, run the same command with --resume to read it again (the other rows are reused)"
    )
    rows = read_csv(out)  # the file is written, with the row of the unread object
    assert rows[4] == ["o03.jpg", "", "", "", "", f"cannot read: {THROTTLED}"]
    assert rows[:4] + rows[5:] == (read := read_csv(tmp_path / "clean.csv"))[:4] + read[5:]
    assert len(partial_rows(out)) == 7  # kept for --resume
    HEALED.add("fake://shop/photos/o03.jpg")
    READS.clear()
    resumed = classify_fake(fake, out, onnx_model, monkeypatch, resume=True)
    assert (resumed.reused, resumed.errors) == (6, 0)
    assert dict(READS) == {"fake://shop/photos/o03.jpg": 1}  # the unread row is not reused: it is read again
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert not out.with_name("out.csv.partial").exists()


def test_objects_are_fetched_by_their_own_threads_beside_decoding(tmp_path: Path, onnx_model: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads wait on the network: ``fetch_threads`` of them run at once while one thread decodes."""
    images = photos(tmp_path, 12)
    active, peak, lock = [0], [0], threading.Lock()

    @dataclass(frozen=True)
    class SlowObject(FakeObject):
        def read(self) -> bytes:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                time.sleep(0.1)
                return self.data
            finally:
                with lock:
                    active[0] -= 1

    fake = FakeStore(tuple(SlowObject(f"fake://shop/photos/o{i:02d}.jpg", data) for i, data in enumerate(images)))
    start = time.perf_counter()
    summary = classify_fake(fake, tmp_path / "out.csv", onnx_model, monkeypatch, fetch_threads=4)
    assert (summary.files, summary.errors, summary.workers) == (12, 0, 1)
    assert peak[0] == 4
    assert time.perf_counter() - start < 12 * 0.1  # not one read after another


def test_a_storage_outage_mid_run_stops_it_and_resume_completes_it(tmp_path: Path, onnx_model: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    for i in range(24):
        write_image(folder / f"{i:02d}.jpg", seed=i, size=(30 + i % 7, 40))
    out, whole = tmp_path / "out.csv", tmp_path / "whole.csv"
    with moto_s3(monkeypatch, tmp_path) as server:
        upload(folder, "shop", "photos")

        def cfg(target: Path, **kw: object) -> ClassifyConfig:
            return ClassifyConfig(folder="s3://shop/photos", out=target, model=onnx_model, provider="cpu",
                                  progress=False, batch_size=4, workers=1, fetch_threads=2, read_retry=FAST_RETRY,
                                  max_consecutive_read_errors=4, **kw)  # type: ignore[arg-type]

        classify_folder(cfg(whole))

        def outage(saved: int) -> None:
            if saved == 4:
                server.stop()

        with pytest.raises(StorageReadError, match=r"^the storage is failing: 4 objects in a row could not be "
                           r"read \(the last, \d\d\.jpg: cannot read: .*\); \d+ rows are saved in .*out\.csv\.partial"):
            classify_folder(cfg(out), on_batch=outage)
        assert not out.exists()
        saved = partial_rows(out)
        assert 8 <= len(saved) < 24 and sum('"error": null' in r for r in saved) >= 4
        server.start()
        resumed = classify_folder(cfg(out, resume=True))
        assert out.read_bytes() == whole.read_bytes()
        assert resumed.reused == sum('"error": null' in r for r in saved) and resumed.errors == 0
        assert not out.with_name("out.csv.partial").exists()


def test_each_object_is_read_with_one_get(tmp_path: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(folder.mkdir() or folder / "big.png")
    write_image(folder / "small.jpg")
    assert (folder / "big.png").stat().st_size > 1_000_000  # four 256 KiB ranges and more
    with moto_s3(monkeypatch, tmp_path) as server:
        upload(folder, "shop", "photos")
        server.requests.clear()
        summary = classify_folder(ClassifyConfig(folder="s3://shop/photos/", out=tmp_path / "out.csv",
                                                 model=onnx_model, provider="cpu", progress=False))
        assert (summary.files, summary.errors) == (2, 0)
        # pyarrow's object file asks for the size first (HEAD), then one GET reads the whole object
        assert server.object_requests("shop", "photos/big.png") == ["HEAD", "GET"]
        assert server.object_requests("shop", "photos/small.jpg") == ["HEAD", "GET"]
        assert [m for m, path, query in server.requests if path == "/shop"] == ["GET"]  # one listing


def test_a_key_with_an_empty_path_segment_is_skipped_at_listing(tmp_path: Path, onnx_model: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    photo = write_image(tmp_path / "x.jpg").read_bytes()
    with moto_s3(monkeypatch, tmp_path):
        client = boto3.client("s3")
        client.create_bucket(Bucket="shop")
        for key in ("photos/a//x.jpg", "photos/a/x.jpg", "photos//y.jpg"):
            client.put_object(Bucket="shop", Key=key, Body=photo)
        summary = classify_folder(ClassifyConfig(folder="s3://shop/photos", out=tmp_path / "out.csv",
                                                 model=onnx_model, provider="cpu", progress=False))
        assert [r[0] for r in read_csv(tmp_path / "out.csv")[1:]] == ["a/x.jpg"]
        assert (summary.files, summary.errors, summary.skipped) == (1, 0, {"key with an empty path segment": 2})
        # read anyway, such a key is an object that cannot be read, not an image that cannot be decoded
        with pytest.raises(ObjectReadError, match=r"^s3://shop/photos/a//x\.jpg: cannot read \(.*Empty path "
                           r"component") as caught:
            load_file(RemoteFile("s3://shop/photos/a//x.jpg"), Preprocessing(resize=36, crop=32))
        assert isinstance(caught.value, ImageDecodeError) and caught.value.reason.startswith("cannot read: ")
