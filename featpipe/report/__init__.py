"""The comparison report over finished run directories: see write_report."""

from featpipe.report.build import write_report

__all__ = ["write_report"]
