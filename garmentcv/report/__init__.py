"""HTML report pages of ``gcv evaluate`` (``report.html``) and ``gcv classify --report FILE.html``.

A page ``NAME.html`` links only to files in the folder ``NAME_files/`` beside it (thumbnails, plots); the
two together work offline anywhere. See :mod:`garmentcv.report.write`.
"""

from garmentcv.report.html import Limits, Prediction
from garmentcv.report.write import (
    EVALUATE_PAGE,
    EVALUATE_PLOTS,
    Lowest,
    ResultsFile,
    ResultsTally,
    check_report_output,
    files_folder,
    read_results,
    write_classify_report,
    write_evaluate_page,
    write_evaluate_report,
)

__all__ = [
    "EVALUATE_PAGE",
    "EVALUATE_PLOTS",
    "Limits",
    "Lowest",
    "Prediction",
    "ResultsFile",
    "ResultsTally",
    "check_report_output",
    "files_folder",
    "read_results",
    "write_classify_report",
    "write_evaluate_page",
    "write_evaluate_report",
]
