"""Layer 7: evaluation of models under spatial searches."""

from advspatial.evaluation.accuracy import AccuracyReport, evaluate_accuracy

__all__ = ["AccuracyReport", "evaluate_accuracy"]
