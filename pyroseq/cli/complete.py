"""``pyroseq complete``: continue a prefix by the model's conditional law."""

from __future__ import annotations

import math

import click

from pyroseq.cli.common import (
    POSITIVE,
    POSITIVE_FLOAT,
    SEED,
    Finite,
    emit,
    handle_errors,
    json_option,
    threads_option,
)
from pyroseq.complete import COMPLETION_DECODERS, complete
from pyroseq.data.words import WordCorpus
from pyroseq.runs.rundir import load_run


@click.command("complete")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--prefix", required=True, help='The prefix to complete ("" for unconditional sampling).')
@click.option("-n", "num", type=POSITIVE, default=10, show_default=True, help="How many completions.")
@click.option(
    "--particles", type=POSITIVE, help="DSSM: particles of the filter over the prefix [default: 1000]."
)
@click.option("--decoder", type=click.Choice(COMPLETION_DECODERS), default="ancestral", show_default=True)
@click.option(
    "--temperature", type=POSITIVE_FLOAT, default=1.0, show_default=True, help="Divides the logits."
)
@click.option("--top-k", type=POSITIVE, help="topk: keep the K most probable symbols.")
@click.option(
    "--top-p", type=Finite(0, 1, min_open=True), help="nucleus: keep the smallest set with this much mass."
)
@click.option(
    "--max-length",
    type=POSITIVE,
    help="Most symbols per completion, prefix and EOS included [default: words: longest word; text: "
    "chunk length].",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@threads_option
@json_option
@handle_errors
def complete_command(
    run_dir: str, prefix: str, num: int, particles: int | None, decoder: str, temperature: float,
    top_k: int | None, top_p: float | None, max_length: int | None, seed: int, device: str, as_json: bool,
) -> None:  # fmt: skip
    """Complete PREFIX N times with the model of RUN_DIR (DSSM: a particle filter conditions the state on
    the prefix; RNN: the prefix is fed in). Each completion comes with its weight q(completion | prefix)."""
    run = load_run(run_dir, device=device)
    run.model.require_symbols("pyroseq complete")
    corpus = run.corpus()
    words = isinstance(corpus, WordCorpus)
    if max_length is None:
        max_length = corpus.max_length if words else run.config.chunk_length
    ids = run.vocab.encode(prefix, add_eos=False)
    out = complete(
        run.model, ids, num_samples=num, max_length=max_length, num_particles=particles, decoder=decoder,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
    )  # fmt: skip
    known = set(corpus.words) if words else set()
    completions = []
    for seq, log_prob in zip(out.sequences, out.log_probs, strict=True):
        text = run.vocab.decode(seq)
        item = {"text": text, "weight": math.exp(log_prob), "log_prob": log_prob, "length": len(seq)}
        if words:
            item["in_vocabulary"] = text in known
        completions.append(item)
    result = {
        "run_dir": str(run.path), "model": run.config.model, "prefix": prefix, "decoder": decoder,
        "particles": out.num_particles, "log_evidence": out.log_evidence, "ess": out.ess,
        "completions": completions,
    }  # fmt: skip
    how = f"particle filter, N={out.num_particles}" if out.num_particles else "exact"
    lines = [
        f"{decoder} completions of {prefix!r} from {run.path} (weight: q(completion | prefix))",
        f"  log q(prefix) = {out.log_evidence:.3f} ({how})"
        + (f", smallest ESS {min(out.ess):.0f}" if out.ess else ""),
    ]
    for c in completions:
        flag = "  [word]" if c.get("in_vocabulary") else ""
        lines.append(f"  {c['weight']:9.3g}  {c['text']!r}{flag}")
    emit(result, as_json, lines)
