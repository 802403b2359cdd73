"""The rules, one module each. The registry is this list."""

from __future__ import annotations

from gradlint.rules.base import Finding, Rule
from gradlint.rules.ga001_zero_grad_every_micro_batch import ZeroGradEveryMicroBatch
from gradlint.rules.ga002_loss_not_scaled import LossNotScaled
from gradlint.rules.ga003_clip_before_accumulation_complete import ClipBeforeAccumulationComplete
from gradlint.rules.ga004_missing_remainder_step import MissingRemainderStep
from gradlint.rules.ga005_clip_without_unscale import ClipWithoutUnscale
from gradlint.rules.ga006_zero_grad_before_step import ZeroGradBeforeStep
from gradlint.rules.ga007_scheduler_step_every_micro_batch import SchedulerStepEveryMicroBatch
from gradlint.rules.ga008_scaler_update_every_micro_batch import ScalerUpdateEveryMicroBatch
from gradlint.rules.ga009_unscale_every_micro_batch import UnscaleEveryMicroBatch
from gradlint.rules.ga010_off_by_one_accumulation_gate import OffByOneAccumulationGate
from gradlint.rules.ga011_double_loss_scaling import DoubleLossScaling
from gradlint.rules.ga012_missing_no_sync import MissingNoSync
from gradlint.rules.ga013_token_mean_per_micro_batch import TokenMeanPerMicroBatch
from gradlint.rules.ga014_gradients_never_cleared import GradientsNeverCleared
from gradlint.rules.ga015_gate_counter_never_advances import GateCounterNeverAdvances
from gradlint.rules.ga016_backward_after_micro_batch_loop import BackwardAfterMicroBatchLoop

ALL_RULES: tuple[type[Rule], ...] = (
    ZeroGradEveryMicroBatch,
    LossNotScaled,
    ClipBeforeAccumulationComplete,
    MissingRemainderStep,
    ClipWithoutUnscale,
    ZeroGradBeforeStep,
    SchedulerStepEveryMicroBatch,
    ScalerUpdateEveryMicroBatch,
    UnscaleEveryMicroBatch,
    OffByOneAccumulationGate,
    DoubleLossScaling,
    MissingNoSync,
    TokenMeanPerMicroBatch,
    GradientsNeverCleared,
    GateCounterNeverAdvances,
    BackwardAfterMicroBatchLoop,
)
RULES_BY_CODE: dict[str, type[Rule]] = {rule.code: rule for rule in ALL_RULES}

__all__ = ["ALL_RULES", "RULES_BY_CODE", "Finding", "Rule"]
