"""Draw the DSSM's and the RNN's Pyro model graphs with ``pyro.render_model``.

The DSSM has one latent site ``h`` (the state trajectory, drawn step by step) and an observed site
``w_t`` per step, each depending on ``h`` alone: the states never see the symbols. The teacher-forced
RNN has no latent site; drawn from (``ids=None``), each ``w_t`` depends on every earlier symbol.
Rendering needs the ``graphviz`` Python package (``pip install pyroseq[graph]``); the pictures need the
Graphviz program ``dot`` too (``apt-get install graphviz``), and without it only the ``.gv`` sources
are written.

    python examples/render_models.py --out docs/img
    python examples/render_models.py --smoke        # a temporary dir
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import pyro
import torch

from pyroseq.data.words import load_words
from pyroseq.models import DSSM, RNNLM


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Render both graphs; return the path written for each model (a PNG, or the source without dot)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="T, the steps drawn")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the pictures go (default: a temporary dir)"
    )
    parser.add_argument("--smoke", action="store_true", help="a temporary directory (the same small graphs)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="pyroseq-graphs-"))
    out.mkdir(parents=True, exist_ok=True)

    vocab = load_words("sample").vocab
    mask = torch.ones(2, args.steps, dtype=torch.bool)  # two sequences of T real steps
    ids = torch.full((2, args.steps), vocab.eos_id)
    models = {
        "dssm_model": (DSSM(vocab_size=len(vocab), state_dim=4), (ids, mask)),
        "rnn_model": (RNNLM(vocab_size=len(vocab), state_dim=4), (None, mask)),
    }
    written = {}
    for name, (model, model_args) in models.items():
        graph = pyro.render_model(model, model_args=model_args, render_distributions=True)
        if shutil.which("dot"):
            written[name] = Path(graph.render(out / name, format="png", cleanup=True))
        else:
            written[name] = Path(graph.save(out / f"{name}.gv"))
        print(f"{type(model).__name__}: {written[name]}")
    return written


if __name__ == "__main__":
    main()
