"""Nothing read from a file a user hands us runs code (issue 22): checkpoints load with ``weights_only=True`` only,
CIFAR batches through an unpickler that admits arrays and plain data only, and every value written into a generated
#SBATCH line is checked. Each malicious file carries a payload that would create a marker file; the tests assert the
refusal *and* that the marker was never created."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, run_inprocess

from framework import datasets as fdata
from framework.checkpoint import CheckpointError, load_checkpoint, load_resumable, previous_path

from experiments import sweep  # noqa: E402


class Payload:
    """Unpickling this runs ``open(marker, 'w')``: the proof that a loader executed code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


BASE = {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 0, "step": 0, "config": {}}


def test_a_checkpoint_with_a_reduce_payload_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    torch.save({**BASE, "extra": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"not tensors or plain data \(io.open\).*nothing in it was run"):
        load_checkpoint(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_a_checkpoint_from_before_plain_rng_states_still_loads(tmp_path):
    """Old checkpoints held np.random.get_state()'s tuple (a uint32 array): admitted by name, no code run."""
    state = np.random.get_state()
    torch.save({**BASE, "rng_per_rank": [{"numpy": state}]}, tmp_path / "old.pt")
    ckpt = load_checkpoint(str(tmp_path / "old.pt"))
    keys = ckpt["rng_per_rank"][0]["numpy"][1]
    assert isinstance(keys, np.ndarray) and keys.dtype == np.uint32 and np.array_equal(keys, state[1])


def test_an_object_array_with_a_payload_is_refused(tmp_path):
    """The NumPy allowlist does not open a door: an object array's items still need their own globals."""
    marker = tmp_path / "ran"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    torch.save({**BASE, "x": arr}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="refused unread"):
        load_checkpoint(str(tmp_path / "obj.pt"))
    assert not marker.exists()


def _tiny_run(run: Path) -> None:
    assert run_inprocess([*TINY, "--sched", "baseline", "--warmup-epochs", "1", "--output", str(run)]) == 0


def _poison(path: Path, marker: Path) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["extra"] = Payload(marker)
    torch.save(ckpt, path)


def test_train_py_refuses_a_poisoned_last_pt_without_running_it(tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "ran"
    _tiny_run(run)
    (run / "results.json").unlink()  # an unfinished run: the next command resumes from last.pt
    os.remove(previous_path(str(run / "last.pt")))
    _poison(run / "last.pt", marker)
    code = run_inprocess([*TINY, "--sched", "baseline", "--warmup-epochs", "1", "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "refused unread" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_poisoned_last_pt_falls_back_to_a_sound_prev_pt_with_a_warning(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "ran"
    _tiny_run(run)
    _poison(run / "last.pt", marker)
    ckpt, used, warnings = load_resumable(str(run / "last.pt"))
    assert used == str(run / "prev.pt") and ckpt["step"] > 0
    assert len(warnings) == 1 and "refused unread" in warnings[0]
    assert not marker.exists()


# -- CIFAR's python batches --------------------------------------------------------------------------------------
def _cifar_dir(tmp_path: Path, test_batch: object) -> Path:
    folder, train_files, test_files, key = fdata.CIFAR_LAYOUT["cifar10"]
    d = tmp_path / folder
    d.mkdir(parents=True)
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for f in train_files:
        with open(d / f, "wb") as fh:
            pickle.dump({"data": data, key: [1, 2], "batch_label": b"training batch"}, fh, protocol=2)
    with open(d / test_files[0], "wb") as fh:
        pickle.dump(test_batch, fh)
    return tmp_path


def test_cifar_batches_load_through_the_restricted_unpickler(tmp_path):
    root = _cifar_dir(tmp_path, {"data": np.zeros((1, 3072), np.uint8), "labels": [3]})
    x, y = fdata.load_cifar("cifar10", str(root), "train")
    assert x.shape == (10, 3, 32, 32) and y.tolist() == [1, 2] * 5
    x, y = fdata.load_cifar("cifar10", str(root), "val")
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [3]


@pytest.mark.parametrize("make", [
    lambda marker: {"data": np.zeros((1, 3072), np.uint8), "labels": [Payload(marker)]},
    lambda marker: Payload(marker),
])
def test_a_cifar_batch_with_a_payload_is_refused_unrun(tmp_path, make):
    marker = tmp_path / "ran"
    root = _cifar_dir(tmp_path, make(marker))
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR python batch .*(io|builtins)\.open.*refused unread"):
        fdata.load_cifar("cifar10", str(root), "val")
    assert not marker.exists()


@pytest.mark.parametrize("content, why", [
    (b"\x80\x02}q\x00(X\x04", "truncated"),
    (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
    (pickle.dumps({"labels": [1]}), "KeyError"),
])
def test_a_damaged_cifar_batch_is_one_clear_error(tmp_path, content, why):
    root = _cifar_dir(tmp_path, {})
    folder, _, test_files, _ = fdata.CIFAR_LAYOUT["cifar10"]
    (root / folder / test_files[0]).write_bytes(content)
    with pytest.raises(ValueError, match="test_batch is not a CIFAR python batch") as e:
        fdata.load_cifar("cifar10", str(root), "val")
    assert why in str(e.value) or why == "truncated"


# -- generated #SBATCH lines ---------------------------------------------------------------------------------------
@pytest.fixture
def runs(tmp_path):
    table = tmp_path / "t.yaml"
    table.write_text("title: t\nbase: configs/fashion_mnist_demo.yaml\ncolumns: [256]\n"
                     "rows: {a: {sched: baseline}}\n")
    return sweep.expand(sweep.load_table(str(table)), runs_dir=str(tmp_path / "runs"))


@pytest.mark.parametrize("key, value", [
    ("AUTOWU_PARTITION", "gpu\ntouch /tmp/x"),
    ("AUTOWU_ACCOUNT", "a;b"),
    ("AUTOWU_TIME", "1:00:00 $(id)"),
    ("AUTOWU_SBATCH_ARGS", "--qos='high; id'"),
])
def test_sbatch_lines_refuse_values_that_would_become_shell_code(runs, key, value):
    parser = sweep.get_train_parser()
    with pytest.raises(sweep.TableError, match=f"{key}.*cannot go into an #SBATCH line"):
        sweep.slurm_script(runs, parser, 1, [], {key: value}, "t", "/tmp/logs")


def test_sbatch_refuses_a_runs_dir_with_a_newline_and_writes_nothing(tmp_path, capsys, monkeypatch):
    table = tmp_path / "t.yaml"
    table.write_text("title: t\nbase: configs/fashion_mnist_demo.yaml\ncolumns: [256]\n"
                     "rows: {a: {sched: baseline}}\n")
    monkeypatch.setenv("AUTOWU_CLUSTER_ENV", str(tmp_path / "none.env"))
    runs_dir = tmp_path / "r\nid"
    assert sweep.main([str(table), "--slurm", "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --runs-dir:") and "cannot go into an #SBATCH line" in err
    assert not runs_dir.exists()


def test_a_bad_quote_in_the_cluster_env_file_is_one_line(tmp_path):
    env = tmp_path / "cluster.env"
    env.write_text("AUTOWU_PARTITION=gpu\nAUTOWU_SETUP=\"source x\n")
    with pytest.raises(sweep.TableError, match=r"cluster.env:2: cannot read the value of AUTOWU_SETUP"):
        sweep.cluster_settings(str(env))


def test_safe_settings_still_make_a_script(runs):
    script = sweep.slurm_script(runs, sweep.get_train_parser(), 1, [],
                                {"AUTOWU_PARTITION": "gpu-a100", "AUTOWU_TIME": "1-00:00:00",
                                 "AUTOWU_SBATCH_ARGS": "--qos=high --constraint=v100-32g"}, "t", "/tmp/logs")
    assert "#SBATCH --partition=gpu-a100\n" in script and "#SBATCH --constraint=v100-32g\n" in script
