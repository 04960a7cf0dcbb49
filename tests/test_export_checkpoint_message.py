"""gcv-export on a damaged checkpoint: a plain message, the raw torch detail only with --debug.

The message comes from garmentcv.train.checkpoint.load_checkpoint, whose CheckpointError is worded without torch's
raw "... failed finding central directory (105)".
"""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from garmentcv.export import cli as export_cli
from tests.test_export import make_run


def test_truncated_checkpoint_message_is_plain_and_raw_detail_only_in_debug(tmp_path: Path) -> None:
    best = make_run(tmp_path / "run", "resnet18", per_class=1)
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 2])  # cut short, as by a full disk or an interrupted copy: torch says "(105)"
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(export_cli.main, [str(best), "--out", str(out), "-q"])
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ") and str(best) in message and "\n" not in message
    assert re.search(r"truncated|corrupt|damaged|incomplete", message), message
    assert "(105)" not in message and "central directory" not in message and "PytorchStreamReader" not in message
    debug = CliRunner().invoke(export_cli.main, [str(best), "--out", str(out), "-q", "--debug"])
    assert debug.exit_code == 1 and "central directory" in debug.stderr  # the cause, chained with `from exc`
    assert not out.exists()
