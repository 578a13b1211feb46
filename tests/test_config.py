"""Configuration: YAML keys are the flag names, the command line wins, and every mistake is a clear error that
leaves nothing behind."""
from __future__ import annotations

import pytest
import yaml

from conftest import TINY, run_cmd, run_inprocess, train_cmd

import train
from framework.config import ConfigError, parse_args


def parse(argv):
    return parse_args(train.get_args_parser(), argv)


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_sets_defaults_and_command_line_wins(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", {"batch-size": 1024, "opt": "lamb", "sync_bn": True, "opt-betas": [0.8, 0.9],
                                            "sched-kwargs": {"fit_steps": 10}})
    args = parse(["-c", cfg, "--batch-size", "2048", "--no-sync-bn"])
    assert args.batch_size == 2048  # command line over the file
    assert args.opt == "lamb" and args.opt_betas == [0.8, 0.9] and args.sched_kwargs == {"fit_steps": 10}
    assert args.sync_bn is False
    assert args.config == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    cfg = write_yaml(tmp_path / "bad.yaml", {"batch-size": 256, "warmup-epoch": 5})
    with pytest.raises(ConfigError, match=r"warmup-epoch.*bad\.yaml"):
        parse(["-c", cfg])


@pytest.mark.parametrize("key,value", [("batch-size", "256"), ("batch-size", 2.5), ("lr", "fast"), ("hflip", "yes"),
                                       ("opt", "adam"), ("opt-betas", 0.9), ("sched-kwargs", [1, 2])])
def test_wrong_type_names_key_and_file(tmp_path, key, value):
    cfg = write_yaml(tmp_path / "typed.yaml", {key: value})
    with pytest.raises(ConfigError, match=rf"{key}.*typed\.yaml"):
        parse(["-c", cfg])


def test_resolved_config_round_trips(tmp_path):
    out = tmp_path / "run"
    assert run_inprocess([*TINY, "--epochs", "1", "--opt", "lamb", "--output", str(out)]) == 0
    saved = yaml.safe_load((out / "args.yaml").read_text())
    assert saved["opt-eps"] == 1e-6 and saved["weight-decay"] == 0.1  # LAMB's Appendix A values, resolved
    assert saved["lr"] == pytest.approx(1e-2 * (32 / 256) ** 0.5)  # Appendix B: 1e-2 * sqrt(B/256)
    again = parse(["-c", str(out / "args.yaml")])  # the resolved config is itself a valid config
    assert again.lr == saved["lr"] and again.batch_size == 32


def test_cli_errors_write_nothing(tmp_path):
    """Unknown key through the real command line: exit status 2, the message names key and file, no run dir."""
    cfg = write_yaml(tmp_path / "typo.yaml", {"epochz": 3})
    out = tmp_path / "run"
    proc = run_cmd(train_cmd("-c", cfg, "--output", str(out)))
    assert proc.returncode == 2
    assert "epochz" in proc.stderr and "typo.yaml" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--batch-size", "33", "--micro-batch", "16", "--mixup", "0.8"], "no even micro-batch <= 16 divides the 33"),
    (["--micro-batch", "0"], "--micro-batch must be >= 1"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/data"], "cifar10"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--sched", "baseline", "--warmup-epochs", "7"], "warmup_epochs=7.0 must be in [0, total_epochs=3]"),
    (["--sched", "autowu-cos", "--autowu-rho-w", "1.5"], "rho_w=1.5"),
])
def test_bad_runs_fail_before_writing(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert run_inprocess([*TINY, *extra, "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_output_is_required(capsys):
    assert run_inprocess([*TINY]) == 2
    assert "--output" in capsys.readouterr().err

