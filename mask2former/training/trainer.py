"""The training loop: the original recipe's AdamW, autocast, accumulation, clipping, periodic
evaluation, atomic checkpoints, exact resume and torchrun multi-process training.

What is minimised is an :class:`~mask2former.training.objective.Objective` (by default the
Mask2Former loss); backbone pretraining runs the same loop with its own objective (see
:mod:`mask2former.training.pretrain`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

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
from .data import ResumableBatchSampler, WorkerFailure, batch_iterator, to_device
from .distributed import DistributedContext, init_distributed
from .divergence import TrainingDiverged, diverged
from .log_window import LogWindow, json_line, number_text
from .objective import Batch, Mask2FormerObjective, Objective
from .optim import build_optimizer, build_scheduler
from .resume import load_run_state, load_weights, run_state
from .settings import AMP_DTYPES, RESUME_FIXED, TrainConfig, check_resume_settings, resume_conflicts
from .tensorboard import EventLog, open_run_events, run_scalars

__all__ = [
    "RESUME_FIXED",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "check_resume_settings",
    "resume_conflicts",
]


class Trainer:
    """Trains a model on an objective (by default a Mask2FormerForUniversalSegmentation on
    its loss).

    Args:
        model: the model (on the CPU; moved to ``config.device``).
        train_data: a :class:`~mask2former.training.data.TrainSamples` (indexed by
            ``(epoch, index)``).
        config: a :class:`TrainConfig`.
        evaluate: optional ``evaluate(model) -> {metric: value}``, run every ``eval_every``
            steps and at the end on the main process.
        image_processor: saved into every checkpoint so it is a complete model folder.
        objective: what to minimise (default: :class:`Mask2FormerObjective`).
        make_optimizer: ``make_optimizer(model) -> optimizer`` (default: the original recipe's
            AdamW groups of :func:`~mask2former.training.optim.build_optimizer`).
        previews: optional ``previews(model) -> [RGB uint8 picture]``, run with ``evaluate``
            for the TensorBoard event files (``output_dir/tensorboard``) when they are written.

    A trainer for another kind of run changes the class attributes below and overrides the
    methods that shape its log (``_record``, ``_log_line``, ``_show``), its sample order
    (``_batch_sampler``) and its message on divergence (``_non_finite``).
    """

    #: The log file in ``output_dir``, the progress bar's label, and whether the run writes
    #: checkpoints (every ``checkpoint_every`` steps and at the end).
    log_name = LOG_FILE
    progress_label = "train"
    writes_checkpoints = True

    def __init__(
        self,
        model: nn.Module,
        train_data: torch.utils.data.Dataset,
        config: TrainConfig,
        evaluate: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
        image_processor: Any = None,
        objective: Optional[Objective] = None,
        make_optimizer: Optional[Callable[[nn.Module], torch.optim.Optimizer]] = None,
        previews: Optional[Callable[[nn.Module], List[Any]]] = None,
    ):
        self.config = config
        self.device = torch.device(config.device)
        self.dist: DistributedContext = init_distributed(self.device)
        self.model = model.to(self.device)
        self.train_data = train_data
        self.evaluate = evaluate
        self.image_processor = image_processor
        self.previews = previews
        self.events = EventLog(None)  # the event files: opened by fit, on the main process
        self.objective: Objective = Mask2FormerObjective() if objective is None else objective
        if make_optimizer is None:
            self.optimizer = build_optimizer(
                self.model, config.lr, config.weight_decay, config.backbone_multiplier
            )
        else:
            self.optimizer = make_optimizer(self.model)
        self.scheduler = build_scheduler(
            self.optimizer,
            config.max_steps,
            warmup_steps=config.warmup_steps,
            warmup_factor=config.warmup_factor,
            schedule=config.schedule,
            milestones=config.milestones,
            power=config.poly_power,
        )
        self.amp_dtype = AMP_DTYPES[config.amp]
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.step = 0

    # -- checkpoints and resume ---------------------------------------------------------------

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
        check_resume_settings(state, self.config, checkpoint, self.dist.world_size)
        load_weights(self.model, checkpoint)
        path = os.path.join(checkpoint, STATE_FILE)
        load_run_state(state, path, self.optimizer, self.scheduler, self.scaler)
        self.step = state["step"]
        return True

    def check_weights(self) -> None:
        """Raise :class:`TrainingDiverged` if a weight is NaN or infinite (never saved)."""
        for name, value in self.model.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                problem = f"weight {name} is NaN or infinite after step {self.step}"
                raise diverged(problem, self.config.output_dir)

    def save(self) -> Optional[str]:
        """Write a checkpoint of the current step (main process); weights that are not finite
        raise :class:`TrainingDiverged` instead, so ``latest`` always names a good one."""
        if not self.dist.is_main:
            return None
        self.check_weights()
        state = run_state(
            self.step, self.optimizer, self.scheduler, self.scaler, self.config,
            self.dist.world_size,
        )  # fmt: skip
        path = save_checkpoint(
            self.config.output_dir, self.step, self.model, state, self.image_processor
        )
        prune_checkpoints(self.config.output_dir, self.config.keep_checkpoints)
        return path

    # -- data ---------------------------------------------------------------------------------

    def _batch_sampler(self) -> torch.utils.data.Sampler:
        """The batches from the current step on: epochs of shuffled samples, each process its
        own shard (see :class:`ResumableBatchSampler`)."""
        cfg = self.config
        return ResumableBatchSampler(
            len(self.train_data),
            cfg.batch_size,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_batch=self.step * cfg.grad_accum,
        )

    def _batches(self) -> Iterator[Any]:
        """The batches from the current step on."""
        cfg = self.config
        return batch_iterator(self.train_data, self._batch_sampler(), cfg.num_workers, cfg.seed)

    # -- one step -----------------------------------------------------------------------------

    def _forward(
        self, model: nn.Module, batch: Batch
    ) -> Tuple[Optional[torch.Tensor], Dict[str, float]]:
        """The objective's loss of ``batch`` (None: nothing to learn from) and its values to
        log."""
        batch = to_device(batch, self.device)
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            result = self.objective.loss(model, batch)
        if result is None:
            return None, {}
        return result.total, result.logged

    def _checked_forward(
        self, model: nn.Module, batch: Batch
    ) -> Tuple[Optional[torch.Tensor], Dict[str, float]]:
        """:meth:`_forward`, stopping with :class:`TrainingDiverged` on non-finite outputs or
        loss, before anything is updated."""
        try:
            loss, logged = self._forward(model, batch)
        except NonFiniteCostError:  # NaN or infinite outputs, so the weights diverged
            problem = f"the model's outputs are NaN or infinite at step {self.step + 1}"
            raise diverged(problem, self.config.output_dir) from None
        if loss is not None and not torch.isfinite(loss):
            raise self._non_finite("loss", float(loss.detach()))
        return loss, logged

    def _step(self, model: nn.Module, batches: Iterator[Any], window: LogWindow) -> Optional[float]:
        """One optimiser step (``grad_accum`` batches); returns its loss (None when no batch
        had anything to learn from: the step counts, without an update). A non-finite loss or
        gradient norm raises :class:`TrainingDiverged` before the weights change (with float16
        the gradient scaler skips such a step instead: it is how it finds its scale)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        step_loss: Optional[float] = None
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            if isinstance(batch, WorkerFailure):
                batch.raise_()
            sync = micro == cfg.grad_accum - 1 or not self.dist.enabled
            with model.no_sync() if not sync else contextlib.nullcontext():
                loss, logged = self._checked_forward(model, batch)
                if loss is not None:
                    self.scaler.scale(loss / cfg.grad_accum).backward()
            if loss is not None:
                step_loss = (step_loss or 0.0) + float(loss.detach()) / cfg.grad_accum
            window.add(logged)
        window.steps += 1
        window.lr = self.optimizer.param_groups[0]["lr"]
        if step_loss is not None:
            window.losses.append(step_loss)
            self._update(step_loss, window)
        self.scheduler.step()
        self.step += 1
        return step_loss

    def _update(self, step_loss: float, window: LogWindow) -> None:
        """Clip the gradients and apply them, unless their norm is not finite."""
        cfg = self.config
        self.scaler.unscale_(self.optimizer)
        clip = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            raise self._non_finite("gradient norm", grad_norm, step_loss)
        window.add({"grad_norm": grad_norm})
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # -- the loop -----------------------------------------------------------------------------

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

            # disable=None: only on a terminal, so redirected logs stay clean lines.
            progress = tqdm(
                total=until, initial=self.step, desc=self.progress_label, unit="step", disable=None
            )
        last: Dict[str, Any] = {}
        window = LogWindow()
        self.events = open_run_events(self)
        try:
            with warnings.catch_warnings():
                # float16: a step the gradient scaler skips still advances the schedule, on
                # purpose (the same rates as an uninterrupted run); torch warns about it.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
                while self.step < until:
                    step_loss = self._step(model, batches, window)
                    if progress is not None:
                        progress.update(1)
                        self._show(progress, step_loss)
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        last = self._record(window)
                        self._log(last)
                        window = LogWindow()
                    self._periodic()
            return self._finish(last)
        finally:
            self.events.close()
            if progress is not None:
                progress.close()

    def _periodic(self) -> None:
        """The evaluation and the checkpoint due after this step, if any."""
        cfg = self.config
        if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
            try:
                self._run_eval()
            except Exception as e:  # a broken evaluation must not end a long run
                self._log({"step": self.step, "eval/error": f"{type(e).__name__}: {e}"})
        if (
            self.writes_checkpoints
            and cfg.checkpoint_every
            and self.step % cfg.checkpoint_every == 0
        ):
            self.save()
            self.dist.barrier()

    def _finish(self, last: Dict[str, Any]) -> Dict[str, Any]:
        """The checkpoint of the last step (unless one was just written) and, at
        ``max_steps``, the final evaluation; returns ``last`` with its metrics."""
        cfg = self.config
        if self.writes_checkpoints and (
            not cfg.checkpoint_every or self.step % cfg.checkpoint_every
        ):
            self.save()
        if self.step < cfg.max_steps:
            return last
        metrics = self._run_eval()
        if metrics:
            last = {**last, **{f"eval/{k}": v for k, v in metrics.items()}}
        return last

    def _run_eval(self) -> Optional[Dict[str, float]]:
        if self.evaluate is None or not self.dist.is_main:
            return None
        rng = torch.get_rng_state()  # evaluation must not change the training's random stream
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = self.evaluate(self.model)
                pictures = self.previews(self.model) if self.previews and self.events.active else []
        finally:
            self.model.train()
            torch.set_rng_state(rng)
        self._log({"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}})
        self.events.evaluation(self.step, pictures)
        return metrics

    # -- what the run shows and writes ----------------------------------------------------------

    def _show(self, progress: Any, step_loss: Optional[float]) -> None:
        """The progress bar's values after a step."""
        shown = {} if step_loss is None else {"loss": f"{step_loss:.3f}"}
        progress.set_postfix(**shown, lr=f"{self.scheduler.get_last_lr()[0]:.2e}")

    def _record(self, window: LogWindow) -> Dict[str, Any]:
        """The log record of the steps of ``window``: the mean loss, the next step's learning
        rate, the speed and the mean of each logged value."""
        elapsed = time.perf_counter() - window.start
        return {
            "step": self.step,
            "loss": window.mean_loss(),
            "lr": self.scheduler.get_last_lr()[0],
            "steps_per_s": window.steps / max(elapsed, 1e-9),
            **window.means(),
        }

    def _log_line(self, record: Dict[str, Any]) -> str:
        return json_line(record)

    def _log(self, record: Dict[str, Any]) -> None:
        if self.dist.is_main:
            os.makedirs(self.config.output_dir, exist_ok=True)
            path = os.path.join(self.config.output_dir, self.log_name)
            append_text(path, self._log_line(record) + "\n")
        self.events.scalars(record["step"], record, run_scalars(record, self))  # same steps

    def _non_finite(
        self, what: str, value: float, loss: Optional[float] = None
    ) -> TrainingDiverged:
        """The error for a NaN or infinite ``what`` ("loss", "gradient norm") in this step."""
        problem = f"{what} is {number_text(value)} at step {self.step + 1}"
        if loss is not None:
            problem += f" (loss {loss:.4g})"
        return diverged(problem, self.config.output_dir)
