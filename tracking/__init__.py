"""Optional trackers a run can also log to (besides ClearML): :mod:`tracking.mlflow_run` for MLflow."""
