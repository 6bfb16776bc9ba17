"""The training loop: AdamW with the original recipe, autocast, accumulation, clipping,
periodic evaluation, atomic checkpoints, exact resume and torchrun multi-process training."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .checkpointing import (
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    save_checkpoint,
)
from .data import ResumableBatchSampler, TrainSamples, collate
from .distributed import DistributedContext, init_distributed
from .optim import build_optimizer, build_scheduler

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged"]

_AMP = {"none": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


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
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def resume(self, checkpoint: Optional[str] = None) -> bool:
        """Continue from ``checkpoint`` (default: the newest in ``output_dir``); False if none."""
        checkpoint = checkpoint or latest_checkpoint(self.config.output_dir)
        if checkpoint is None:
            return False
        from ..checkpoint import load_state_dict_file

        weights = load_state_dict_file(os.path.join(checkpoint, "model.safetensors"))
        self.model.load_state_dict(weights)
        state = load_training_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        return True

    def save(self) -> Optional[str]:
        if not self.dist.is_main:
            return None
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
        # Its own generator, so creating the loader does not draw from the global RNG (which
        # would make a resumed run differ from an uninterrupted one).
        return torch.utils.data.DataLoader(
            self.train_data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=cfg.num_workers > 0,
        )

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
        # Auxiliary predictions' terms carry a numeric suffix; only the final one's are logged.
        terms = {k: float(v.detach()) for k, v in (out.loss_dict or {}).items() if k[-1].isalpha()}
        return out.loss, terms

    def _log(self, record: Dict[str, Any]) -> None:
        self.history.append(record)
        if self.dist.is_main:
            os.makedirs(self.config.output_dir, exist_ok=True)
            with open(
                os.path.join(self.config.output_dir, "log.jsonl"), "a", encoding="utf-8"
            ) as f:
                f.write(json.dumps(record) + "\n")

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

    def fit(self, until: Optional[int] = None) -> Dict[str, Any]:
        """Train until step ``until`` (default ``max_steps``; the schedule always spans
        ``max_steps``); returns the last logged values. Stopping early and resuming later gives
        the same weights as one uninterrupted run."""
        cfg = self.config
        until = cfg.max_steps if until is None else min(until, cfg.max_steps)
        model: nn.Module = self.model
        if self.dist.enabled:
            model = nn.parallel.DistributedDataParallel(self.model)
        self.model.train()
        batches = iter(self._loader())
        progress = None
        if cfg.progress and self.dist.is_main:
            from tqdm import tqdm

            progress = tqdm(total=until, initial=self.step, desc="train", unit="step")
        last: Dict[str, Any] = {}
        window_loss, window_start = [], time.perf_counter()
        window_terms: Dict[str, list] = {}
        try:
            while self.step < until:
                self.optimizer.zero_grad(set_to_none=True)
                step_loss = 0.0
                for micro in range(cfg.grad_accum):
                    batch = next(batches)
                    sync = micro == cfg.grad_accum - 1 or not self.dist.enabled
                    ctx = model.no_sync() if not sync else contextlib.nullcontext()
                    with ctx:
                        loss, terms = self._forward(model, batch)
                        if not torch.isfinite(loss):
                            raise TrainingDiverged(self._diverged_message(loss))
                        self.scaler.scale(loss / cfg.grad_accum).backward()
                    step_loss += float(loss.detach()) / cfg.grad_accum
                    for k, v in terms.items():
                        window_terms.setdefault(k, []).append(v)
                self.scaler.unscale_(self.optimizer)
                clip = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                window_terms.setdefault("grad_norm", []).append(float(grad_norm))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.step += 1
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
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    try:
                        self._run_eval()
                    except Exception as e:  # a broken evaluation must not end a long run
                        self._log({"step": self.step, "eval/error": f"{type(e).__name__}: {e}"})
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
                    self.dist.barrier()
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

    def _diverged_message(self, loss: torch.Tensor) -> str:
        checkpoint = latest_checkpoint(self.config.output_dir) if self.dist.is_main else None
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint yet"
        value = "NaN" if math.isnan(float(loss.detach())) else str(float(loss.detach()))
        return (
            f"loss is {value} at step {self.step + 1}; training stopped and {kept}. Lower the "
            "learning rate, use float32 or bfloat16 instead of float16, or check the labels."
        )
