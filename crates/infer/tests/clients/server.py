"""Starts and stops `llm-serve` for the client checks: the fixture model on a free
loopback port, the address read from the server's `listening on` line."""

import os
import pathlib
import re
import signal
import subprocess
import threading

ROOT = pathlib.Path(__file__).resolve().parents[4]
FIXTURE = ROOT / "crates/model/tests/fixtures/tiny-gpt2"
MODEL = "tiny-gpt2"


class Server:
    def __init__(self, binary, model=FIXTURE, *args):
        self.cmd = [str(binary), "--model", str(model), "--port", "0", *map(str, args)]
        self.proc = None
        self.addr = None

    def __enter__(self):
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.PIPE, text=True, env=env)
        for line in self.proc.stderr:
            m = re.match(r"llm-serve: listening on (http://\S+)", line)
            if m:
                self.addr = m.group(1)
                break
        else:
            raise RuntimeError(f"llm-serve exited before listening: {self.cmd}")
        # Keep reading stderr so the server never blocks writing it.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def rss_mib(self):
        """The server's resident memory now, in MiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")
