"""Networks: configurations, the multi-task net and its baselines, checkpoints and the packaged model."""
