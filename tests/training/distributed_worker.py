"""One tiny training run for ``tests/training/test_distributed.py``, started as 1 process or as N under ``accelerate launch``.

    python tests/training/distributed_worker.py --algo grpo --model DIR --output-dir OUT --report-dir REP --batch 16
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml tests/training/distributed_worker.py ... --batch 8

Each process writes ``<report-dir>/rank<r>.json`` (its metrics history, the number of evaluator runs it did, every
write it made under the output folder) and ``rank<r>_weights.pt`` (its final policy; PPO's critic before and after
training), and the trainer saves the model to ``<output-dir>/final``. The report folder is outside the output folder,
so these files are not among the writes the test looks for.

``--tools`` makes every rollout multi-turn (an environment with an ``add`` tool; GRPO/RLOO/PPO alike): the first
turn of half of each group's samples is a scripted call of the tool, every other turn is sampled; with
``--seeded-sampling`` that sampling is keyed by the sample as below (:func:`seeded_agent_sampling`).

``--seeded-sampling`` replaces the policy's sampling with one whose randomness is keyed by the sample, not by the
process: the k-th completion of a prompt at the n-th generation call is drawn from the policy's own (temperature-
scaled) distribution with a generator seeded by (seed, n, prompt tokens, k). TRL seeds every process differently
(``set_seed(seed, device_specific=True)``) and draws a batch's samples from one stream, so without this the
completions of a 2-process run cannot match a 1-process one; with it they are identical token for token, and the
rest of the step (log-probs, rewards, advantages, loss, gradient all-reduce, optimizer) is the real code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

import torch


def digit_share(completions, **kwargs):
    """Share of the completion's characters that are digits: varied on the untrained tiny model, so advantages
    are non-zero and every step really moves the weights."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def char_variety(completions, **kwargs):
    """Distinct characters / characters: the evaluation's reward (greedy text of the tiny model is rarely digits,
    but its variety moves with every update, so the evaluations of two runs are compared on a live number)."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(t)) / max(1, len(t)) for t in texts]


@torch.no_grad()
def keyed_sample(model, prompt: list[int], key: str, budget: int, temperature: float,
                 stop: set[int]) -> tuple[list[int], list[float]]:
    """Sample up to ``budget`` tokens after ``prompt`` token by token (no cache, no batch: the same numbers in any
    process and batch) from a generator seeded by ``key``; stop after a token in ``stop`` -> (tokens, log-probs)."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    device = next(model.parameters()).device
    ids, new, logps = torch.tensor([prompt], device=device), [], []
    for _ in range(budget):
        logits = model(input_ids=ids, use_cache=False).logits[0, -1].float() / temperature
        token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))
        new.append(token)
        logps.append(float(torch.log_softmax(logits, dim=-1)[token]))
        ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
        if token in stop:
            break
    return new, logps


def seeded_sampling(model, num_generations: int, seed: int) -> None:
    """Patch ``model.generate`` (sampling only; greedy calls go to the original) with per-sample seeded sampling."""
    original = model.generate
    calls = [0]

    @torch.no_grad()
    def generate(input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        if generation_config is None or not generation_config.do_sample:
            return original(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
                            **kwargs)
        call, calls[0] = calls[0], calls[0] + 1
        eos = generation_config.eos_token_id
        eos = {eos} if isinstance(eos, int) else set(eos)
        pad = generation_config.pad_token_id
        rows = []
        for i in range(input_ids.shape[0]):
            prompt = input_ids[i][attention_mask[i].bool()]
            key = repr((seed, call, prompt.tolist(), i % num_generations))
            rows.append(keyed_sample(model, prompt.tolist(), key, generation_config.max_new_tokens,
                                     generation_config.temperature, eos)[0])
        width = max(len(r) for r in rows)
        completions = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=input_ids.device)
        return torch.cat([input_ids, completions], dim=1)

    model.generate = generate


class WriteAudit:
    """Every file write, rename, removal or folder creation this process makes under ``root`` (sys audit hook)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root.resolve())
        self.events: list[list[str]] = []
        sys.addaudithook(self._hook)

    def _under(self, path) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(self.root)
        except (TypeError, ValueError):
            return False

    def _hook(self, event: str, args) -> None:
        if event == "open" and self._under(args[0]) and not os.path.isdir(args[0]):
            mode, flags = args[1], args[2]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writes:
                self.events.append([event, os.fsdecode(args[0])])
        elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.mkdir", "os.truncate"):
            if self._under(args[0]) or (event == "os.rename" and self._under(args[1])):
                self.events.append([event, os.fsdecode(args[0])])


class AddEnv:
    """One tool; no reward of its own (the run's reward is ``digit_share`` of the final answer)."""

    def reset(self, **row) -> None:
        return None

    def add(self, a: int, b: int) -> str:
        """Add two integers.

        Args:
            a: The first integer.
            b: The second integer.
        """
        return str(a + b)


def seeded_agent_sampling(num_generations: int, seed: int) -> None:
    """Patch the multi-turn rollouts' generator (``agent_rollouts.hf_generate_fn``; greedy calls keep the real one).

    Turn 1 of sample k of a group (k = position in the group: the first call holds every rollout, groups
    adjacent) is a scripted ``add`` call for k < num_generations / 2, else sampled. Every sampled turn draws from
    the policy's temperature-scaled distribution with a generator keyed by (seed, generation round, turn, the
    sequence's tokens, k at turn 1 / the rank of the sequence among identical ones in the call after): rollouts
    advance turn by turn, so a sequence has the same key whichever process and batch it is in."""
    from posttrain_llm.online_rl_trainer.core.agents import ParsedCall, end_of_turn_ids, render_call
    from posttrain_llm.online_rl_trainer.core.backends import agent_rollouts

    real = agent_rollouts.hf_generate_fn
    rounds = [0]

    def factory(model, tokenizer, *, temperature=1.0, do_sample=True, **kwargs):
        if not do_sample:
            return real(model, tokenizer, temperature=temperature, do_sample=do_sample, **kwargs)
        generation, rounds[0] = rounds[0], rounds[0] + 1
        turn = [0]
        stop = set(end_of_turn_ids(tokenizer))
        script = tokenizer.encode(render_call(ParsedCall("add", {"a": 2, "b": 3}), "chatml"),
                                  add_special_tokens=False) + [tokenizer.eos_token_id]

        @torch.no_grad()
        def generate(sequences, budgets):
            t, turn[0] = turn[0], turn[0] + 1
            seen: dict[tuple, int] = {}
            out = []
            for i, (seq, budget) in enumerate(zip(sequences, budgets)):
                k = i % num_generations if t == 0 else seen.get(tuple(seq), 0)
                seen[tuple(seq)] = seen.get(tuple(seq), 0) + 1
                if t == 0 and k < num_generations // 2:
                    out.append((script[:budget], [0.0] * len(script[:budget])))
                    continue
                out.append(keyed_sample(model, list(seq), repr((seed, generation, t, list(seq), k)), budget,
                                        temperature, stop))
            return out

        return generate

    agent_rollouts.hf_generate_fn = factory


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--algo", choices=["grpo", "rloo", "ppo"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--report-dir", required=True)
    p.add_argument("--batch", type=int, required=True, help="per_device_train_batch_size (completions)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeded-sampling", action="store_true")
    p.add_argument("--tools", action="store_true", help="multi-turn rollouts with an add tool")
    p.add_argument("--curriculum", action="store_true", help="prompts drawn by the pass-rate curriculum")
    args = p.parse_args()

    from posttrain_llm.online_rl_trainer import ModelEvaluator, OnlineRLTrainer, SyntheticArithmeticLoader, TrainerConfig

    out, report = Path(args.output_dir), Path(args.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    audit = WriteAudit(out)
    evaluations = [0]
    original_evaluate = ModelEvaluator.evaluate

    def counted_evaluate(self, *a, **kw):
        evaluations[0] += 1
        return original_evaluate(self, *a, **kw)

    ModelEvaluator.evaluate = counted_evaluate

    loader = SyntheticArithmeticLoader(num_train=64, num_test=8)
    train, test = loader.load("train", seed=args.seed), loader.load("test", seed=args.seed)
    ppo = args.algo == "ppo"
    config = TrainerConfig(
        trainer_type=args.algo, model_name_or_path=args.model, output_dir=str(out), seed=args.seed,
        max_steps=args.steps, learning_rate=3e-4, kl_coef=0.05, max_completion_length=120 if args.tools else 16,
        temperature=1.0, **({"max_turns": 2, "tool_call_format": "chatml", "tools_in_prompt": False}
                            if args.tools else {}),
        num_generations=2 if ppo else 4, per_device_train_batch_size=args.batch, save_steps=1000, eval_steps=1,
        torch_num_threads=1, **({"ppo_epochs": 2, "num_mini_batches": 1} if ppo else {}),
        **({"curriculum": True, "curriculum_pass_threshold": 0.5} if args.curriculum else {}),
        # Several processes compute every row's prompt with it (shared prompts are single-process only), so the
        # one-process run they are compared with does too: the same computation, not just the same function.
        # Likewise the zero-advantage skip (off under several processes; its update/skipped_micro_batches metric
        # would be the only key the two runs do not share).
        share_prompt_prefix=False, skip_zero_advantage=False,
    )
    trainer = OnlineRLTrainer(config, digit_share, train, eval_data=test, eval_reward_fn=char_variety,
                              environment_factory=AddEnv if args.tools else None)
    if args.seeded_sampling and args.tools:
        seeded_agent_sampling(config.num_generations, args.seed)
    elif args.seeded_sampling:
        seeded_sampling(trainer.model, config.num_generations, args.seed)
    critic = getattr(trainer.backend, "critic", None)  # PPO's
    critic_start = {k: v.detach().clone() for k, v in critic.state_dict().items()} if critic is not None else None
    trainer.evaluate()
    trainer.train()
    trainer.save_model(out / "final")

    rank = int(os.environ.get("RANK", "0"))
    report.mkdir(parents=True, exist_ok=True)
    weights = {"policy": {k: v.detach().clone() for k, v in trainer.backend.model.state_dict().items()}}
    if critic is not None:
        weights["critic_start"] = critic_start
        weights["critic"] = {k: v.detach().clone() for k, v in critic.state_dict().items()}
    torch.save(weights, report / f"rank{rank}_weights.pt")
    (report / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "history": trainer.metrics_history,
        "evaluations": evaluations[0], "writes": audit.events,
    }, default=str))


if __name__ == "__main__":
    main()
