"""`tinylm train` under `torchrun`: two CPU processes (gloo) follow the same loss curve as one process with the
same global batch, i.e. DDP really averages the gradients and the two processes see the right data shards."""

import socket
import subprocess
import sys

import pytest

from cli_helpers import TINY_TRAIN_ARGS, offline_env, run_cli, train_losses


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(shared_data, tmp_path):
    common = ["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS,
              "--max-steps", "6", "--logging-steps", "1", "--save-steps", "0"]
    single = run_cli(*common, "--batch-size", "4", "-o", str(tmp_path / "one"), OMP_NUM_THREADS="1")
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "hf_tinylm", *common, "--batch-size", "2", "--ddp-backend",
         "gloo", "-o", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600, env=offline_env(OMP_NUM_THREADS="1"),
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4
    assert one[-1] < one[0]
    # Only the main process wrote the folder, and it trained with two processes.
    assert "2 processes on CPU" in (tmp_path / "two" / "README.md").read_text()
