"""How soon a torchrun run stops after one of its processes is killed (SIGKILL), instead of hanging.

Each round starts ``torchrun --standalone --nproc-per-node 2 -m inceptorch.cli train`` (lenet on the
built-in sample, gloo on the CPU), waits for its first epoch's checkpoint, SIGKILLs the process of rank 1
and times until torchrun has exited (it stops the other process itself). The table gives the median,
fastest and slowest of ``--repeats`` rounds and torchrun's exit status; tests/test_reliability.py checks
the behaviour (the run stops, names the dead process, and resumes), this script the time.

    python benchmarks/torchrun_stop.py --repeats 3
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inceptorch.cli import main as main_cli
from inceptorch.cpu import describe, machine
from inceptorch.tables import text_table

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def worker(folder: Path) -> int:
    """One process under torchrun: notes its pid for the killer, then trains."""
    (folder / f"pid-{os.environ['RANK']}").write_text(str(os.getpid()))
    return main_cli(["train", "--model", "lenet", "--epochs", "100", "--device", "cpu", "--quiet", "--out-dir",
                     str(folder), "--name", "run", "--dist-timeout", os.environ["DIST_TIMEOUT"]])


def one_round(folder: Path, dist_timeout: int) -> dict:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    process = subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "2", __file__, "--worker", str(folder)],
                               env={**os.environ, "OMP_NUM_THREADS": "1", "DIST_TIMEOUT": str(dist_timeout)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (folder / "run" / "last.state.pt").exists():
        if process.poll() is not None:
            raise RuntimeError(f"the run ended (status {process.returncode}) before its first checkpoint")
        time.sleep(0.05)
    os.kill(int((folder / "pid-1").read_text()), signal.SIGKILL)
    killed = time.perf_counter()
    status = process.wait()
    return {"seconds": time.perf_counter() - killed, "status": status}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dist-timeout", type=int, default=30, help="the run's --dist-timeout (seconds)")
    parser.add_argument("--json", metavar="FILE", help="output (default: benchmarks/results/torchrun_stop.json)")
    parser.add_argument("--worker", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker))
    rounds = []
    for number in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            rounds.append(one_round(Path(folder), args.dist_timeout))
        print(f"round {number + 1}: stopped {rounds[-1]['seconds']:.2f} s after the kill, status "
              f"{rounds[-1]['status']}", flush=True)
    seconds = [r["seconds"] for r in rounds]
    rows = [[f"{statistics.median(seconds):.2f}", f"{min(seconds):.2f}", f"{max(seconds):.2f}",
             ", ".join(str(r["status"]) for r in rounds)]]
    info = machine()
    table = text_table(["median s", "fastest s", "slowest s", "torchrun status"], rows)
    title = (f"torchrun (2 gloo processes, lenet on builtin, --dist-timeout {args.dist_timeout}): seconds from "
             f"SIGKILL of rank 1 to torchrun's exit, {args.repeats} rounds\n{describe(info)}")
    print(f"\n{title}\n{table}")
    out = Path(args.json) if args.json else RESULTS / "torchrun_stop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dist_timeout": args.dist_timeout, "machine": info, "rounds": rounds}, indent=1))
    out.with_name(out.stem + "_table.txt").write_text(f"{title}\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
