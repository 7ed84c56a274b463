"""asr/progress.py: long commands show a progress bar on a terminal, never in a pipe or a log."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest


def _stderr(args: list[str], terminal: bool) -> str:
    """What ``asr ARGS`` writes on stderr, given a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "asr.cli", *args]
    if not terminal:
        return subprocess.run(command, capture_output=True, text=True, check=True).stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait() == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("command", ["transcribe", "evaluate"])
def test_a_bar_on_a_terminal_none_in_a_pipe_or_with_quiet(
    command, untrained_model_file, speech_wav, corpus, tmp_path
):
    args = {
        "transcribe": ["transcribe", speech_wav, speech_wav],
        "evaluate": ["evaluate", corpus["test"], "--decoder", "greedy", "--output-dir", str(tmp_path)],
    }[command] + ["--model", untrained_model_file]
    unit = {"transcribe": "file", "evaluate": "utt"}[command]
    shown = _stderr(args, terminal=True)
    assert "%|" in shown and (f"{unit}/s" in shown or f"s/{unit}" in shown), shown
    assert "%|" not in _stderr(args, terminal=False)
    assert "%|" not in _stderr([*args, "--quiet"], terminal=True)
