"""``gcv``: one entry point with a sub-command per task (``gcv train``, ``gcv export``, ``gcv classify``,
``gcv evaluate``, ``gcv serve``, ``gcv data ...``), as click, litgpt and Ultralytics users expect.

Each sub-command is the same click command as its ``gcv-*`` script, so options, defaults and exit codes are
identical; the ``gcv-*`` names keep working.
"""

from __future__ import annotations

import click

from garmentcv.cli_utils import docs_epilog, quiet_option, verbose_option, version_option
from garmentcv.data.cli import main as data_main
from garmentcv.export.cli import main as export_main
from garmentcv.infer.cli import classify_main, evaluate_main
from garmentcv.serve.cli import main as serve_main
from garmentcv.train.cli import main as train_main

#: Sub-command name -> click command, in the order of the work: data, train, export, classify, evaluate, serve.
COMMANDS: dict[str, click.Command] = {
    "data": data_main,
    "train": train_main,
    "export": export_main,
    "classify": classify_main,
    "evaluate": evaluate_main,
    "serve": serve_main,
}


class _OrderedGroup(click.Group):
    """A group that lists its sub-commands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_OrderedGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
             epilog=docs_epilog("cli"))
@version_option("gcv")
@quiet_option
@verbose_option
def main(quiet: bool, verbose: bool) -> None:
    """GarmentCV: fine-tune CNNs on garment photos, export them as ONNX, classify whole catalogues.

    Run 'gcv COMMAND --help' for a command's options. -q and -v given here apply to the command.
    """


for _name, _command in COMMANDS.items():
    main.add_command(_command, _name)
