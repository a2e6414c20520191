"""Pictures, case folders and the self-contained HTML report."""

from .case import export_case, make_report, write_case
from .cohort import COHORT_COLUMNS, case_finished, cohort_row, read_summary, write_cohort
from .html import READY_MESSAGE, write_report
from .pictures import calibration_png, confidence_png, drr_residual_png, overlay_png

__all__ = [
    "write_case",
    "export_case",
    "make_report",
    "write_report",
    "READY_MESSAGE",
    "confidence_png",
    "overlay_png",
    "drr_residual_png",
    "calibration_png",
    "case_finished",
    "cohort_row",
    "read_summary",
    "write_cohort",
    "COHORT_COLUMNS",
]
