"""The redaction rules (bridge.redact): every credential form is masked, visibly; ordinary
hyperparameters and URLs without a password are kept as they are."""

from __future__ import annotations

import pytest

from bridge.system_info import scrub_argv
from bridge.redact import (MASK, is_secret_name, redact_argv, redact_json, redact_text,
                           redact_url, url_has_credentials)

S = "s3cr3t-MARK"


@pytest.mark.parametrize("argv, expected", [
    (["--api-key", S], ["--api-key", MASK]),
    ([f"--password={S}"], ["--password=***"]),
    ([f"wandb.api_key={S}"], ["wandb.api_key=***"]),                  # Hydra
    ([f"+wandb.api_key={S}"], ["+wandb.api_key=***"]),                # Hydra append
    ([f"HF_TOKEN={S}"], ["HF_TOKEN=***"]),
    ([f"PGPASSWORD={S}"], ["PGPASSWORD=***"]),
    ([f"--apiKey={S}"], ["--apiKey=***"]),                            # camelCase
    (["--auth", S], ["--auth", MASK]),
    (["-p", S], ["-p", MASK]),
    (["--pw", S], ["--pw", MASK]),
    (["--pass", S], ["--pass", MASK]),
    (["--hf_token", S], ["--hf_token", MASK]),
    (["-token", S], ["-token", MASK]),                                # Go-style flag
    (["--db", f"postgresql://u:{S}@db/x"], ["--db", "postgresql://u:***@db/x"]),
    ([f"DATABASE_URL=redis://:{S}@cache:6379/0"], ["DATABASE_URL=redis://:***@cache:6379/0"]),
    ([f"--opts=lr=0.1 token={S}"], ["--opts=lr=0.1 token=***"]),
    ([f"--auth={S}", "--lr", "0.1"], ["--auth=***", "--lr", "0.1"]),
    (["--auth", "--lr", "0.1"], ["--auth", "--lr", "0.1"]),          # a switch: next is a flag
])
def test_argv_forms_are_masked(argv, expected):
    assert redact_argv(argv) == expected
    assert scrub_argv(argv) == expected  # the system event's entry point uses the same rules


@pytest.mark.parametrize("argv", [
    ["--lr", "0.1"],
    ["--keyframes", "3"],          # 'key' only counts as the whole last part of a name
    ["--tokenizer", "bert"],
    ["--max-tokens", "512"],
    ["--token-file", "/run/secrets/t"],  # a path to a secret is not the secret
    ["--password-file", "/run/secrets/p"],
    ["--monkey", "3"],
    ["--uri", "http://alice@127.0.0.1:5000/x"],         # a user name alone is not masked
    ["--uri", "http://127.0.0.1:5000/api?email=a@b.c"],  # '@' after the host is not userinfo
    ["train.py", "model=resnet", "lr=0.1", "data.path=/d"],
])
def test_ordinary_arguments_are_kept(argv):
    assert redact_argv(argv) == argv


def test_url_userinfo_and_query():
    assert redact_url(f"http://alice:{S}@host:5000/p") == "http://alice:***@host:5000/p"
    assert redact_url(f"https://u:p@ss{S}@host/") == "https://u:***@host/"  # '@' in password
    assert redact_url(f"https://h/x?api_key={S}&page=2") == "https://h/x?api_key=***&page=2"
    assert redact_url("http://alice@host/p?page=2") == "http://alice@host/p?page=2"
    assert url_has_credentials(f"see http://alice:{S}@host")
    assert url_has_credentials(f"http://host/?access_token={S}")
    assert not url_has_credentials("http://alice@host:5000/a@b")
    assert not url_has_credentials("no url, token=x")


def test_free_text_messages():
    msg = (f"POST http://alice:{S}@127.0.0.1:5000/api failed: 401 {{'password': '{S}'}} "
           f"Authorization: Bearer {S} (ran with --auth {S} and --lr 0.1)")
    out = redact_text(msg)
    assert S not in out
    assert "http://alice:***@127.0.0.1:5000/api" in out and "'password': '***'" in out
    assert "Bearer ***" in out and "--auth ***" in out and "--lr 0.1" in out
    assert redact_text("loss=0.5 at step 3") == "loss=0.5 at step 3"
    assert redact_json({"a": [f"token={S}", 3], "b": None}) == {"a": ["token=***", 3], "b": None}


@pytest.mark.parametrize("name, secret", [
    ("wandb.api_key", True), ("HF_TOKEN", True), ("MLFLOW_TRACKING_PASSWORD", True),
    ("client_secret", True), ("db-passwd", True), ("credentials", True), ("--auth", True),
    ("sort_key", True),  # deliberately broad: a masked harmless value costs little
    ("keyframes", False), ("tokenizer", False), ("max_tokens", False), ("lr", False),
    ("tracking_uri", False), ("password_file", False), ("AWS_ACCESS_KEY_ID", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret
