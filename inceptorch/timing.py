"""Seconds per call of a function, measured with ``torch.utils.benchmark.Timer`` on PyTorch's threads.

Every timing in the package goes through here (the benchmark's paths, ``auto``'s choice, the CPU's
peak, ``compare --bench``). ``Timer`` runs on one thread unless told otherwise, which is why the
thread count is passed: the figures are for the threads the caller set.
"""

import statistics

import torch


def _timer(call):
    # Imported here, not at the top: torch.utils.benchmark imports torch's C++ extension builder, which logs a
    # CUDA_HOME warning on machines without CUDA, and every command would print it at start.
    from torch.utils.benchmark import Timer
    return Timer("call()", globals={"call": call}, num_threads=torch.get_num_threads())


def seconds_per_call(call, calls: int = 5) -> float:
    """Mean seconds of ``call()`` over ``calls`` calls, after ``Timer``'s warm-up calls."""
    return _timer(call).timeit(calls).mean


def time_interleaved(calls: dict, repeats: int, min_round_s: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each function, timed in rounds that visit every function in turn.

    Interleaving keeps the ratios fair when the machine's load drifts during the run; in each round
    ``Timer.blocked_autorange`` repeats a call until it has run ``min_round_s``, so that short calls are
    not timer noise.
    """
    timers = {name: _timer(call) for name, call in calls.items()}
    for call in calls.values():
        call()  # warm-up: first-call work (weight reorders, allocator, ONNX Runtime's arenas)
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, timer in timers.items():
            samples[name].append(timer.blocked_autorange(min_run_time=min_round_s).median)
    return {name: statistics.median(times) for name, times in samples.items()}
