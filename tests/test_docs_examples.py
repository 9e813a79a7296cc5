"""Every ``python`` and ``bash`` example of README.md and docs/*.md runs as written, so the pages cannot
drift from the code; the commands of ``console`` blocks run too, and print what the page shows.

Each page's examples run in order in one temporary folder of their own (a page may train a model and
then predict with it), with ``../shared/data`` beside it (the real data of INCEPTORCH_DATA) and empty
caches, offline. Shell examples run through bash with the ``inceptorch`` of this Python's environment,
but for a plain ``inceptorch ARGS`` line (no globs, pipes or ``&&``), which runs as ``cli.main(ARGS)`` in
this process: the same command without the 2.5-4 s of importing torch again (some thirty commands).
Python examples run in this process too. The weights of ``--pretrained`` examples are planted in the cache
as random-weight files under the published names, as tests/test_hub.py and tests/test_metrics.py plant
them (downloads themselves are tested there, against a loopback server). An example that runs longer
than a minute runs with the shortened command of SHORTENED, and one that cannot run here is listed in
SKIPPED; both say why. A test id is ``page:line``.
"""

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision
from inception_reference import randomize_

from inceptorch import hub
from inceptorch.cli import main
from inceptorch.models import default_cfg

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# (page, command as written) -> (the command run instead, why). Each keeps what the example shows, on
# fewer images or epochs (QUICK), or with fewer of the paths that bench times.
QUICK = "--train-samples 64 --val-samples 32 --epochs 1"
BENCH = "--batch 1 --repeats 1 --backend torch --precision fp32"
_HOUR = "epochs of Inception v3 at 299x299 on 900 photos take an hour on 2 cores"
_SHORTER = {
    "README.md": {
        "inceptorch finetune --model inception_v3 --pretrained --data ../shared/data/cats_vs_dogs/train "
        "--freeze backbone --epochs 3": ("--epochs 1 --train-samples 16 --val-samples 8 --batch-size 8", _HOUR),
        "inceptorch train --recipe fashion-mnist-fast --data-root ../shared/data":
            ("--train-samples 512 --val-samples 256", "the recipe takes 2 minutes on 60,000 images"),
    },
    "docs/training.md": {
        "inceptorch train                                   # mnist_inception on the built-in sample":
            ("--epochs 1 --train-samples 512", "10 epochs of the built-in sample take a minute or two"),
        "inceptorch train --model googlenet --image-size 96 --epochs 10         # aux heads on (weight 0.3)":
            (QUICK, "10 epochs of GoogLeNet at 96x96 take half an hour"),
        "inceptorch train --model mnist_inception --data mnist --data-root ../shared/data --epochs 5":
            (QUICK, "5 epochs of 54,000 digits take minutes"),
        "inceptorch train --recipe fashion-mnist-fast --data-root ../shared/data --name fmnist":
            ("--train-samples 512 --val-samples 256", "the recipe takes 2 minutes on 60,000 images"),
        "inceptorch train --data ../shared/data/cats_vs_dogs/train --model googlenet_small --image-size 64 "
        "--val-split 0.2": (QUICK, "10 epochs of 800 photos take minutes"),
        "torchrun --nproc-per-node 2 -m inceptorch.cli train --data mnist --data-root ../shared/data":
            (QUICK, "10 epochs of 54,000 digits take long; two processes still share each batch"),
        "inceptorch train --recipe mnist-fast --data-root ../shared/data --ensemble 2 --name mnist2   "
        "# two members at once": ("--epochs 1 --train-samples 256 --val-samples 128",
                                 "two members of 8 epochs on 54,000 digits take 9 minutes"),
    },
    "docs/transfer.md": {
        "inceptorch finetune --model inception_v3 --pretrained --data ../shared/data/cats_vs_dogs/train "
        "--freeze backbone --aux-weight 0.4 --epochs 3 --unfreeze-after 2 --name cats_dogs":
            ("--epochs 2 --unfreeze-after 1 --train-samples 16 --val-samples 8 --batch-size 8", _HOUR),
    },
    "docs/inference.md": {
        "inceptorch finetune --model googlenet --pretrained --data ../shared/data/cats_vs_dogs/train --epochs 3 "
        "--name photos": (QUICK, "3 epochs of GoogLeNet at 224x224 on 900 photos take 20 minutes"),
        "inceptorch bench googlenet inception_v3 --batch 1,16":
            (BENCH, "timing every backend and precision of two models at two batch sizes takes minutes"),
    },
}
SHORTENED = {(page, command): (f"{command} {options}" if "#" not in command else
                               command.replace("  #", f" {options}  #", 1), why)
             for page, commands in _SHORTER.items() for command, (options, why) in commands.items()}
_PREDICT = "inceptorch predict --weights runs/photos/best.safetensors ../shared/data/cats_vs_dogs/train/cat/"
SHORTENED[("docs/inference.md", f"{_PREDICT} --backend auto --precision auto")] = (
    f"{_PREDICT}cat.1??.jpg --backend auto --precision auto",
    ("100 of the 500 photos (still over the 48 that make bf16 and int8 candidates): measuring each path and "
     "predicting 500 photos took 8 minutes on a shared 2-core machine"))
_EXPORT = "inceptorch export googlenet --pretrained --format onnx --out googlenet.onnx && inceptorch bench googlenet"
SHORTENED[("README.md", f"{_EXPORT} --batch 1,16")] = (
    f"{_EXPORT} {BENCH}", "timing every backend and precision at two batch sizes takes minutes")

# (page, command or first line of a block as written) -> why it does not run here.
SKIPPED = {
    ("README.md", 'pip install -e . && inceptorch train'):
        "installs the package; CI's .ci/run installs it, and `inceptorch train` runs in docs/training.md",
    ("README.md", 'pip install -e ".[dev]" && python -m pytest -q'): "runs this very test suite",
    ("docs/index.md", 'pip install -e . && inceptorch train'): "the README's install line, skipped there too",
    ("docs/index.md", 'pip install -e ".[dev]" && python -m pytest -q'): "runs this very test suite",
    ("docs/development.md", 'pip install -e ".[dev]" && python -m pytest -q'): "runs this very test suite",
    ("docs/transfer.md", "inceptorch train --recipe cifar10-fast --data-root ../shared/data --name cifar10"):
        "20 minutes on 2 cores (50,000 JPEGs); tests/test_recipes.py trains cifar10-fast for a few steps",
    ("docs/transfer.md", ("inceptorch finetune --weights runs/cifar10/best.safetensors --data "
                          "../shared/data/cats_vs_dogs/train --image-size 64 --freeze backbone --unfreeze-after 3 "
                          "--epochs 15 --lr 0.05 --lr-unfrozen 0.01")):
        "fine-tunes the CIFAR-10 run of the line above; benchmarks/transfer.py measures the pair",
    ("docs/benchmarks.md", "PYTHONPATH=. python benchmarks/fid.py --images 2000 --repeats 3     # the issue's size, every path: hours"):
        "the FID benchmark itself: 2,000 images a side through three tools runs for hours on 2 cores",
    ("docs/development.md", 'pip install -e ".[docs]"'): "installs packages; .ci/run installs the docs extra",
    ("docs/development.md", "mkdocs build --strict        # the site in site/; `mkdocs serve` to read it while writing"):
        "needs the project's mkdocs.yml; .ci/run builds the site with it",
}


@dataclass(frozen=True)
class Example:
    page: str  # relative to the project root
    line: int  # where the command or block starts on the page
    lang: str  # python, bash or console
    code: str
    expected: str = ""  # a console block's output

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _bash_commands(lines: list[str], first: int):
    """One command per line, backslash continuations joined; comment lines and blank lines left out."""
    command, start = "", None
    for number, line in enumerate(lines, first):
        if not command and (not line.strip() or line.lstrip().startswith("#")):
            continue
        start = start or number
        if line.endswith("\\"):
            command += line[:-1].rstrip() + " "
            continue
        yield start, command + line.strip()
        command, start = "", None


def _console_commands(lines: list[str], first: int):
    """``$ command`` and the output lines below it, up to the next ``$`` line."""
    current = None
    for number, line in enumerate(lines, first):
        if line.startswith("$ "):
            if current:
                yield current
            current = [number, line[2:], []]
        elif current:
            current[2].append(line)
    if current:
        yield current


def examples_of(path: Path) -> list[Example]:
    page = str(path.relative_to(ROOT))
    text = path.read_text().split("\n")
    found, number = [], 0
    while number < len(text):
        fence = re.match(r"^\s*```(\w+)\s*$", text[number])
        if not fence:
            number += 1
            continue
        indent = len(text[number]) - len(text[number].lstrip())
        lang, start = fence.group(1), number + 2  # line numbers count from 1; the code starts after the fence
        end = next(i for i in range(number + 1, len(text)) if text[i].strip() == "```")
        body = [line[indent:] for line in text[number + 1:end]]
        if lang == "python":
            found.append(Example(page, start, lang, "\n".join(body)))
        elif lang == "bash":
            found += [Example(page, n, lang, command) for n, command in _bash_commands(body, start)]
        elif lang == "console":
            found += [Example(page, n, lang, command, "\n".join(output))
                      for n, command, output in _console_commands(body, start)]
        number = end + 1
    return found


EXAMPLES = [example for page in PAGES for example in examples_of(page)]


def _key(example: Example) -> tuple[str, str]:
    return example.page, example.code.split("\n")[0] if example.lang == "python" else example.code


# --- planted weights and the folders the examples run in ------------------------------------------------

def _plant(home: Path, tag: str, model: torch.nn.Module) -> None:
    path = home / "hub" / "checkpoints" / hub.file_name(default_cfg(tag))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(randomize_(model).state_dict(), path)


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> Path:
    """A TORCH_HOME with random-weight files under the names of the published weights the pages use."""
    root = tmp_path_factory.mktemp("docs_caches")
    state = torch.get_rng_state()
    torch.manual_seed(2014)
    _plant(root / "torch", "googlenet.tv_in1k", torchvision.models.googlenet(aux_logits=True, init_weights=False))
    _plant(root / "torch", "inception_v3.tv_in1k", torchvision.models.inception_v3(init_weights=False))
    _plant(root / "torch", "inception_v3_fid.tf_in1k",
           torchvision.models.inception_v3(num_classes=1008, aux_logits=False, init_weights=False))
    torch.set_rng_state(state)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """One working folder per page, kept across its examples, with ../shared/data beside it."""
    made = {}

    def folder(page: str) -> Path:
        if page not in made:
            base = tmp_path_factory.mktemp(page.replace("/", "_").removesuffix(".md"))
            (base / "work").mkdir()
            if os.environ.get("INCEPTORCH_DATA"):
                (base / "shared").mkdir()
                (base / "shared" / "data").symlink_to(Path(os.environ["INCEPTORCH_DATA"]).resolve())
            made[page] = base / "work"
        return made[page]
    return folder


@pytest.fixture
def environment(caches, monkeypatch) -> dict:
    """Empty caches but for the planted weights, no downloads, this environment's `inceptorch` first."""
    values = {"TORCH_HOME": str(caches / "torch"), "HF_HOME": str(caches / "hf"),
              "XDG_CACHE_HOME": str(caches / "xdg"), "INCEPTORCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
              "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
              "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INCEPTORCH_WEIGHTS_URL", raising=False)
    return {**os.environ}


def _needs_data(example: Example) -> None:
    if "../shared/data" in example.code and not os.environ.get("INCEPTORCH_DATA"):
        pytest.skip("the example reads ../shared/data: set INCEPTORCH_DATA to the data folder")


PLAIN = re.compile(r"inceptorch [^*?\[\]&|;<>$`'\"\\]*")  # one invocation, nothing for a shell to expand


def _bash(command: str, cwd: Path, env: dict) -> str:
    done = subprocess.run(["bash", "-c", "set -eo pipefail\n" + command], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\nexit status {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _in_process(command: str, capsys) -> str:
    capsys.readouterr()
    status = main(shlex.split(command, comments=True)[1:])
    captured = capsys.readouterr()
    assert status == 0, f"{command}\nexit status {status}\n{captured.out[-3000:]}{captured.err[-3000:]}"
    return captured.out


@pytest.fixture
def _threads():
    """Commands such as bench set torch's thread count; the next example starts from the usual one."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs_as_the_page_says(example, folders, environment, monkeypatch, capsys, _threads):
    key = _key(example)
    if key in SKIPPED:
        pytest.skip(SKIPPED[key])
    _needs_data(example)
    cwd = folders(example.page)
    monkeypatch.chdir(cwd)
    if example.lang == "python":
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(example.code, example.id, "exec"), {"__name__": "__main__"})  # noqa: S102 (the page's own code)
        return
    command = SHORTENED[key][0] if key in SHORTENED else example.code
    output = _in_process(command, capsys) if PLAIN.fullmatch(command) else _bash(command, cwd, environment)
    if example.lang == "console":
        shown = [line.rstrip() for line in example.expected.strip("\n").split("\n")]
        printed = [line.rstrip() for line in output.strip("\n").split("\n")]
        if "..." in shown:  # an excerpt: its lines appear in the output, in order
            kept = [line for line in shown if line != "..."]
            assert [line for line in printed if line in kept] == kept
        else:
            assert printed == shown


def test_every_listed_example_is_still_on_its_page():
    """SHORTENED and SKIPPED name commands as written; an entry that no longer matches is stale."""
    keys = {_key(e) for e in EXAMPLES}
    assert set(SHORTENED) - keys == set() and set(SKIPPED) - keys == set()
