"""The current results table at the top of benchmarks/RESULTS.md, made from the rows below it.

RESULTS.md is a lab log: what the benchmark scripts printed, pasted with their commands. Its
first table (between the ``current-results`` markers) says, for each target, the number that
stands now. This script makes that table from the pasted output itself (the last test row of
each run that ``likelihood.py`` printed, the seed summaries ``speedrun.py`` printed), with
the target, the published reference and the hardware from the list below, and the commit
that recorded each row from git. So the table cannot drift from the rows under it:

    python benchmarks/results_table.py            # print the table
    python benchmarks/results_table.py --check    # exit 1 when RESULTS.md's table differs
    python benchmarks/results_table.py --write    # put the table into RESULTS.md

The test suite runs ``--check``. A new measurement is pasted into the log, then ``--write``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN = "<!-- current-results: made by benchmarks/results_table.py from the rows below; do not edit by hand -->"
END = "<!-- /current-results -->"

XEON = "Intel Xeon, 2 cores"
EPYC = "AMD EPYC, 2 cores"


@dataclass(frozen=True)
class Target:
    preset: str
    data: str
    run: str  # the run whose likelihood.py test row holds the number (its last one in the log)
    target: float  # the target NLL (lower is better)
    published: str
    hardware: str
    threads: int
    seeds: str = ""  # a speedrun.py summary row giving the mean and spread over seeds
    also: tuple[tuple[str, str], ...] = ()  # (run, what it was) shown beside the number
    note: str = ""


TARGETS = (
    Target("bmnist-vae", "static binarized MNIST", "final-bmnist-vae", 88.5,
           "88.71 (Burda et al. 2016)", XEON, 1, seeds="bmnist-vae"),
    Target("bmnist-fast", "static binarized MNIST", "", 88.5, "—", EPYC, 1, seeds="bmnist-fast"),
    Target("bmnist-best", "static binarized MNIST", "bmnist-best", 85.0,
           "85.57 (VampPrior, Tomczak & Welling 2018)", EPYC, 1,
           also=(("final-bmnist-best268", "on the Xeon that recorded the preset"),)),
    Target("fmnist-vae", "Fashion-MNIST, dynamic", "final-fmnist-vae1300", 228.0,
           "228.70 (Norouzi et al. 2020)", XEON, 1),
    Target("fmnist-vamp", "Fashion-MNIST, dynamic", "final-fmnist-best", 225.0,
           "225.38 (conv HVAE, Norouzi et al. 2020)", XEON, 1,
           note="the target of `fmnist-best` until the hierarchy beat it"),
    Target("bmnist-hvae", "static binarized MNIST", "bmnist-hvae-iw4", 83.0,
           "83.19 (HVAE + VampPrior, Tomczak & Welling 2018)", EPYC, 2),
    Target("fmnist-hvae", "Fashion-MNIST, dynamic", "fmnist-hvae-g97e650", 226.5,
           "226.72 (HVAE + VampPrior, Norouzi et al. 2020)", EPYC, 2),
    Target("fmnist-best", "Fashion-MNIST, dynamic", "fmnist-gconv16-a300", 225.0,
           "224.67 (conv HVAE + VampPrior, Norouzi et al. 2020)", EPYC, 2,
           note="needs the literature's decoder width: a GPU"),
)


@dataclass
class Row:
    line: str  # the pasted line, as it is in the log
    nll: float
    stderr: float
    threads: int | None


def likelihood_rows(log: str) -> dict[str, Row]:
    """The last test-set row of each run among the tables likelihood.py printed in ``log``
    (rows of validation tables, headed "# validation log-likelihood", are left out)."""
    rows: dict[str, Row] = {}
    split, header = "test", None
    for line in log.splitlines():
        if line.startswith("```"):
            split, header = "test", None
            continue
        m = re.match(r"# (test|validation) log-likelihood", line)
        if m:
            split = m.group(1)
            continue
        if line.startswith("run ") and " NLL " in line and "log p(x)" in line:
            header = line.split()
            continue
        if header is None or not line.strip():
            continue
        parts = line.split()
        try:
            nll, stderr = float(parts[5]), float(parts[4])
        except (IndexError, ValueError):
            header = None  # the table ended
            continue
        threads = int(parts[11]) if "thr" in header and len(parts) > 11 and parts[11].isdigit() else None
        if split == "test":
            rows[parts[0]] = Row(line, nll, stderr, threads)
    return rows


SEEDS = re.compile(r"^(?P<preset>[\w-]+)\s+(?P<mean>\d+\.\d+) ± (?P<sd>\d+\.\d+)\s+\d+ ± \d+\s+<=")
RATIO = re.compile(r"^# training time bmnist-fast / bmnist-vae.*mean (?P<ratio>\d\.\d+)")


def seed_rows(log: str) -> dict[str, tuple[str, float, float]]:
    """speedrun.py's summary rows: preset -> (line, mean NLL, standard deviation), the last."""
    out = {}
    for line in log.splitlines():
        m = SEEDS.match(line)
        if m:
            out[m["preset"]] = (line, float(m["mean"]), float(m["sd"]))
    return out


def commit_of(line: str) -> str:
    """The commit that first recorded ``line`` in RESULTS.md (git's pickaxe), or '?'."""
    try:
        out = subprocess.run(["git", "log", "--format=%h", "-S", line, "--", str(RESULTS)],
                             capture_output=True, text=True, cwd=RESULTS.parent, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    commits = out.stdout.split()
    return commits[-1] if out.returncode == 0 and commits else "?"


def verdict(value: float, target: float) -> str:
    margin = target - value
    return f"met by {margin:.2f}" if margin >= 0 else f"**missed** by {-margin:.2f}"


def make_table(log: str) -> str:
    runs, seeds = likelihood_rows(log), seed_rows(log)
    ratio = [m for m in (RATIO.match(l) for l in log.splitlines()) if m]
    lines = ["| preset | data | test NLL (K = 5000) | target | met? | published | hardware, threads | commit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in TARGETS:
        if t.run and t.run not in runs:
            raise SystemExit(f"error: no test row of run {t.run!r} in {RESULTS.name}")
        if t.seeds and t.seeds not in seeds:
            raise SystemExit(f"error: no speedrun.py summary row of {t.seeds!r} in {RESULTS.name}")
        sources = []
        if t.run:
            row = runs[t.run]
            number = f"{row.nll:.2f} ± {row.stderr:.2f} (`{t.run}`)"
            value = row.nll
            sources.append(row.line)
        if t.seeds:
            line, mean, sd = seeds[t.seeds]
            spread = f"seeds 0, 1, 2: {mean:.2f} ± {sd:.2f} (sd)"
            number = f"{number}; {spread}" if t.run else spread
            value = mean if not t.run else value
            sources.append(line)
        target = f"≤ {t.target:g}"
        met = verdict(value, t.target)
        if t.preset == "bmnist-fast" and ratio:
            r = float(ratio[-1]["ratio"])
            target += " in ≤ 1/3 of the time"
            met += f"; time ratio {r:.3f} ({'met' if r <= 1 / 3 else '**missed**'})"
        for run, what in t.also:
            if run not in runs:
                raise SystemExit(f"error: no test row of run {run!r} in {RESULTS.name}")
            number += f"; {runs[run].nll:.2f} {what} (`{run}`)"
        if t.note:
            number += f"; {t.note}"
        threads = runs[t.run].threads if t.run and runs[t.run].threads else t.threads
        commit = commit_of(sources[0])
        lines.append(f"| `{t.preset}` | {t.data} | {number} | {target} | {met} | {t.published} | "
                     f"{t.hardware}; {threads} thread{'s' if threads > 1 else ''} | {commit} |")
    return "\n".join(lines)


README = Path(__file__).parents[1] / "README.md"


def readme_disagreements(log: str) -> list[str]:
    """Targets whose row in the README's table (``| `preset` | ...``) lacks the current
    number: the README repeats the table in short, and must say the same."""
    runs, seeds = likelihood_rows(log), seed_rows(log)
    rows = {l.split("|")[1].strip(): l for l in README.read_text(encoding="utf-8").splitlines()
            if re.match(r"^\| `[\w-]+` \| [^|]*(MNIST|Fashion)", l)}
    bad = []
    for t in TARGETS:
        value = runs[t.run].nll if t.run else seeds[t.seeds][1]
        row = rows.get(f"`{t.preset}`", "")
        if f"{value:.2f}" not in row:
            bad.append(f"`{t.preset}`: {value:.2f} is not in the README's row: {row or '(none)'}")
    return bad


def split_results(text: str) -> tuple[str, str, str]:
    """(before the table, the table, the log after it)."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {RESULTS.name} has no current-results markers")
    head, rest = text.split(BEGIN, 1)
    table, log = rest.split(END, 1)
    return head, table.strip(), log


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the table in RESULTS.md differs")
    ap.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = ap.parse_args()
    text = RESULTS.read_text(encoding="utf-8")
    head, table, log = split_results(text)
    fresh = make_table(log)
    if args.check:
        if "| ? |" in fresh:  # no git history here (a shallow or exported copy): commits unknown
            mask = lambda t: re.sub(r"\| [0-9a-f?]+ \|$", "| |", t, flags=re.M)  # noqa: E731
            table, fresh = mask(table), mask(fresh)
        if table != fresh:
            print(f"{RESULTS.name}'s current table differs from the rows below it; run "
                  f"`python benchmarks/results_table.py --write`.\nin the file:\n{table}\n"
                  f"from the rows:\n{fresh}", file=sys.stderr)
            return 1
        bad = readme_disagreements(log)
        if bad:
            print("the README's targets table disagrees with RESULTS.md:\n" + "\n".join(bad),
                  file=sys.stderr)
            return 1
        print(f"{RESULTS.name}: the current table matches the rows below it, and the README's "
              f"table says the same ({len(TARGETS)} targets)")
        return 0
    if args.write:
        RESULTS.write_text(f"{head}{BEGIN}\n{fresh}\n{END}{log}", encoding="utf-8")
    print(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
