"""The machine a run computes on: what records say about it, which precision `auto` picks, and the
warning for a precision the device cannot run natively.

Known answers come from independent sources: `lscpu` (util-linux) for the CPU model and flags,
torch.utils.benchmark for a matmul's time, the schema's own dtypes for the run ids. A CPU without
bf16 instructions is simulated (this one has them): its flags and its two measured peaks. The unit is one machine (this one) and one job config; no study runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import pytest
import torch

from poolbench import machine
from poolbench.config import Dtype
from poolbench.features import _backbone_fields
from poolbench.jobs import MODES, run_job, typed_config
from poolbench.machine import (CPU_FLAGS, machine_facts, matmul_peak, matmul_peaks, native_bf16, peaks_path,
                               precision_warning, resolve_dtype)
from poolbench.records import Record, read_record, run_identity

PROBE = ["mode=probe", "backbone=tiny-bert", "task=mcid", "pooling=mean", "layer=-1", "task.max_train_examples=40",
         "mode.max_epochs=1"]
NATIVE = Dtype.bfloat16 if native_bf16("cpu") else Dtype.float32  # what auto gives on this machine's CPU
OTHER = Dtype.float32 if NATIVE == Dtype.bfloat16 else Dtype.bfloat16


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="needs lscpu")
def test_the_cpu_model_and_flags_are_those_lscpu_reports():
    lines = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                                              check=True).stdout.splitlines() if ":" in line)
    model, flags = machine.cpu()
    assert model == lines["Model name"].strip()
    assert flags == tuple(flag for flag in CPU_FLAGS if flag in lines["Flags"].split())
    facts = machine_facts()
    assert facts["cpu_flags"] == list(flags) and facts["torch_threads"] == torch.get_num_threads()
    assert facts["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def test_auto_resolves_to_bf16_only_where_the_device_has_bf16_instructions(monkeypatch):
    for flags, expected in [(("avx2", "avx512f"), Dtype.float32), (("avx2", "avx512_bf16"), Dtype.bfloat16),
                            (("amx_bf16", "amx_tile"), Dtype.bfloat16), ((), Dtype.float32)]:
        monkeypatch.setattr(machine, "cpu", lambda: ("a CPU", flags))
        assert resolve_dtype(Dtype.auto, "cpu") == expected, flags
        assert resolve_dtype(Dtype.float32, "cpu") == Dtype.float32  # a precision given is kept
        assert resolve_dtype(Dtype.bfloat16, "cpu") == Dtype.bfloat16


def test_an_auto_run_is_the_run_of_the_precision_it_resolved_to(make_cfg):
    """Run ids: auto on this machine == its resolved dtype, != the other; so are the feature keys."""
    def run_id(dtype: str) -> str:
        config = typed_config(make_cfg(*PROBE, f"backbone.dtype={dtype}"))
        return run_identity(MODES[config.mode.name].identity(config, 2))

    assert typed_config(make_cfg(*PROBE, "backbone.dtype=auto")).backbone.dtype == NATIVE
    assert run_id("auto") == run_id(NATIVE.value) != run_id(OTHER.value)
    auto = typed_config(make_cfg(*PROBE, "backbone.dtype=auto")).backbone
    auto.dtype = Dtype.auto  # a caller outside the job owner, e.g. a notebook: the key names the precision too
    assert _backbone_fields(auto)["dtype"] == resolve_dtype(Dtype.auto, "cpu").value


def test_a_job_records_its_machine_and_the_precision_it_resolved(make_cfg, tmp_path):
    records = run_job(make_cfg(*PROBE, "backbone.dtype=auto"), tmp_path / "job")
    record = read_record(records[0].dir)
    assert record.config["backbone"]["dtype"] == NATIVE.value
    assert record.machine == machine_facts()
    assert record.machine["cpu"] == machine.cpu()[0]


def test_a_record_written_before_machines_were_recorded_still_reads(tmp_path):
    old = {"run_id": "r", "status": "failed", "study": None, "factors": None, "config": {}, "schema": 2}
    (tmp_path / "record.json").write_text(json.dumps(old))
    assert read_record(tmp_path).machine == {}


def test_the_matmul_peak_is_measured_once_per_machine_then_read(tmp_path, monkeypatch):
    measured = []
    monkeypatch.setattr(machine, "matmul_peak", lambda dtype, device="cpu": measured.append(dtype) or 100.0)
    first = matmul_peaks(tmp_path)
    assert first == {"float32": 100.0, "bfloat16": 100.0} and len(measured) == 2
    assert matmul_peaks(tmp_path) == first and len(measured) == 2  # from the cache: nothing measured again
    assert peaks_path(tmp_path).exists()


def test_the_matmul_peak_is_two_flops_per_multiply_add_over_the_best_time(monkeypatch):
    """Known answer on a fake clock (no timing of this machine): matmuls that take 4, 2 and 3 ms after a
    warm-up of 9 ms give 2 x 512^3 FLOP / 2 ms."""
    ticks = iter([0.0, 0.009, 1.0, 1.004, 2.0, 2.002, 3.0, 3.003])
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(ticks))
    assert matmul_peak(torch.float32, size=512, repeats=3) == pytest.approx(2 * 512 ** 3 / 0.002 / 1e9)


def test_bf16_on_a_cpu_without_bf16_instructions_warns_with_the_measured_slowdown(make_cfg, tmp_path, monkeypatch,
                                                                                caplog):
    monkeypatch.setattr(machine, "cpu", lambda: ("a CPU without bf16", ("avx2",)))
    monkeypatch.setattr(machine, "matmul_peak", lambda dtype, device="cpu": 30.0 if dtype == torch.bfloat16 else 200.0)
    assert precision_warning(Dtype.float32, "cpu", tmp_path) is None
    warning = precision_warning(Dtype.bfloat16, "cpu", tmp_path)
    assert "0.15x float32" in warning and "30 vs 200 GFLOP/s" in warning
    cfg = make_cfg(*PROBE, "backbone.dtype=bfloat16", f"paths.cache_dir={tmp_path}")
    with caplog.at_level(logging.WARNING, logger="poolbench"):
        records = run_job(cfg, tmp_path / "job")
    assert records[0].finished and any("0.15x float32" in r.getMessage() for r in caplog.records)
