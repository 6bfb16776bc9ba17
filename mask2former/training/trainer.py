"""The training loop: AdamW with the original recipe, autocast, accumulation, clipping,
periodic evaluation, atomic checkpoints, exact resume and torchrun multi-process training."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checkpoint import CheckpointError
from ..files import append_text
from ..loss.matcher import NonFiniteCostError
from .checkpointing import (
    LOG_FILE,
    STATE_FILE,
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    save_checkpoint,
)
from .data import (
    ResumableBatchSampler,
    TrainSamples,
    WorkerFailure,
    WorkerSafe,
    collate,
    collate_or_failure,
)
from .distributed import DistributedContext, init_distributed
from .optim import build_optimizer, build_scheduler

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "RESUME_FIXED", "resume_conflicts"]

_AMP = {"none": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights became NaN or infinite; training stopped before
    saving them, and the message names the last good checkpoint."""


@dataclass
class TrainConfig:
    """Settings of a training run (the defaults are the original recipe's where it has one)."""

    output_dir: str = "runs/train"
    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_multiplier: float = 0.1
    clip_norm: float = 0.01
    schedule: str = "step"
    milestones: Sequence[float] = field(default_factory=lambda: [0.89, 0.96])
    poly_power: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 1.0
    amp: str = "none"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in _AMP:
            raise ValueError(f"amp must be one of {sorted(_AMP)}, got {self.amp!r}")
        if self.schedule not in ("step", "poly", "constant"):
            raise ValueError(f"schedule must be step, poly or constant, got {self.schedule!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "eval_every", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a number above 0, got {self.lr}")
        for name in ("weight_decay", "backbone_multiplier", "clip_norm", "warmup_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value}")


# Settings a resumed run must share with its checkpoint: they shape the optimisation (the
# optimiser and scheduler states hold the old values, so a new one would be silently ignored or
# half applied) or the sample order. ``max_steps`` may grow (to train longer): the schedule is
# then recomputed over the new length from the resumed step on.
RESUME_FIXED = (
    "max_steps",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "backbone_multiplier",
    "clip_norm",
    "schedule",
    "milestones",
    "poly_power",
    "warmup_steps",
    "warmup_factor",
    "amp",
    "seed",
)


def check_resume_settings(
    state: Dict[str, Any],
    config: TrainConfig,
    checkpoint: str,
    names: Optional[Dict[str, str]] = None,
) -> None:
    """Refuse to continue a training ``state`` with ``config`` when a setting of
    :data:`RESUME_FIXED` differs or the state is past ``max_steps``.

    ``names``: how the messages call the settings (a command's options, e.g. "--lr"); the
    default is the field, as ``lr=0.001``.

    Raises:
        ValueError: naming the setting and both values.
    """

    def shown(name: str, value: Any) -> str:
        return str(value) if names and name in names else repr(value)

    def setting(name: str, value: Any) -> str:
        if names and name in names:
            return f"{names[name]} {value}"
        return f"{name}={value!r}"

    step = state["step"]
    if step > config.max_steps:
        raise ValueError(
            f"{checkpoint} is at step {step}, past {setting('max_steps', config.max_steps)}"
        )
    conflicts = resume_conflicts(state["settings"], config)
    if conflicts:
        name, saved, given = conflicts[0]
        label = (names or {}).get(name, name)
        hint = f" ({label} may only grow)" if name == "max_steps" else ""
        raise ValueError(
            f"{checkpoint} was trained with {setting(name, saved)}, not {shown(name, given)}"
            f"{hint}; a resumed run keeps the settings that shape its optimisation"
        )


def resume_conflicts(saved: Dict[str, Any], config: TrainConfig) -> List[Tuple[str, Any, Any]]:
    """``(field, checkpoint's value, config's value)`` for each setting of ``config`` that may
    not differ from the checkpoint's ``saved`` settings (``max_steps`` may grow)."""
    current = json.loads(json.dumps(asdict(config)))  # tuples as lists, like the saved JSON
    conflicts = []
    for name in RESUME_FIXED:
        if name not in saved or saved[name] == current[name]:
            continue
        if name == "max_steps" and isinstance(saved[name], int) and current[name] > saved[name]:
            continue
        conflicts.append((name, saved[name], current[name]))
    return conflicts


class Trainer:
    """Trains a Mask2FormerForUniversalSegmentation.

    Args:
        model: the model (on the CPU; moved to ``config.device``).
        train_data: a :class:`TrainSamples`.
        config: a :class:`TrainConfig`.
        evaluate: optional ``evaluate(model) -> {metric: value}``, run every ``eval_every``
            steps and at the end on the main process.
        image_processor: saved into every checkpoint so it is a complete model folder.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: TrainSamples,
        config: TrainConfig,
        evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
        image_processor: Any = None,
    ):
        self.config = config
        self.device = torch.device(config.device)
        self.dist: DistributedContext = init_distributed(self.device)
        self.model = model.to(self.device)
        self.train_data = train_data
        self.evaluate = evaluate
        self.image_processor = image_processor
        self.optimizer = build_optimizer(
            self.model, config.lr, config.weight_decay, config.backbone_multiplier
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            config.max_steps,
            warmup_steps=config.warmup_steps,
            warmup_factor=config.warmup_factor,
            schedule=config.schedule,
            milestones=config.milestones,
            power=config.poly_power,
        )
        self.amp_dtype = _AMP[config.amp]
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.step = 0
        self.history: list = []

    # -- state --------------------------------------------------------------------------------

    def _state(self) -> Dict[str, Any]:
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "train_config": json.dumps(asdict(self.config)),
            # --batch-size is per process: the run's batch is it times this.
            "world_size": self.dist.world_size,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def check_resume(self, state: Dict[str, Any], checkpoint: str) -> None:
        """Refuse to resume from a training ``state`` (of :func:`load_training_state`) that
        this run's settings do not continue.

        Raises:
            ValueError: naming the setting and both values.
        """
        check_resume_settings(state, self.config, checkpoint)
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise ValueError(
                f"{checkpoint} was trained by {saved_world} process(es), this run has "
                f"{self.dist.world_size}: the batch and the sample order would change"
            )

    def resume(
        self, checkpoint: Optional[str] = None, state: Optional[Dict[str, Any]] = None
    ) -> bool:
        """Continue from ``checkpoint`` (default: the newest in ``output_dir``); False if none.

        ``state``: its training state when already read with :func:`load_training_state`.

        Raises:
            CheckpointError: the checkpoint is damaged, foreign or holds non-finite weights, or
                does not fit the model, naming the file.
            ValueError: this run's settings differ from the checkpoint's (see
                :data:`RESUME_FIXED`).
        """
        checkpoint = checkpoint or latest_checkpoint(self.config.output_dir)
        if checkpoint is None:
            return False
        if state is None:
            state = load_training_state(checkpoint)
        self.check_resume(state, checkpoint)
        self._load_weights(checkpoint)
        self._load_state(state, os.path.join(checkpoint, STATE_FILE))
        self.step = state["step"]
        return True

    def _load_weights(self, checkpoint: str) -> None:
        from ..checkpoint import load_state_dict_file

        path = os.path.join(checkpoint, "model.safetensors")
        weights = load_state_dict_file(path)
        broken = [k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()]
        if broken:
            raise CheckpointError(
                f"{path} holds NaN or infinite weights ({broken[0]}, ...); resume from an "
                "earlier checkpoint"
            )
        loader = getattr(self.model, "_load_checked", None)
        if loader is not None:  # lists every missing, unexpected or reshaped tensor
            loader(weights, checkpoint, ignore_mismatched_sizes=False)
            return
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(f"{path} does not fit the model: {e}") from None

    def _load_state(self, state: Dict[str, Any], path: str) -> None:
        """Optimiser, scheduler, scaler and random states; a state that does not fit this
        model's optimiser is a CheckpointError naming ``path``."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self._check_optimizer_shapes()
            reference = self.scheduler.state_dict()
            if not set(state["scheduler"]) <= set(reference):
                raise ValueError("the scheduler state has unknown entries")
            self.scheduler.load_state_dict(state["scheduler"])
            # The rate of the next step from this run's schedule (the saved one is the old
            # schedule's, which differs when max_steps grew); the same value otherwise.
            for group, base, rate in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas
            ):
                group["lr"] = base * rate(self.scheduler.last_epoch)
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"{path} does not fit this model and run: {first}") from None

    def _check_optimizer_shapes(self) -> None:
        for param, slots in self.optimizer.state.items():
            for name, value in slots.items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"optimiser {name} of shape {tuple(value.shape)} for a parameter of "
                        f"shape {tuple(param.shape)}"
                    )

    def _non_finite_weight(self) -> Optional[str]:
        """The name of a NaN or infinite weight or buffer, or None."""
        for name, value in self.model.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                return name
        return None

    def check_weights(self) -> None:
        """Raise :class:`TrainingDiverged` if a weight is NaN or infinite (never saved)."""
        broken = self._non_finite_weight()
        if broken is not None:
            raise TrainingDiverged(
                self._diverged_message(f"weight {broken} is NaN or infinite after step {self.step}")
            )

    def save(self) -> Optional[str]:
        """Write a checkpoint of the current step (main process); weights that are not finite
        raise :class:`TrainingDiverged` instead, so ``latest`` always names a good one."""
        if not self.dist.is_main:
            return None
        self.check_weights()
        path = save_checkpoint(
            self.config.output_dir, self.step, self.model, self._state(), self.image_processor
        )
        prune_checkpoints(self.config.output_dir, self.config.keep_checkpoints)
        return path

    # -- loop ---------------------------------------------------------------------------------

    def _loader(self) -> torch.utils.data.DataLoader:
        cfg = self.config
        sampler = ResumableBatchSampler(
            len(self.train_data),
            cfg.batch_size,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_batch=self.step * cfg.grad_accum,
        )
        # In worker processes a dataset error comes back as a value, raised again in this
        # process as it was (see WorkerFailure), so it is the same error as without workers.
        workers = cfg.num_workers > 0
        # Its own generator, so creating the loader does not draw from the global RNG (which
        # would make a resumed run differ from an uninterrupted one).
        return torch.utils.data.DataLoader(
            WorkerSafe(self.train_data) if workers else self.train_data,
            batch_sampler=sampler,
            collate_fn=collate_or_failure if workers else collate,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=workers,
        )

    def _batches(self) -> Iterator[Any]:
        """The loader's iterator. Torch's long warning about more workers than cores (given
        twice) is replaced by one line."""
        workers, cores = self.config.num_workers, _cpu_count()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"This DataLoader will create")
            batches = iter(self._loader())
        if workers > cores:
            warnings.warn(
                f"{workers} data-loading workers on {cores} CPU cores may slow training down",
                stacklevel=3,
            )
        return batches

    def _forward(
        self, model: nn.Module, batch: Dict[str, Any]
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The loss and, for the log, the final prediction's weighted terms."""
        pixel_values = batch["pixel_values"].to(self.device)
        masks = [m.to(self.device) for m in batch["mask_labels"]]
        classes = [c.to(self.device) for c in batch["class_labels"]]
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            out = model(pixel_values, mask_labels=masks, class_labels=classes)
        # Only the final prediction's terms are logged (the auxiliary ones are in the total).
        return out.loss, out.losses.final_weighted()

    def _log(self, record: Dict[str, Any]) -> None:
        self.history.append(record)
        if self.dist.is_main:
            os.makedirs(self.config.output_dir, exist_ok=True)
            line = json.dumps(_json_safe(record), allow_nan=False)
            append_text(os.path.join(self.config.output_dir, LOG_FILE), line + "\n")

    def _run_eval(self) -> Optional[Dict[str, float]]:
        if self.evaluate is None or not self.dist.is_main:
            return None
        rng = torch.get_rng_state()  # evaluation must not change the training's random stream
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = self.evaluate(self.model)
        finally:
            self.model.train()
            torch.set_rng_state(rng)
        self._log({"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}})
        return metrics

    def _step(self, model: nn.Module, batches, window_terms: Dict[str, list]) -> float:
        """One optimiser step (``grad_accum`` batches); returns its loss. A non-finite loss or
        gradient norm raises :class:`TrainingDiverged` before the weights change (with float16
        the gradient scaler skips such a step instead: it is how it finds its scale)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            if isinstance(batch, WorkerFailure):
                batch.raise_()
            sync = micro == cfg.grad_accum - 1 or not self.dist.enabled
            ctx = model.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                try:
                    loss, terms = self._forward(model, batch)
                except NonFiniteCostError:  # NaN or infinite outputs, so the weights diverged
                    raise TrainingDiverged(
                        self._diverged_message(
                            f"the model's outputs are NaN or infinite at step {self.step + 1}"
                        )
                    ) from None
                if not torch.isfinite(loss):
                    value = _number(float(loss.detach()))
                    raise TrainingDiverged(
                        self._diverged_message(f"loss is {value} at step {self.step + 1}")
                    )
                self.scaler.scale(loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach()) / cfg.grad_accum
            for k, v in terms.items():
                window_terms.setdefault(k, []).append(v)
        self.scaler.unscale_(self.optimizer)
        clip = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            raise TrainingDiverged(
                self._diverged_message(
                    f"gradient norm is {_number(grad_norm)} at step {self.step + 1} (loss "
                    f"{step_loss:.4g})"
                )
            )
        window_terms.setdefault("grad_norm", []).append(grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return step_loss

    def fit(self, until: Optional[int] = None) -> Dict[str, Any]:
        """Train until step ``until`` (default ``max_steps``; the schedule always spans
        ``max_steps``); returns the last logged values. Stopping early and resuming later gives
        the same weights as one uninterrupted run.

        Raises:
            TrainingDiverged: the loss, the gradient norm or (at a checkpoint) a weight became
                NaN or infinite; nothing of that step was saved, the message names the last
                good checkpoint.
        """
        cfg = self.config
        until = cfg.max_steps if until is None else min(until, cfg.max_steps)
        model: nn.Module = self.model
        if self.dist.enabled:
            model = nn.parallel.DistributedDataParallel(self.model)
        self.model.train()
        batches = self._batches()
        progress = None
        if cfg.progress and self.dist.is_main:
            from tqdm import tqdm

            progress = tqdm(total=until, initial=self.step, desc="train", unit="step")
        last: Dict[str, Any] = {}
        window_loss, window_start = [], time.perf_counter()
        window_terms: Dict[str, list] = {}
        try:
            with warnings.catch_warnings():
                # float16: a step the gradient scaler skips still advances the schedule, on
                # purpose (the same rates as an uninterrupted run); torch warns about it.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
                while self.step < until:
                    step_loss = self._step(model, batches, window_terms)
                    window_loss.append(step_loss)
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(
                            loss=f"{step_loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}"
                        )
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        elapsed = time.perf_counter() - window_start
                        last = {
                            "step": self.step,
                            "loss": sum(window_loss) / len(window_loss),
                            "lr": self.scheduler.get_last_lr()[0],
                            "steps_per_s": len(window_loss) / max(elapsed, 1e-9),
                            **{k: sum(v) / len(v) for k, v in window_terms.items()},
                        }
                        self._log(last)
                        window_loss, window_start = [], time.perf_counter()
                        window_terms = {}
                    self._periodic(cfg)
            if not cfg.checkpoint_every or self.step % cfg.checkpoint_every:
                self.save()
            if self.step < cfg.max_steps:
                return last
            metrics = self._run_eval()
            if metrics:
                last = {**last, **{f"eval/{k}": v for k, v in metrics.items()}}
            return last
        finally:
            if progress is not None:
                progress.close()

    def _periodic(self, cfg: TrainConfig) -> None:
        """The evaluation and the checkpoint due after this step, if any."""
        if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
            try:
                self._run_eval()
            except Exception as e:  # a broken evaluation must not end a long run
                self._log({"step": self.step, "eval/error": f"{type(e).__name__}: {e}"})
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save()
            self.dist.barrier()

    def _diverged_message(self, problem: str) -> str:
        try:
            checkpoint = latest_checkpoint(self.config.output_dir)
        except CheckpointError:
            checkpoint = None
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint yet"
        return (
            f"{problem}; training stopped and {kept}. Lower the learning rate, use float32 or "
            "bfloat16 instead of float16, or check the labels."
        )


def _cpu_count() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every system
        return os.cpu_count() or 1


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else str(value)


def _json_safe(record: Dict[str, Any]) -> Dict[str, Any]:
    """``record`` with NaN and infinities as strings: JSON has no such numbers (a float16 run's
    gradient norm is infinite on the steps the scaler skips)."""
    return {
        k: _number(v) if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in record.items()
    }
