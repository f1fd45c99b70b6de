"""The experiment runner (issue #14): grids of runs, paired comparisons, verdicts."""
