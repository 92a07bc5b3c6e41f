"""``[backends.<name>]`` tables of the config file: defaults for init() and for
``bridge sync --backend NAME`` (docs/configuration.md)."""

from __future__ import annotations

import zipfile

import pytest
from typer.testing import CliRunner

import bridge
from bridge.cli.main import app
from bridge.errors import ConfigError
from bridge.spool.reader import list_runs

runner = CliRunner()


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "bridge.toml"
    monkeypatch.setenv("BRIDGE_CONFIG", str(path))
    return path


def test_sync_backend_uses_the_config_files_backend_table(tmp_path, config_file):
    pytest.importorskip("comet_ml")
    archives = tmp_path / "comet-archives"
    config_file.write_text(f'[backends.comet]\nmode = "offline"\n'
                           f'offline_directory = "{archives}"\nproject = "vision"\n')
    spool = tmp_path / "spool"
    run = bridge.init(project="p", dir=spool, sync="offline")  # names no backend
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1)}, step=i)
    run.finish()
    out = runner.invoke(app, ["sync", "--backend", "comet", "--dir", str(spool)])
    assert out.exit_code == 0, out.output
    zips = list(archives.glob("*.zip"))
    assert zips, "the offline options of [backends.comet] were not used"
    texts = []
    for path in zips:
        with zipfile.ZipFile(path) as z:
            texts += [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
    assert any('"loss"' in t for t in texts)
    assert any('"vision"' in t for t in texts)  # the table's project


def test_init_options_win_over_the_file(tmp_path, config_file):
    config_file.write_text('[backends.memory]\nstore = "from-file"\nextra = 1\n')
    run = bridge.init(project="p", dir=tmp_path, sync="offline",
                      backends=[{"name": "memory", "store": "from-init"}])
    run.finish()
    [rec] = list_runs(tmp_path)
    assert rec.backends == [{"name": "memory", "store": "from-init", "extra": 1}]


@pytest.mark.parametrize("table", ['[backends.mlflow]\ntracking_uri = "http://u:pw@h:5000"\n',
                                   '[backends.wandb]\napi_key = "abc"\n'])
def test_a_credential_in_a_backend_table_is_refused(tmp_path, config_file, table):
    config_file.write_text(table)
    with pytest.raises(ConfigError, match="credential"):
        bridge.init(project="p", dir=tmp_path, sync="offline")
