"""Several GPUs on one machine (issue 24, item 3): the lock-file pool gives concurrent jobs different
GPUs, on a CPU with a faked GPU count; steps take their threads from their CPU affinity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cfgan import cli, cpu, gpus
from cfgan.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# A job: claim a GPU of 8 (faked count), print the one it got, hold it until stdin closes.
JOB = textwrap.dedent("""
    import os, sys
    from cfgan import gpus
    from cfgan.errors import UserError
    try:
        got = gpus.claim(count=8)
    except UserError as exc:
        print("error:", exc, flush=True)
        sys.exit(2)
    print("gpu", got, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    sys.stdin.read()
""")


def _job(locks: Path, wait: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpus.ENV_WAIT)}
    env.update(PYTHONPATH=str(ROOT / "src"), CFGAN_GPU_LOCKS=str(locks))
    if wait is not None:
        env[gpus.ENV_WAIT] = wait
    return subprocess.Popen([sys.executable, "-c", JOB], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_eight_jobs_get_eight_gpus_and_a_ninth_fails_or_waits(tmp_path):
    jobs = [_job(tmp_path) for _ in range(8)]
    try:
        lines = [j.stdout.readline().split() for j in jobs]
        assert all(line[0] == "gpu" and line[1] == line[2] for line in lines), lines
        assert sorted(line[1] for line in lines) == [str(i) for i in range(8)]  # eight different devices

        ninth = _job(tmp_path, wait="0")  # no waiting: a clear error, exit 2
        out, err = ninth.communicate(timeout=60)
        assert ninth.returncode == 2
        assert "all 8 visible GPUs are taken" in out and "--resources gpu=8" in out and str(tmp_path) in out

        waiting = _job(tmp_path)  # the default: wait for a free GPU, saying so
        time.sleep(1.0)
        assert waiting.poll() is None
        victim = jobs.pop(3)
        freed = lines[3][1]
        victim.send_signal(signal.SIGKILL)  # a killed job frees its GPU: the kernel drops its flock
        victim.wait(timeout=30)
        got = waiting.stdout.readline().split()
        assert got[:2] == ["gpu", freed]
        waiting.stdin.close()
        waiting.wait(timeout=30)
        assert "waiting for one" in waiting.stderr.read()
    finally:
        for j in jobs:
            j.kill()
            j.wait()


def test_acquire_in_threads_of_one_process(tmp_path):
    """flock locks belong to open files, so even one process's claims exclude each other."""
    claims = [gpus.acquire(["a", "b"], tmp_path, wait=0) for _ in range(2)]
    assert sorted(c.gpu for c in claims) == ["a", "b"]
    with pytest.raises(UserError, match="all 2 visible GPUs are taken"):
        gpus.acquire(["a", "b"], tmp_path, wait=0)
    claims[0].release()
    assert gpus.acquire(["a", "b"], tmp_path, wait=0).gpu == claims[0].gpu


@pytest.fixture
def fresh_pool(monkeypatch, tmp_path):
    monkeypatch.setattr(gpus, "_held", [])
    monkeypatch.setenv(gpus.ENV_LOCKS, str(tmp_path))
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpus.ENV_POOL, "CFGAN_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_nothing_claimed_where_one_gpu_is_pinned_or_slurm_manages(fresh_pool, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert gpus.claim() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert gpus.claim() is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(gpus.ENV_POOL, "0")
    assert gpus.claim() is None
    monkeypatch.delenv(gpus.ENV_POOL)
    assert gpus.claim() == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # a list of two: pooled


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,-1,4")
    assert gpus.visible_gpus() == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpus.visible_gpus(3) == ["0", "1", "2"]


def test_cli_claims_a_gpu_before_cuda_starts_and_only_for_cuda_steps(fresh_pool, monkeypatch, capsys):
    """The step's front door: with a (faked) 4-GPU machine and compute.device auto, a model step
    claims one and pins it in CUDA_VISIBLE_DEVICES; a cpu step and a data step claim none."""
    monkeypatch.setattr(gpus, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # so resolve() still lands on the CPU here
    args = SimpleNamespace(params=[str(ROOT / "params.yaml"), str(ROOT / "workflow/profiles/tiny/params.yaml")])
    monkeypatch.setenv("CFGAN_DEVICE", "cpu")
    cli._params(args, "classify")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("CFGAN_DEVICE")
    cli._params(args, "split")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    cli._params(args, "classify")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert "gpu pool: this job runs on GPU 0" in capsys.readouterr().err
    assert sorted(p.name for p in fresh_pool.iterdir()) == ["gpu-0.lock"]


def test_threads_follow_cpu_affinity_not_cpu_count(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    try:
        cpu.tune()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # set: left alone
        torch.set_num_threads(1)
        cpu.tune()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
