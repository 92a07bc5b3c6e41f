"""The seed workflow, written for MLflow alone (no import of bridge): the nyc-taxi notebook
with sklearn in place of xgboost. Tests run it with MLFLOW_TRACKING_URI set to bridge: or to
a real server, then compare what each holds."""

import os
import sys
import tempfile

import mlflow
import mlflow.sklearn
import numpy as np
from sklearn.linear_model import Lasso, Ridge
from sklearn.metrics import mean_squared_error

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4))
y = X @ np.array([1.5, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=300)
X_train, X_val, y_train, y_val = X[:200], X[200:], y[:200], y[200:]

mlflow.set_experiment(sys.argv[1] if len(sys.argv) > 1 else "nyc-taxi-experiment")

with mlflow.start_run(run_name="ridge-manual"):
    mlflow.set_tag("developer", "cristian")
    mlflow.log_param("train-data-path", "./data/green_tripdata_2021-01.csv")
    mlflow.log_param("valid-data-path", "./data/green_tripdata_2021-02.csv")
    alpha = 0.1
    mlflow.log_param("alpha", alpha)
    model = Ridge(alpha=alpha).fit(X_train, y_train)
    rmse = float(np.sqrt(mean_squared_error(y_val, model.predict(X_val))))
    mlflow.log_metric("rmse", rmse)
    for epoch in range(5):
        mlflow.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    mlflow.log_metrics({"mae": 0.25, "r2": 0.97}, step=4)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "preprocessor.b")
        with open(path, "wb") as f:
            f.write(b"dict-vectorizer-bytes" * 10)
        mlflow.log_artifact(path, artifact_path="preprocessor")
    mlflow.log_text("feature notes", "notes/features.txt")
    mlflow.log_dict({"features": ["a", "b", "c", "d"]}, "config/features.json")
    mlflow.sklearn.log_model(model, name="models_mlflow")

with mlflow.start_run(run_name="search") as parent:
    for i, a in enumerate([0.01, 0.1]):
        with mlflow.start_run(run_name=f"trial-{i}", nested=True):
            mlflow.set_tag("model", "lasso")
            mlflow.log_params({"alpha": a, "max_iter": 1000})
            m = Lasso(alpha=a, max_iter=1000).fit(X_train, y_train)
            mlflow.log_metric("rmse", float(np.sqrt(mean_squared_error(y_val, m.predict(X_val)))))

mlflow.sklearn.autolog(log_models=True)
with mlflow.start_run(run_name="ridge-autolog"):
    Ridge(alpha=0.5).fit(X_train, y_train)
mlflow.sklearn.autolog(disable=True)
print("done")
