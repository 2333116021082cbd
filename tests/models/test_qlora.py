"""QLoRA (load_in_4bit=True): config validation, the 4-bit load arguments, the merged save into a full-precision base,
and (GPU + bitsandbytes only) one GRPO step on a 4-bit tiny model.

Everything but the GPU tests runs without a GPU: the machine checks take a described ``Machine`` (no probe is
patched), and the merge into the full-precision base is checked on an fp32 model; the merged save of a real 4-bit
policy needs CUDA and bitsandbytes and is skipped without them."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from posttrain_llm.online_rl_trainer import ConfigError, TrainerConfig
from posttrain_llm.online_rl_trainer.core.common.machine import Machine, check_machine
from posttrain_llm.online_rl_trainer.core.models import lora as lora_module
from posttrain_llm.online_rl_trainer.core.models.quantization import policy_load_kwargs, qlora_load_kwargs
from tests.builders import plus_one_rows

HAS_CUDA = torch.cuda.is_available()
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
QLORA = dict(model_name_or_path="m", use_peft=True, use_gpu=True, load_in_4bit=True)


#: A machine with everything QLoRA needs.
GPU_WITH_BNB = Machine(cuda=True, cuda_bf16=True, bitsandbytes=True)


# --- config validation ---------------------------------------------------------------------------------------

def test_load_in_4bit_needs_use_peft():
    with pytest.raises(ConfigError, match=r"load_in_4bit=True needs use_peft=True: a 4-bit base cannot be trained"):
        TrainerConfig(model_name_or_path="m", load_in_4bit=True)


def test_load_in_4bit_needs_use_gpu():
    with pytest.raises(ConfigError, match=r"load_in_4bit=True needs use_gpu=True: bitsandbytes' 4-bit layers run on"):
        TrainerConfig(model_name_or_path="m", use_peft=True, load_in_4bit=True)


def test_load_in_4bit_is_refused_for_ppo():
    with pytest.raises(ConfigError, match=r"supported for trainer_type 'grpo' and 'rloo', not 'ppo': PPO's separate critic"):
        TrainerConfig(**QLORA, trainer_type="ppo", num_generations=1)


def test_a_config_is_values_only_and_builds_on_any_machine():
    assert TrainerConfig(**QLORA).load_in_4bit is True  # built here, without CUDA or bitsandbytes


@pytest.mark.skipif(HAS_CUDA and HAS_BNB, reason="this machine has both CUDA and bitsandbytes")
def test_this_machine_is_refused_naming_what_it_lacks():
    expected = [what for what, present in (("a visible CUDA device", HAS_CUDA), ("the bitsandbytes package", HAS_BNB))
                if not present]
    with pytest.raises(ConfigError) as info:
        check_machine(TrainerConfig(**QLORA))
    message = str(info.value)
    assert message.startswith("load_in_4bit=True (QLoRA) needs a visible CUDA device and bitsandbytes; missing here: "
                              + " and ".join(expected) + ".")
    assert "pip install 'bitsandbytes>=0.46.1'" in message


def test_missing_bitsandbytes_alone_is_named():
    with pytest.raises(ConfigError, match=r"missing here: the bitsandbytes package\. Install") as info:
        check_machine(TrainerConfig(**QLORA), Machine(cuda=True, cuda_bf16=True))
    assert "CUDA device and bitsandbytes; missing here: the bitsandbytes" in str(info.value)


def test_missing_cuda_alone_is_named():
    with pytest.raises(ConfigError, match=r"missing here: a visible CUDA device\. Install"):
        check_machine(TrainerConfig(**QLORA), Machine(bitsandbytes=True))


def test_a_machine_with_both_accepts_it():
    check_machine(TrainerConfig(**QLORA, trainer_type="rloo"), GPU_WITH_BNB)


def test_yaml_round_trip_keeps_load_in_4bit(tmp_path):
    c = TrainerConfig(**QLORA, lora_save="adapter")
    path = c.save_yaml(tmp_path / "c.yaml")
    assert "load_in_4bit: true" in path.read_text()
    assert TrainerConfig.from_yaml(path) == c


# --- load arguments ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_load_kwargs_are_qlora_nf4_double_quant(bf16, dtype):
    from transformers import BitsAndBytesConfig

    kwargs = qlora_load_kwargs(device_index=1, bf16_supported=bf16)
    q = kwargs["quantization_config"]
    assert isinstance(q, BitsAndBytesConfig)
    assert (q.load_in_4bit, q.load_in_8bit) == (True, False)
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == ("nf4", True, dtype)
    assert kwargs["device_map"] == {"": 1}
    assert kwargs["dtype"] is dtype


def test_policy_load_kwargs_empty_without_load_in_4bit():
    assert policy_load_kwargs(TrainerConfig(model_name_or_path="m", use_peft=True)) == {}


def test_policy_load_kwargs_place_the_model_on_the_local_process_gpu(monkeypatch):
    import accelerate

    class FakeState:
        local_process_index = 3

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    kwargs = policy_load_kwargs(TrainerConfig(**QLORA))
    assert kwargs["device_map"] == {"": 3}
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype is torch.float32


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"])
def test_policy_load_kwargs_refuse_sharded_launches(monkeypatch, flag):
    monkeypatch.setenv(flag, "true")
    with pytest.raises(ConfigError, match=r"load_in_4bit=True under a (DeepSpeed|FSDP) launch is not supported"):
        policy_load_kwargs(TrainerConfig(**QLORA))


def test_an_adapter_folder_is_not_loaded_onto_a_4bit_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    quant = qlora_load_kwargs(device_index=0, bf16_supported=False)
    with pytest.raises(ConfigError, match=r"is a LoRA adapter; merging it into a quantised \(4-bit\) base would be lossy"):
        load_model_and_tokenizer(str(tmp_path / "adapter"), **quant)


def test_a_passed_model_that_is_not_4bit_is_refused(monkeypatch, tiny_model_dir, tmp_path):
    from posttrain_llm.online_rl_trainer import OnlineRLTrainer

    monkeypatch.setattr(Machine, "probe", classmethod(lambda cls: GPU_WITH_BNB))  # a machine that can run QLoRA
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    cfg = TrainerConfig(**{**QLORA, "model_name_or_path": str(tiny_model_dir)}, output_dir=str(tmp_path / "run"))
    rows = [{"prompt": "1+1="}]
    with pytest.raises(ConfigError, match=r"a model object that is not 4-bit was passed"):
        OnlineRLTrainer(cfg, lambda completions, **kw: [0.0] * len(completions), rows, model=model, tokenizer=tokenizer)


# --- merged save with a quantised base -----------------------------------------------------------------------

def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _lora_policy_with_a_drifted_base(tiny_model_dir):
    """A peft policy whose in-memory base differs from the stored one (standing in for the NF4 rounding)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
            elif "lora_" not in name and p.ndim == 2:
                p.add_(0.01)
    return policy


def test_the_merge_into_the_full_precision_base_uses_the_stored_weights(tiny_model_dir, tmp_path):
    """What ``lora_save="merged"`` does for a quantised policy, checked on its own: the adapter is merged into the
    base reloaded from disk in its stored precision, not into the weights in memory. (The dispatch from a real
    4-bit policy to this path needs CUDA and bitsandbytes: see the GPU test below.)"""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    policy = _lora_policy_with_a_drifted_base(tiny_model_dir)
    policy.save_pretrained(tmp_path / "adapter")
    merged = lora_module.merge_into_full_precision_base(tmp_path / "adapter")
    assert getattr(merged.config, "quantization_config", None) is None and not isinstance(merged, PeftModel)
    stored_base_with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                                         tmp_path / "adapter")
    expected = _logits(stored_base_with_adapter)
    assert (expected - _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir))).abs().max() > 1e-3
    assert (expected - _logits(policy)).abs().max() > 1e-3  # the in-memory merge would be a different model
    assert torch.allclose(_logits(merged), expected, atol=1e-5, rtol=0)


def test_a_full_precision_policy_is_merged_in_memory(tiny_model_dir, tmp_path):
    """Without quantisation, ``merged`` is the policy as trained (in-memory base + adapter), not the stored base."""
    from transformers import AutoModelForCausalLM

    policy = _lora_policy_with_a_drifted_base(tiny_model_dir)
    out = lora_module.save_lora_policy(policy, tmp_path / "final", "merged")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(out)), _logits(policy), atol=1e-5, rtol=0)


@pytest.mark.skipif(not (HAS_CUDA and HAS_BNB),
                    reason="the merged save of a 4-bit policy needs a CUDA GPU and bitsandbytes; this machine has "
                           f"CUDA={HAS_CUDA}, bitsandbytes={HAS_BNB}")
def test_merged_save_of_a_4bit_policy_merges_into_the_stored_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    quantised = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **qlora_load_kwargs(device_index=0,
                                                                                         bf16_supported=False))
    policy = get_peft_model(quantised, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    assert lora_module.is_quantized(policy)
    out = lora_module.save_lora_policy(policy, tmp_path / "final", "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(merged.config, "quantization_config", None) is None
    expected = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter"))
    assert torch.allclose(_logits(merged), expected, atol=1e-5, rtol=0)


# --- on a GPU with bitsandbytes ------------------------------------------------------------------------------

@pytest.mark.skipif(not (HAS_CUDA and HAS_BNB),
                    reason="QLoRA needs a CUDA GPU and bitsandbytes; this machine has "
                           f"CUDA={HAS_CUDA}, bitsandbytes={HAS_BNB}")
@pytest.mark.parametrize("mode", ["merged", "adapter"])
def test_one_grpo_step_on_a_4bit_tiny_model_and_save(tiny_model_dir, tmp_path, mode):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from posttrain_llm.online_rl_trainer import OnlineRLTrainer

    def frac7(completions, **kwargs):
        return [c[0]["content"].count("7") / max(1, len(c[0]["content"])) for c in completions]

    rows = plus_one_rows(8)
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, use_gpu=True, load_in_4bit=True,
                        lora_r=4, lora_alpha=8, lora_save=mode, max_steps=1, learning_rate=1e-2, kl_coef=0.05,
                        max_completion_length=5, num_generations=4, per_device_train_batch_size=8,
                        output_dir=str(tmp_path / "run"), save_steps=1000)
    trainer = OnlineRLTrainer(cfg, frac7, rows)
    policy = trainer.backend.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in policy.modules())
    lora_before = {k: v.detach().clone() for k, v in policy.named_parameters() if "lora_B" in k}
    trainable = [k for k, v in policy.named_parameters() if v.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    trainer.train()
    after = dict(policy.named_parameters())
    assert any(not torch.equal(after[k], v) for k, v in lora_before.items())
    out = trainer.save_model(tmp_path / "final")
    adapter_dir = out if mode == "adapter" else out / "adapter"
    assert (adapter_dir / "adapter_config.json").is_file()
    if mode == "merged":
        merged = AutoModelForCausalLM.from_pretrained(out)
        assert getattr(merged.config, "quantization_config", None) is None
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
        assert torch.isfinite(_logits(merged)).all()
