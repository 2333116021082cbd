"""`OnlineRLTrainer`: one entry point for GRPO, RLOO (TRL's trainers) and PPO (ours).

One training step, top to bottom: the loader's chat ``prompt`` -> the tokenizer's chat template -> sampling
``num_generations`` completions -> the reward functions (guarded: a raise, NaN, wrong length or a call longer than
``reward_timeout_s`` stops the run with the reward and sample named) -> advantages -> loss -> optimizer step ->
metrics (console, ``report_to``, history).

What this class adds over calling TRL directly:
- what the machine can do (CUDA, bf16, bitsandbytes, vLLM) is checked first (``common/machine.py``);
- model names resolve offline (``models/resolution.py``), the tokenizer is always passed to TRL;
- a ``CompositeRewardFunction`` is expanded into its components with their weights, so each is logged on its own;
- the dataset (a valid ``prompt`` in every row, no empty dataset) and the output folder (writable) are checked
  before the model loads, the prompts against ``max_prompt_length`` right after;
- task accuracy on ``eval_data`` every ``eval_steps`` for every algorithm (TRL only logs eval reward);
- ``save_model`` writes the model, tokenizer, the config as YAML, the metrics as JSON, a reward-curve PNG and our
  model card (``training/model_card.py``: base model, algorithm and settings, rewards, data, results, how to load/reproduce);
- runs have an identity and own their folder while they train (``files/run_folder.py``): a lock, a run manifest, no
  fresh run over an earlier run's checkpoints, resumes checked against the checkpoint's run; SIGINT/SIGTERM finish
  the step, save a checkpoint and stop with one line (``training/interrupts.py``);
- under ``accelerate launch`` (several processes) only the main process evaluates and writes files; evaluation
  results reach the other processes by broadcast (``configs/README.md``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .common.machine import check_machine
from .config import ConfigError, TrainerConfig
from .data.rows import as_dataset
from .files.output_folders import ensure_writable_folder, staged_folder, write_failures_as_os_errors
from .files.run_folder import RunFolder
from .rewards.base import GuardedReward, RewardFunction, reward_name
from .training.callbacks import AccuracyEvalCallback, MetricsHistoryCallback, PendingLogsCallback
from .training.curves import plot_training_curves, write_metrics_json
from .training.health import HealthCallback
from .training.interrupts import StepAbandoned, StopOnSignal, catch_interrupts, checkpoints_enabled, interruption
from .training.model_card_facts import write_trainer_card

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "online_rl_config.yaml"
METRICS_FILENAME = "training_metrics.json"
PLOT_FILENAME = "reward_curve.png"


def expand_rewards(reward_fn_or_list: Any, config_weights: list[float] | None,
                   allow_empty: bool = False) -> tuple[list[Callable], list[float]]:
    """Flatten rewards into (callables, weights). A composite contributes its components with their weights."""
    items = list(reward_fn_or_list) if isinstance(reward_fn_or_list, (list, tuple)) else [reward_fn_or_list]
    if not items and not allow_empty:
        raise ConfigError("no reward function given; pass a RewardFunction, a callable, or a non-empty list of them")
    if config_weights is not None and len(config_weights) != len(items):
        raise ConfigError(
            f"reward_weights has {len(config_weights)} values but {len(items)} reward functions were given"
        )
    funcs: list[Callable] = []
    weights: list[float] = []
    for i, fn in enumerate(items):
        outer = 1.0 if config_weights is None else config_weights[i]
        components = getattr(fn, "components", None)
        if components is not None:
            for comp, w in components:
                funcs.append(comp)
                weights.append(outer * float(w))
        elif callable(fn):
            funcs.append(fn)
            weights.append(outer)
        else:
            raise ConfigError(f"reward #{i} ({fn!r}) is not callable; pass RewardFunction instances or functions")
    names = [reward_name(f) for f in funcs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"reward names must be unique so their metrics do not collide; duplicated: {dupes}")
    return funcs, weights


def check_prompt_lengths(dataset, tokenizer, max_prompt_length: int | None) -> int:
    """Raise naming the first row whose templated prompt exceeds ``max_prompt_length`` tokens; return the longest."""
    from .common.tokens import encode_prompt, max_chars_per_token, question_chars

    longest = 0
    chars_per_token = max_chars_per_token(tokenizer) if max_prompt_length is not None else None
    for i, prompt in enumerate(dataset["prompt"]):
        if chars_per_token is not None:
            # A prompt of megabytes would take gigabytes to tokenize just to be rejected: its characters already tell.
            chars = question_chars(prompt)
            if chars > max_prompt_length * chars_per_token:
                raise ConfigError(
                    f"prompt of row {i} has {chars} characters, more than max_prompt_length={max_prompt_length} tokens "
                    f"can hold (this tokenizer's longest token is {chars_per_token} characters); shorten or filter the "
                    "prompts, or raise max_prompt_length"
                )
        n = len(encode_prompt(tokenizer, prompt))
        longest = max(longest, n)
        if max_prompt_length is not None and n > max_prompt_length:
            raise ConfigError(
                f"prompt of row {i} is {n} tokens, over max_prompt_length={max_prompt_length}; raise "
                "max_prompt_length (or set it to None) or shorten/filter the prompts"
            )
    return longest


class OnlineRLTrainer:
    """Train a causal LM with online RL. ``OnlineRLTrainer(config, reward_fn_or_list, train_data, eval_data=None)``.

    ``tools`` (typed, documented functions) and/or ``environment_factory`` (TRL's contract: ``reset``, tool methods,
    optional ``get_reward``) make every rollout multi-turn, for grpo, rloo and ppo alike (``backends/agent_rollouts.py``;
    budgets and format from the config's ``max_turns``, ``max_tool_calls``, ``tool_*`` fields).

    ``model``/``tokenizer`` may be passed to train an in-memory model instead of ``config.model_name_or_path``
    (with ``kl_coef > 0`` TRL reloads the reference model from ``model.config._name_or_path``, so the model must
    then come from a folder).
    """

    def __init__(
        self,
        config: TrainerConfig,
        reward_fn_or_list: RewardFunction | Callable | Sequence[RewardFunction | Callable],
        train_data: Any,
        eval_data: Any = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        eval_reward_fn: RewardFunction | None = None,
        callbacks: Sequence[Any] = (),
        tools: Sequence[Callable] | None = None,
        environment_factory: Callable[[], Any] | None = None,
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise ConfigError(f"config must be a TrainerConfig, got {type(config).__name__}")
        check_machine(config)  # the config holds values; what this machine can do is checked here, where work starts
        self.config = config
        funcs, weights = expand_rewards(reward_fn_or_list, config.reward_weights,
                                        allow_empty=environment_factory is not None)
        self.reward_funcs = [GuardedReward(f, timeout_s=config.reward_timeout_s) for f in funcs]
        self.reward_weights = weights
        self.train_dataset = as_dataset(train_data, "train_data")
        self.eval_dataset = as_dataset(eval_data, "eval_data") if eval_data is not None else None
        if config.eval_steps is not None and self.eval_dataset is None:
            raise ConfigError(f"eval_steps={config.eval_steps} needs eval_data; pass eval_data or set eval_steps=None")
        ensure_writable_folder(config.output_dir, "output_dir")  # before any work (TRL would fail deep inside)
        self._setup_runtime()
        if model is None:
            from .models import load_model_and_tokenizer
            from .models.quantization import policy_load_kwargs

            model, loaded_tok = load_model_and_tokenizer(config.model_name_or_path, **policy_load_kwargs(config))
            tokenizer = tokenizer or loaded_tok
        elif tokenizer is None:
            raise ConfigError("a model object was passed without its tokenizer; pass tokenizer=... too")
        elif config.load_in_4bit and not getattr(model, "is_loaded_in_4bit", False):
            raise ConfigError("load_in_4bit=True quantises the model loaded from model_name_or_path, but a model object "
                              "that is not 4-bit was passed; load it with quantization.policy_load_kwargs(config) or "
                              "omit model=")
        from .models import prepare_tokenizer

        prepare_tokenizer(tokenizer)
        self.model, self.tokenizer = model, tokenizer
        # Multi-turn tools/environments (backends/agent_rollouts.py); an environment's get_reward is one more reward.
        from .backends.agent_rollouts import EnvironmentReward, build_agent_setup

        self.agent_setup = build_agent_setup(config, tokenizer, tools, environment_factory)
        if self.agent_setup is not None and self.agent_setup.env_reward_name:
            funcs.append(EnvironmentReward(self.agent_setup.env_reward_name))
            self.reward_funcs.append(GuardedReward(funcs[-1], timeout_s=config.reward_timeout_s))
            self.reward_weights.append(1.0)
        if not funcs:
            raise ConfigError("no reward: pass a reward function, or an environment_factory whose environments define "
                              "get_reward()")
        self.longest_prompt = check_prompt_lengths(self.train_dataset, tokenizer, config.max_prompt_length)

        self.history_callback = MetricsHistoryCallback()
        all_callbacks = [self.history_callback, *callbacks]
        # The evaluation reward: the caller's, else the first reward that can judge one sample (for accuracy).
        self.eval_reward_fn = eval_reward_fn or next((f for f in funcs if isinstance(f, RewardFunction)), funcs[0])
        self._backend = self._build_backend(all_callbacks)
        self._backend.add_callback_first(HealthCallback())  # ahead of the history: its health/* flags reach it
        self._stopper = StopOnSignal(accelerator=getattr(self._backend, "accelerator", None))
        self._backend.add_callback(self._stopper)  # after transformers' own: it may ask for a save at any step
        self._eval_results: dict[int, dict[str, Any]] = {}
        self._pending_logs = PendingLogsCallback()
        if self.eval_dataset is not None and config.eval_steps is not None:
            # First in line, so the eval metrics reach every report_to integration (see PendingLogsCallback).
            self._backend.add_callback_first(self._pending_logs)
            self._backend.add_callback(AccuracyEvalCallback(lambda step: self.evaluate(_periodic=True), config.eval_steps))

    # ------------------------------------------------------------------------------------------------------
    def _setup_runtime(self) -> None:
        import torch

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.config.torch_num_threads:
            torch.set_num_threads(self.config.torch_num_threads)
        from transformers import set_seed

        set_seed(self.config.seed)

    def _build_backend(self, callbacks: list[Any]):
        cfg = self.config
        if cfg.trainer_type in ("grpo", "rloo"):
            from .backends.trl.trainers import build_trl_trainer

            return build_trl_trainer(
                cfg, self.model, self.tokenizer, self.reward_funcs, self.reward_weights, self.train_dataset, callbacks,
                agent_setup=self.agent_setup,
            )
        from .backends.ppo.trainer import PPOTrainer  # an ImportError in PPO surfaces as itself

        return PPOTrainer(
            cfg, self.model, self.tokenizer, self.reward_funcs, self.reward_weights, self.train_dataset, callbacks,
            agent_setup=self.agent_setup,
        )

    def _agent_eval_kwargs(self) -> dict[str, Any]:
        """With tools, evaluation runs the same multi-turn rollouts as training (budgets and format alike)."""
        setup = self.agent_setup
        if setup is None:
            return {}
        cfg = self.config
        return {"tools": list(setup.tools), "environment_factory": setup.environment_factory, "agent_settings": {
            "max_turns": cfg.max_turns, "max_tool_calls": cfg.max_tool_calls, "tool_timeout_s": cfg.tool_timeout_s,
            "max_tool_output_chars": cfg.max_tool_output_chars, "tool_call_format": setup.multi_turn.call_format,
            "tools_in_prompt": cfg.tools_in_prompt}}

    def evaluate(self, eval_data: Any = None, reward_fn: RewardFunction | Callable | None = None, *,
                 _periodic: bool = False) -> dict[str, Any]:
        """Greedy task accuracy of the current policy (``ModelEvaluator`` result dict).

        Without arguments it uses ``eval_data`` and the evaluation reward, records ``eval/accuracy``,
        ``eval/mean_reward`` and ``eval/n`` as a row of ``metrics_history`` at the current step, and caches the
        result per step (so evaluating again at the same step, e.g. right after the last periodic evaluation,
        costs nothing). The periodic evaluation (``eval_steps``) sends the same three metrics with that step's
        training log instead, so they reach the console, every ``report_to`` integration and the history alike.

        With several processes (``accelerate launch``) only the main process generates and scores; the others wait
        and receive its result, so call it on every process (the periodic evaluation does). Not for ZeRO-3/FSDP,
        whose sharded weights the main process cannot generate with alone.
        """
        from .inference import ModelEvaluator

        own = eval_data is None and reward_fn is None
        step = int(self._backend.state.global_step)
        if own and step in self._eval_results:
            return self._eval_results[step]
        data = self.eval_dataset if eval_data is None else as_dataset(eval_data, "eval_data")
        if data is None:
            raise ConfigError("no eval_data: pass it to OnlineRLTrainer(...) or to evaluate()")
        policy = getattr(self._backend, "model", self.model)
        result = None
        if self.is_main_process:
            result = ModelEvaluator(policy, self.tokenizer, max_new_tokens=self.config.max_completion_length,
                                    batch_size=64, show_progress=False,
                                    share_prompt_prefix=self.config.share_prompt_prefix, **self._agent_eval_kwargs()
                                    ).evaluate(data, reward_fn or self.eval_reward_fn)
        accelerator = getattr(self._backend, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1:
            # Collective: the main process generates (the replicas hold the same weights), the others receive it.
            from accelerate.utils import broadcast_object_list

            result = broadcast_object_list([result], from_process=0)[0]
        if own:
            self._eval_results[step] = result
            row = {"eval/accuracy": result["accuracy"], "eval/mean_reward": result["mean_reward"], "eval/n": result["n"]}
            if _periodic:  # sent with this step's training log (console, report_to, history)
                self._pending_logs.pending.update(row)
            else:
                self.history_callback.history.append({"step": step, **row})
            if self.is_main_process:
                logger.info("step %d: eval accuracy %.3f (%d/%d), mean reward %.3f", step, result["accuracy"],
                            result["num_correct"], result["n"] - result["judge_errors"], result["mean_reward"])
        return result

    # ------------------------------------------------------------------------------------------------------
    @property
    def backend(self):
        """The underlying trainer (TRL's GRPOTrainer/RLOOTrainer, or our PPOTrainer)."""
        return self._backend

    @property
    def is_main_process(self) -> bool:
        """True in a single process and on rank 0 under a launcher: the one process that evaluates and writes files."""
        accelerator = getattr(self._backend, "accelerator", None)
        return accelerator is None or bool(accelerator.is_main_process)

    @property
    def metrics_history(self) -> list[dict[str, Any]]:
        """One dict per logged step: reward (total and per component), KL, lengths, step_time, eval/accuracy..."""
        return self.history_callback.history

    def train(self, resume_from_checkpoint: str | bool | None = None, *, resume_mismatch_ok: bool = False
              ) -> dict[str, Any]:
        """Run training; returns the final training summary (runtime, steps, last logged metrics).

        ``resume_from_checkpoint``: None/False starts fresh (refused if ``output_dir`` holds an earlier run's
        checkpoints or finished results, unless ``config.overwrite_output_dir``); True continues from the newest
        undamaged checkpoint; a path from that checkpoint. The checkpoint must come from a run with the same
        identity (``files/run_manifest.py``); ``resume_mismatch_ok=True`` resumes despite differences, logging them.
        SIGINT/SIGTERM stop after the current step with a checkpoint and raise ``TrainingInterrupted``.

        The output folder is checked for writing first; a full disk while a checkpoint or the report is written
        stops with an ``OSError`` naming the folder and the cause.
        """
        from .files.run_manifest import run_identity

        out_dir = ensure_writable_folder(self.config.output_dir, "output_dir")
        accelerator = getattr(self._backend, "accelerator", None)
        barrier = accelerator.wait_for_everyone if accelerator is not None and accelerator.num_processes > 1 else None
        identity = run_identity(self.config.to_dict(), self.train_dataset, [reward_name(f) for f in self.reward_funcs],
                                self.reward_weights)
        with RunFolder(out_dir, self.config.to_dict(), identity, main=self.is_main_process,
                       barrier=barrier or (lambda: None)) as run:
            if self.is_main_process:  # under the lock: a staging folder of a live run is that run's
                from .files.checkpoints import remove_stale_staging

                for path in remove_stale_staging(out_dir):
                    logger.warning("removed %s: an incomplete checkpoint left by a crash while saving", path)
            resume = run.start(resume_from_checkpoint, resume_mismatch_ok, self.config.overwrite_output_dir,
                               self.config.trainer_type)
            output = self._run_backend(resume, out_dir, run)
            summary = dict(getattr(output, "metrics", {}) or {})
            summary["global_step"] = int(getattr(output, "global_step", self._backend.state.global_step))
            self.summary = summary
            run.finish("finished", step=summary["global_step"])
        if not self.is_main_process:  # one writer under a launcher: the main process
            return summary
        with write_failures_as_os_errors(out_dir, lambda reason, exc: (
                f"training finished, but its report could not be written to output_dir {str(out_dir)!r}: {reason}. "
                "The trained policy is still in memory: free some space and call save_model()")):
            write_metrics_json(self.metrics_history, out_dir / METRICS_FILENAME, {"summary": summary})
            plot_training_curves(self.metrics_history, out_dir / PLOT_FILENAME, title=self._plot_title())
        return summary

    def _run_backend(self, resume: Path | None, out_dir: Path, run: RunFolder):
        """The backend's train(), with signals caught (training/interrupts.py) and a full disk reported as such."""
        abandoned = False
        with catch_interrupts() as guard:
            self._stopper.guard, self._stopper.stopped_at, self._stopper.saved = guard, None, False
            try:
                with write_failures_as_os_errors(out_dir, lambda reason, exc: (
                        f"training stopped at step {int(self._backend.state.global_step)}: {reason} while writing under "
                        f"output_dir {str(out_dir)!r} (a checkpoint or log; {type(exc).__name__}: {str(exc)[:200]}). The "
                        "checkpoint being written is incomplete; free some space and resume from the last complete "
                        "checkpoint"), only_writing=False):
                    output = self._backend.train(resume_from_checkpoint=str(resume) if resume is not None else None)
            except StepAbandoned:
                abandoned = True
            finally:
                self._stopper.guard = None
        if not abandoned and self._stopper.stopped_at is None:
            return output
        from .files.checkpoints import latest_checkpoint

        state, newest = self._backend.state, latest_checkpoint(out_dir)
        error = interruption(guard, self._stopper, step=int(state.global_step), max_steps=int(state.max_steps),
                             checkpoint=newest.name if newest is not None else None, abandoned=abandoned,
                             checkpoints_on=checkpoints_enabled(self.config.save_steps, int(state.max_steps)))
        run.finish("interrupted", step=int(state.global_step), checkpoint=error.checkpoint, signal=error.signal_name)
        raise error  # its message is the one line a CLI prints (examples/runs.py)

    def _plot_title(self) -> str:
        return self.config.run_name or f"{self.config.trainer_type.upper()} on {Path(self.config.model_name_or_path).name}"

    def save_model(self, output_dir: str | Path | None = None) -> Path:
        """Write a ``from_pretrained`` folder plus ``online_rl_config.yaml``, ``training_metrics.json``, the PNG and
        a ``README.md`` model card (``training/model_card.py``; :meth:`write_model_card` adds facts only the caller knows).

        Everything is written into a hidden sibling folder first and moved into place only when all of it was
        written (``output_folders.staged_folder``): a full disk raises ``OSError`` naming the folder and leaves the
        folder as it was (an earlier model there survives).
        """
        out = Path(output_dir or self.config.output_dir)
        with staged_folder(out, getattr(self._backend, "accelerator", None)) as stage:
            self._backend.save_model(str(stage))  # every process: DeepSpeed/FSDP gather the weights collectively
            if self.is_main_process:
                self.tokenizer.save_pretrained(str(stage))
                self.config.save_yaml(stage / CONFIG_FILENAME)
                write_metrics_json(self.metrics_history, stage / METRICS_FILENAME,
                                   {"summary": getattr(self, "summary", {})})
                plot_training_curves(self.metrics_history, stage / PLOT_FILENAME, title=self._plot_title())
                write_trainer_card(self, stage, shown_as=out.absolute(), best_effort=True)
        return out

    def write_model_card(self, folder: str | Path | None = None, **facts: Any) -> Path:
        """Re-write the ``README.md`` of a folder :meth:`save_model` wrote, adding ``facts`` (``dataset_name``,
        ``base_model`` and ``warmup`` when RL started from a warm-up, a before/after ``comparison``, ``command``,
        ``title``, ``license``; see ``training/model_card_facts.py``). They are kept for later saves. Main process only."""
        return write_trainer_card(self, Path(folder or self.config.output_dir), **facts)
