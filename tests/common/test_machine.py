"""What the machine can do is checked where training starts, from a described Machine: no probe is patched."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer import ConfigError, TrainerConfig
from posttrain_llm.online_rl_trainer.core.common.machine import Machine, check_machine

CPU_ONLY = Machine()
GPU = Machine(cuda=True, cuda_bf16=True)


def test_a_cpu_config_runs_on_a_bare_machine():
    check_machine(TrainerConfig(model_name_or_path="m"), CPU_ONLY)


def test_use_gpu_without_cuda_names_the_fix():
    config = TrainerConfig(model_name_or_path="m", use_gpu=True)  # values only: builds on a CPU machine
    with pytest.raises(ConfigError, match=r"use_gpu=True but no CUDA device is visible; set use_gpu=False"):
        check_machine(config, CPU_ONLY)
    check_machine(config, GPU)


@pytest.mark.parametrize("use_gpu, machine, message", [
    (False, Machine(), "this CPU has no bfloat16 instructions"),
    (True, Machine(cuda=True), "this GPU has no bfloat16 support"),
])
def test_bf16_without_hardware_support_is_refused(use_gpu, machine, message):
    with pytest.raises(ConfigError, match=rf"bf16=True but {message}; set bf16=False \(fp32\)"):
        check_machine(TrainerConfig(model_name_or_path="m", use_gpu=use_gpu, bf16=True), machine)


def test_bf16_with_support_is_accepted_on_either_device():
    check_machine(TrainerConfig(model_name_or_path="m", bf16=True), Machine(cpu_bf16=True))
    check_machine(TrainerConfig(model_name_or_path="m", use_gpu=True, bf16=True), GPU)


def test_the_trainer_checks_the_machine_before_loading_anything(monkeypatch, tmp_path):
    from posttrain_llm.online_rl_trainer import OnlineRLTrainer

    monkeypatch.setattr(Machine, "probe", classmethod(lambda cls: CPU_ONLY))
    config = TrainerConfig(model_name_or_path=str(tmp_path / "no-model-here"), use_gpu=True,
                           output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="use_gpu=True but no CUDA device is visible"):
        OnlineRLTrainer(config, lambda completions, **kw: [0.0] * len(completions), [{"prompt": "1+1="}])
    assert not (tmp_path / "out").exists()  # refused before the output folder or the model were touched


def test_probe_describes_this_machine():
    import importlib.util

    import torch

    here = Machine.probe()
    assert here.cuda == torch.cuda.is_available()
    assert here.bitsandbytes == (importlib.util.find_spec("bitsandbytes") is not None)
    assert here.vllm == (importlib.util.find_spec("vllm") is not None)
