"""Measures of a trained model on labelled data: metrics, evaluate, the paper's experiments, plots."""
