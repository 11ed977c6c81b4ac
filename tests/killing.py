"""Kills a program with SIGKILL at a point it chose: the tests of "killed midway"."""

import os
import signal
import subprocess
import sys
import time


def kill_when_paused(program, arguments, signal_path, timeout_s, not_reached, cwd=None,
                     pythonpath=None):
    """Runs `python -c program signal_path *arguments` and SIGKILLs it once it has
    created `signal_path` (the program writes that file, then sleeps, where the kill is
    meant to land: the same point every time).

    Args:
        program: str. Python source; reads `sys.argv[1]` (the signal path) and the rest.
        arguments: list of str. Its command-line arguments after the signal path.
        signal_path: str. The file whose existence says "paused".
        timeout_s: float. How long to wait for it.
        not_reached: str. The failure message when it does not pause in time.
        cwd: str or None. Its working directory.
        pythonpath: str or None. Put first on its PYTHONPATH.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + os.environ.get("PYTHONPATH", "")
    process = subprocess.Popen([sys.executable, "-c", program, signal_path, *arguments],
                               cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + timeout_s
        while not os.path.exists(signal_path) and time.time() < deadline:
            # A program that ended (an error) fails here with its output, not at the deadline.
            assert process.poll() is None, process.stdout.read()[-3000:]
            time.sleep(0.05)
        assert os.path.exists(signal_path), not_reached
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return env
