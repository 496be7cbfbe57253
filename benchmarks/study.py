"""The word-task study: named configurations trained to a validation plateau, and the tables built from them.

Every configuration is an ordinary ``pyroseq train`` run directory under ``--root``; the study only starts,
stops and resumes those runs and reads what they wrote. A study longer than one sitting is run in chunks:

    python benchmarks/study.py list                       # configurations, groups and their state
    python benchmarks/study.py run flows --jobs 2 --minutes 60   # train (or continue) a group for an hour
    python benchmarks/study.py run --resume ...           # the same: unfinished runs always continue
    python benchmarks/study.py report --samples 1000      # evaluate finished runs, write tables and plots

A run stops at its plateau: when ``--patience`` validations in a row have not lowered the best validation
loss by more than ``--tolerance`` nats/word, the study sends SIGINT, the trainer writes its checkpoint and
the run is marked done (``<root>/<name>.study.json``). It also stops at ``max_steps`` (the learning-rate
horizon). ``--minutes`` stops every unfinished run cleanly when the time is up; the next ``run`` resumes it.
Wall time per run is measured by the study (the trainer's own rates restart at each resume).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PYROSEQ = [sys.executable, "-m", "pyroseq"]
WORDS = ["--data", "words", "--top", "10000"]
SPLINE = "rqspline"  # Pyro's conditional rational-quadratic spline (Durkan et al. 2019)


@dataclass(frozen=True)
class Config:
    """One named training run: its ``pyroseq train`` options and the groups (tables) it belongs to."""

    name: str
    args: tuple[str, ...]
    groups: tuple[str, ...]
    max_steps: int = 20_000

    def train_command(self, out: Path, *, resume: bool, max_steps: int | None = None) -> list[str]:
        steps = str(max_steps or self.max_steps)
        command = [*PYROSEQ, "train", *WORDS, *self.args, "--steps", steps, "--out", str(out)]
        return [*command, "--resume"] if resume else command


def _dssm(flow: str, *, d: int = 16, guide_flow: str = "diagonal", objective: str = "iwae", k: int = 4,
          flow_hidden: int = 64, emitter_hidden: int = 64) -> tuple[str, ...]:  # fmt: skip
    args = ["--model", "dssm", "--state-dim", str(d), "--flow", flow, "--flow-hidden", str(flow_hidden)]
    args += ["--guide-flow", guide_flow, "--emitter-hidden", str(emitter_hidden), "--objective", objective]
    return (*args, "--particles", str(k), "--batch-size", "256", "--valid-every", "250")


def _rnn(training: str, *, d: int) -> tuple[str, ...]:
    args = ("--model", "rnn", "--cell", "gru", "--training", training, "--state-dim", str(d))
    return (*args, "--batch-size", "256", "--valid-every", "250")


def _grid() -> list[Config]:
    configs: list[Config] = []
    flows = {
        "tri": "triangular",
        "cp2": "coupling",
        "cp4": "coupling+coupling",
        "cp8": "coupling+coupling+coupling+coupling",
        "rq2": f"{SPLINE}+{SPLINE}",
        "rq4": "+".join([SPLINE] * 4),
        "cp4-tri": "coupling+coupling+triangular",
        "rq2-tri": f"{SPLINE}+{SPLINE}+triangular",
    }
    for short, flow in flows.items():
        configs.append(Config(f"dssm-{short}-d16", _dssm(flow), ("flows",)))
    for short in ("cp4", "rq2-tri"):
        configs.append(Config(f"dssm-{short}-h128-d16", _dssm(flows[short], flow_hidden=128), ("flows",)))
    for guide_flow, short in (("none", "gnone"), ("coupling", "gcp2")):
        for gen in ("tri", "cp4"):
            configs.append(
                Config(f"dssm-{gen}-{short}-d16", _dssm(flows[gen], guide_flow=guide_flow), ("guides",))
            )
    configs.append(Config("dssm-cp4-linear-d16", _dssm(flows["cp4"], emitter_hidden=0), ("emitter",)))
    configs.append(Config("dssm-cp4-elbo-d16", _dssm(flows["cp4"], objective="elbo", k=1), ("objective",)))
    configs.append(Config("dssm-cp4-iwae16-d16", _dssm(flows["cp4"], k=16), ("objective",)))
    for d in (8, 16, 32):
        if d != 16:
            configs.append(Config(f"dssm-cp4-d{d}", _dssm(flows["cp4"], d=d), ("models",)))
        for training in ("teacher", "scheduled", "professor"):
            configs.append(Config(f"rnn-{training}-d{d}", _rnn(training, d=d), ("models",)))
    # The same-D DSSM rows of the models table are the flow grid's d16 run and the two above.
    return configs


CONFIGS = {c.name: c for c in _grid()}
GROUPS = sorted({g for c in CONFIGS.values() for g in c.groups})


@dataclass
class Progress:
    """What the study knows of one run: done or not, and the wall time and steps of each of its segments."""

    done: bool = False
    reason: str = ""
    segments: list[dict] = field(default_factory=list)  # {"start_step", "end_step", "seconds"}

    @classmethod
    def load(cls, path: Path) -> Progress:
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        os.replace(tmp, path)

    @property
    def seconds(self) -> float:
        return sum(s["seconds"] for s in self.segments)


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (lines that do not parse are skipped)."""
    path = run_dir / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def last_step(run_dir: Path) -> int:
    """The last step ``metrics.jsonl`` records (0 before any)."""
    return max((r["step"] for r in read_metrics(run_dir) if isinstance(r.get("step"), int)), default=0)


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["valid_loss"]) for r in read_metrics(run_dir) if "valid_loss" in r]


def plateaued(curve: list[tuple[int, float]], *, patience: int, tolerance: float) -> bool:
    """True when the last ``patience`` validations did not beat the best before them by ``tolerance``."""
    if len(curve) <= patience:
        return False
    before = min(loss for _, loss in curve[:-patience])
    return min(loss for _, loss in curve[-patience:]) > before - tolerance


class Job:
    """A training subprocess of one configuration, watched for its plateau."""

    def __init__(self, config: Config, root: Path, *, log_dir: Path, max_steps: int | None) -> None:
        self.config, self.out = config, root / config.name
        self.progress_path = root / f"{config.name}.study.json"
        self.progress = Progress.load(self.progress_path)
        resume = (self.out / "checkpoint.pt").is_file()
        self.start_step = last_step(self.out)
        log = open(log_dir / f"{config.name}.log", "a")  # noqa: SIM115 - closed in finish()
        self.log = log
        self.began = time.monotonic()
        self.process = subprocess.Popen(
            [*config.train_command(self.out, resume=resume, max_steps=max_steps), "--no-progress", "--json"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.stop_reason = ""

    def stop(self, reason: str) -> None:
        if self.process.poll() is None and not self.stop_reason:
            self.stop_reason = reason
            self.process.send_signal(signal.SIGINT)  # the trainer checkpoints and exits 130

    def finish(self) -> str:
        """Wait for the process; record the segment and whether the run is done; return a status line."""
        code = self.process.wait()
        self.log.close()
        end_step = last_step(self.out)
        seconds = time.monotonic() - self.began
        self.progress.segments.append(
            {"start_step": self.start_step, "end_step": end_step, "seconds": seconds}
        )
        if code == 0:
            self.progress.done, self.progress.reason = True, "max_steps"
        elif self.stop_reason == "plateau":
            self.progress.done, self.progress.reason = True, "plateau"
        self.progress.save(self.progress_path)
        status = "done" if self.progress.done else f"stopped ({self.stop_reason or f'exit {code}'})"
        return f"{self.config.name}: {status} at step {end_step}, {seconds:.0f} s this segment"


def select(names: list[str]) -> list[Config]:
    if not names:
        return list(CONFIGS.values())
    chosen = []
    for name in names:
        if name in CONFIGS:
            chosen.append(CONFIGS[name])
        elif name in GROUPS:
            chosen += [c for c in CONFIGS.values() if name in c.groups]
        else:
            raise SystemExit(f"error: {name!r} is neither a configuration nor a group ({', '.join(GROUPS)})")
    return list(dict.fromkeys(chosen))


def run(args: argparse.Namespace) -> None:
    root: Path = args.root
    root.mkdir(parents=True, exist_ok=True)
    log_dir = root / "logs"
    log_dir.mkdir(exist_ok=True)
    queue = [c for c in select(args.names) if not Progress.load(root / f"{c.name}.study.json").done]
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    jobs: list[Job] = []
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"{len(queue)} runs to train or continue under {root}", flush=True)
    while queue or jobs:
        out_of_time = deadline is not None and time.monotonic() > deadline
        while queue and len(jobs) < args.jobs and not (stopping or out_of_time):
            jobs.append(Job(queue.pop(0), root, log_dir=log_dir, max_steps=args.max_steps))
            print(f"{jobs[-1].config.name}: started at step {jobs[-1].start_step}", flush=True)
        if not jobs:
            break
        time.sleep(args.poll)
        for job in list(jobs):
            if stopping or out_of_time:
                job.stop("time" if out_of_time else "signal")
            elif plateaued(validation_curve(job.out), patience=args.patience, tolerance=args.tolerance):
                job.stop("plateau")
            if job.process.poll() is not None:
                print(job.finish(), flush=True)
                jobs.remove(job)


def evaluate(run_dir: Path, *, samples: int, autoregressive: bool) -> dict:
    """``pyroseq evaluate`` of a run (guide IWAE for a DSSM), cached beside it by checkpoint step."""
    step = last_step(run_dir)
    cache = run_dir.parent / f"{run_dir.name}.eval-{'exact' if autoregressive else samples}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("study_step") == step:
            return cached
    command = [*PYROSEQ, "evaluate", str(run_dir), "--json", "--no-progress", "--no-bounds"]
    if not autoregressive:
        command += ["--estimator", "iwae", "--samples", str(samples), "--noise", "--noise-samples", "100"]
    else:
        command += ["--no-noise"]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["study_step"] = step
    cache.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _row(name: str, root: Path, samples: int) -> dict | None:
    run_dir = root / name
    if not (run_dir / "checkpoint.pt").is_file():
        return None
    progress = Progress.load(root / f"{name}.study.json")
    autoregressive = name.startswith("rnn-")
    result = evaluate(run_dir, samples=samples, autoregressive=autoregressive)
    step = last_step(run_dir)
    batch = 256
    return {
        "name": name,
        "ce": result.get("ce_nats"),
        "ce_stderr": result.get("ce_stderr"),
        "kl": result.get("kl_nats"),
        "mass": result.get("vocab_mass"),
        "estimator": result.get("estimator", "exact"),
        "samples": None if autoregressive else samples,
        "steps": step,
        "words_seen": step * batch,
        "seconds": progress.seconds,
        "done": progress.reason or "unfinished",
        "noise": result.get("noise"),
    }


def _table(rows: list[dict]) -> str:
    lines = [
        "| run | CE (nats/word) | KL | vocabulary mass | estimator (K) | steps | words seen | wall s | stopped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ce = f"{r['ce']:.3f}" + (f" ± {r['ce_stderr']:.3f}" if r["samples"] else "")
        est = r["estimator"] + (f" ({r['samples']})" if r["samples"] else "")
        lines.append(
            f"| {r['name']} | {ce} | {r['kl']:.3f} | {r['mass']:.3f} | {est} | {r['steps']} | "
            f"{r['words_seen']:,} | {r['seconds']:.0f} | {r['done']} |"
        )
    return "\n".join(lines)


def _plot_curves(rows: list[dict], root: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_words, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for r in rows:
        curve = validation_curve(root / r["name"])
        if not curve:
            continue
        steps, losses = zip(*curve, strict=True)
        by_words.plot([s * 256 for s in steps], losses, label=r["name"])
        per_step = r["seconds"] / max(r["steps"], 1)  # the study's wall time, spread evenly over steps
        by_time.plot([s * per_step for s in steps], losses, label=r["name"])
    by_words.set_xlabel("training words")
    by_time.set_xlabel("wall seconds (study-measured)")
    by_words.set_ylabel("validation loss (nats/word)")
    for ax in (by_words, by_time):
        ax.axhline(7.328, color="black", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    by_time.legend(fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def report(args: argparse.Namespace) -> None:
    root: Path = args.root
    sections = []
    everything = []
    for group in GROUPS:
        rows = [r for c in CONFIGS.values() if group in c.groups if (r := _row(c.name, root, args.samples))]
        if not rows:
            continue
        everything += rows
        sections.append(f"## {group}\n\n{_table(rows)}\n")
        if args.plots:
            _plot_curves(rows, root, args.plots / f"study_{group}.png")
            sections[-1] += f"\n![{group}](img/study_{group}.png)\n"
    text = "\n".join(sections) if sections else "no finished or started runs under " + str(root)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(everything, indent=1) + "\n")


def list_configs(args: argparse.Namespace) -> None:
    for c in CONFIGS.values():
        progress = Progress.load(args.root / f"{c.name}.study.json")
        step = last_step(args.root / c.name)
        state = progress.reason if progress.done else (f"at step {step}" if step else "not started")
        print(f"{c.name:28s} {','.join(c.groups):10s} {state:14s} {' '.join(c.args)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=Path("runs/study"), help="where the run directories live"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="configurations and their state").set_defaults(func=list_configs)
    p = sub.add_parser("run", help="train or continue configurations (names or groups; default all)")
    p.add_argument("names", nargs="*")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one CPU thread each)")
    p.add_argument(
        "--minutes", type=float, default=0, help="stop every run cleanly after this long (0: never)"
    )
    p.add_argument("--patience", type=int, default=6, help="validations without improvement before stopping")
    p.add_argument("--tolerance", type=float, default=0.02, help="nats/word an improvement must exceed")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between looks at the runs")
    p.add_argument("--max-steps", type=int, help="cap every run at this many steps (smoke tests)")
    p.add_argument(
        "--resume", action="store_true", help="accepted for clarity: unfinished runs always resume"
    )
    p.set_defaults(func=run)
    p = sub.add_parser("report", help="evaluate the runs and print the tables")
    p.add_argument("--samples", type=int, default=1000, help="K of the DSSM's guide IWAE estimator")
    p.add_argument("--plots", type=Path, help="write curve plots (CE against words and wall time) here")
    p.add_argument("--out", type=Path, help="write all rows as JSON here")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
