"""`gradlint probe` end to end: a child process per run, so these are few and each checks a lot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import gradlint.probe as gp
from gradlint.cli import main

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def _probe(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["probe", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_correct_script_exits_0_and_sees_the_remainder() -> None:
    code, out = _probe(str(SCRIPTS / "correct_loop.py"), "--output-format", "json")
    assert code == 0
    data = json.loads(out[out.index("{"):])
    assert data["ok"] is True and data["exit_code"] == 0 and data["findings"] == []
    assert data["remainder_checked"] is True and data["stop_reason"] == "steps"
    # windows 4, 4, the epoch's remainder of 2 (divided by 2), then one step of the next epoch
    assert [s["window"] for s in data["steps"]] == [4, 4, 2, 4]
    assert data["steps"][2]["coefficients"] == [0.5, 0.5]
    assert all(s["verdict"] == "ok" and abs(s["ratio"] - 1) < 1e-5 for s in data["steps"])


def test_argparse_script_with_ga001_text_report() -> None:
    script = SCRIPTS / "zero_grad_argparse.py"
    code, out = _probe(str(script), "--", "--k", "4")
    assert code == 1
    assert f"argv0={script} path0={SCRIPTS}" in out  # run as `python script args` would
    assert "only 1 of 4 micro-batches survived to optimizer step 1: zero_grad at zero_grad_argparse.py:20" in out
    assert f"{script}:20:9: GA001 [error]" in out and "(steps 1, 2)" in out
    assert "remainder not checked" not in out  # the script ran to its end


def test_argparse_error_is_shown_and_exits_2() -> None:
    code, out = _probe(str(SCRIPTS / "zero_grad_argparse.py"), "--output-format", "json")
    assert code == 2
    data = json.loads(out[out.index("{"):])
    assert data["error"].startswith("the script failed before its first optimizer step:\nSystemExit: 2")


def test_crashing_script_shows_its_own_traceback_only() -> None:
    code, out = _probe(str(SCRIPTS / "crash_before_step.py"))
    assert code == 2
    assert 'raise ValueError("config file missing: data.yaml")' in out
    assert "ValueError: config file missing: data.yaml" in out
    assert "gradlint/probe" not in out and "runpy" not in out


def test_bare_except_cannot_keep_the_script_running() -> None:
    report = gp.run(str(SCRIPTS / "bare_except.py"), steps=1, until_epoch_end=False)
    assert report.ok and report.steps == 1 and len(report.rows) == 1
    assert "reached the end of the script" not in report.script_output
    assert report.script_output.count("swallowed") == 1
    assert any("caught the probe's stop" in n for n in report.notes)
    assert any(n.startswith("remainder not checked: no epoch end observed in 1 optimizer step") for n in report.notes)


def test_timeout_before_any_step_exits_2() -> None:
    report = gp.run(str(SCRIPTS / "no_step.py"), timeout=1)
    assert report.exit_code == 2 and report.error == "timeout: no optimizer step within 1 s"


def test_no_optimizer_and_missing_script_exit_2() -> None:
    code, out = _probe(str(SCRIPTS / "no_optimizer.py"))
    assert code == 2 and "no optimizer step was observed" in out
    code, out = _probe(str(SCRIPTS / "does_not_exist.py"))
    assert code == 2 and "no such file" in out and "Traceback" not in out


def test_without_torch_the_probe_says_how_to_install_it() -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['gradlint', 'probe', 'x.py']; "
            "from gradlint.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ})
    assert proc.returncode == 2
    assert "the probe needs torch: pip install 'gradlint[probe]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_static_import_path_does_not_import_torch() -> None:
    code = ("import sys, gradlint.cli, gradlint.probe, gradlint.probe.cli, gradlint.probe.api; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.cuda
def test_cuda_amp_loop_on_gpu(tmp_path: Path) -> None:
    script = tmp_path / "amp_cuda.py"
    script.write_text(
        "import torch, torch.nn.functional as F\n"
        "model = torch.nn.Linear(64, 8).cuda()\n"
        "opt = torch.optim.AdamW(model.parameters())\n"
        "scaler = torch.amp.GradScaler('cuda')\n"
        "for i in range(1, 9):\n"
        "    x, y = torch.randn(16, 64, device='cuda'), torch.randint(0, 8, (16,), device='cuda')\n"
        "    with torch.autocast('cuda', dtype=torch.float16):\n"
        "        loss = F.cross_entropy(model(x), y) / 4\n"
        "    scaler.scale(loss).backward()\n"
        "    if i % 4 == 0:\n"
        "        scaler.unscale_(opt)\n"
        "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "        scaler.step(opt)\n"
        "        scaler.update()\n"
        "        opt.zero_grad()\n"
    )
    report = gp.run(str(script), steps=2)
    assert report.ok and len(report.rows) == 2, report.text()


def test_runs_past_steps_until_one_step_after_the_epoch_end() -> None:
    report = gp.run(str(SCRIPTS / "remainder_leak.py"), steps=2)
    assert report.exit_code == 1 and report.stop_reason == "steps" and report.remainder_checked
    assert [r.window for r in report.rows] == [4, 4, 6]  # --steps 2, but the epoch ended after step 2
    (f,) = report.findings
    assert f.code == "GA004" and f.row == 20 and f.filename.endswith("remainder_leak.py")
    assert "2 micro-batches from the end of the previous epoch leaked into step 3" in f.message


@pytest.mark.parametrize(("script", "code", "row", "says"), [
    ("unscale_every_micro_batch.py", "GA009", 16, "scaler.unscale_(optimizer) ran again before scaler.update()"),
    ("scaler_update_every_micro_batch.py", "GA008", 19, "scaler.update() ran with no scaler.step(optimizer)"),
])
def test_gradscaler_refusals_are_findings_not_failures(script: str, code: str, row: int, says: str) -> None:
    """GradScaler raises on these two bugs before the first step: the probe names the rule (exit 1)
    instead of saying it could not run (exit 2), and keeps the script's traceback as a note."""
    exit_code, out = _probe(str(SCRIPTS / script), "--output-format", "json")
    assert exit_code == 1
    data = json.loads(out[out.index("{"):])
    assert data["error"] is None and data["stop_reason"] == "crash"
    (finding,) = data["findings"]
    assert finding["code"] == code and finding["severity"] == "error"
    assert finding["filename"].endswith(script) and finding["location"]["row"] == row
    assert says in finding["message"] and finding["steps"] == [1]
    assert any("Traceback" in note for note in data["notes"])
