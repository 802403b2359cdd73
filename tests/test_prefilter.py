"""The cheap text test: what it must keep, and what it may skip."""

from __future__ import annotations

import pytest

from gradlint.prefilter import may_have_training_loop


@pytest.mark.parametrize("source", [
    "loss.backward()\noptimizer.step()\n",
    "scaler.scale(loss).backward()\nscaler.step(opt)\n",
    "accelerator.backward(loss)\noptimizer.step()\n",
    "self.manual_backward(loss)\nopt.step()\n",
    "torch.autograd.backward([loss])\nself.optimizer_step()\n",
    "loss.backward ()\nmodel.zero_grad()\n",
    "engine.backward(loss)\nengine.step()\n",
    "loss_scaler(loss, optimizer, update_grad=(i + 1) % K == 0)\n",
    "def backward(ctx, g):\n    return g\nloss.backward()\nopt.step()\n",  # a definition and a call
    "(loss\n    .backward())\nopt.step()\n",  # the method on the next line
    "loss. \\\n    backward()\nopt.step()\n",  # after a backslash continuation
    # A copy of Hugging Face's `Trainer.train()`: the backward is the inherited `training_step`.
    "from transformers import Trainer\nclass T(Trainer):\n    def train(self):\n"
    "        self.training_step(model, inputs)\n        self.optimizer.step()\n",
])
def test_keeps_training_code(source: str) -> None:
    assert may_have_training_loop(source)


@pytest.mark.parametrize("source", [
    "",
    "x = 1\n",
    "def backward(ctx, grad_output):\n    return grad_output\n",  # autograd Function: no call
    "    def manual_backward(self, loss):\n        pass\nstep(1)\n",
    "loss.backward()\n",  # nothing step-like anywhere: no loop a rule could report
    "'''backward is documented here'''\nopt.step()\n",
    # Functions named like a backward are not backward events: torch calls hundreds of them.
    "grad_input = max_pool2d_backward(grad, x)\nopt.step()\n",
    "out = aten.convolution_backward(g, x, w)\nscheduler.step()\n",
    "class T(Trainer):\n    def train(self):\n        self.training_step(model, inputs)\n",  # no transformers
])
def test_skips_what_cannot_be_reported(source: str) -> None:
    assert not may_have_training_loop(source)
