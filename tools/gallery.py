"""Does the gallery still reproduce? Rerun the studies' default configurations and compare with figures/.

Each study is run afresh (``shallow run STUDY --out FOLDER``, its own process, a fresh cache) and the
summary of its new sidecar is compared, value by value, with the committed ``figures/STUDY.json``:

    python tools/gallery.py                          # every study (about 30 minutes on 2 cores)
    python tools/gallery.py lazy_paths_2d f1_vs_f2   # some studies
    python tools/gallery.py --compare-only --out /tmp/gallery   # compare a finished run again

A number counts as reproduced when |new - old| <= rtol max(|new|, |old|) + atol (defaults 1e-3 and
1e-12: a study's seeds fix its draws, and what is left is rounding, which training can amplify; the
atol covers residuals that are rounding themselves, like a quadrature's closure at 1e-16). Strings and
booleans must be equal. Printed per study: whether its config matches the committed one, the
values that moved beyond the tolerance (at most ``--show`` of them, largest first), and the wall time
of both runs. The exit status is 1 when some study failed to run, ran another config, or moved.

Session 14 ran it over all 23 studies: all reproduced (the largest move, 1.8e-4 relative, was in
depth_separation_radial, whose networks are trained), in 30 minutes on the 2-core development machine.

A development tool, like ``seedshift.py`` and ``mutants.py``: neither part of the package nor of the suite.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def studies() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from shallow import cli

    return sorted(cli.find_studies())


def number(value):
    """A sidecar value, with the strings "nan", "inf" and "-inf" (how strict JSON sidecars write non-finite
    numbers; older ones wrote NaN and Infinity) read as floats."""
    return float(value) if value in ("nan", "inf", "-inf") else value


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def moved(old, new, rtol, atol) -> bool:
    if not (is_number(old) and is_number(new)):
        return old != new
    if not (math.isfinite(old) and math.isfinite(new)):  # NaN equals NaN here, inf only the same inf
        return not (old == new or (math.isnan(old) and math.isnan(new)))
    return abs(new - old) > rtol * max(abs(new), abs(old)) + atol


def compare(name: str, out: Path, rtol: float, atol: float, show: int) -> bool:
    """Print how the run under ``out`` compares with the committed sidecar; True when it reproduces."""
    new_path, old_path = out / "figures" / f"{name}.json", ROOT / "figures" / f"{name}.json"
    if not new_path.exists():
        print(f"== {name}: no new sidecar (the run failed: see {out / (name + '.log')})")
        return False
    if not old_path.exists():
        print(f"== {name}: no committed sidecar to compare with")
        return False
    old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
    same_config = old["config"] == new["config"]
    a, b = ({key: number(value) for key, value in side["summary"].items()} for side in (old, new))
    rows = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            rows.append((math.inf, key, a.get(key, "(absent)"), b.get(key, "(absent)")))
        elif moved(a[key], b[key], rtol, atol):
            x, y = a[key], b[key]
            size = (abs(y - x) / max(abs(x), abs(y)) if is_number(x) and is_number(y) and max(abs(x), abs(y)) > 0
                    else math.inf)
            rows.append((size, key, x, y))
    wall = f"wall {old.get('wall_time_s') or 0:.0f} s committed, {new.get('wall_time_s') or 0:.0f} s now"
    verdict = "reproduces" if same_config and not rows else "MOVED" if same_config else "OTHER CONFIG"
    print(f"== {name}: {verdict}; {len(rows)} of {len(set(a) | set(b))} summary values moved; {wall}")
    if not same_config:
        print("   config committed:", {k: v for k, v in old["config"].items() if new["config"].get(k) != v},
              "now:", {k: v for k, v in new["config"].items() if old["config"].get(k) != v})
    for size, key, x, y in sorted(rows, key=lambda row: -row[0])[:show]:
        print(f"   {key}: {x} -> {y}" + (f" (relative {size:.2g})" if math.isfinite(size) else ""))
    return same_config and not rows


def main(argv=None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # one line per study as it finishes, also into a pipe or a log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="studies to check (default: all)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/shallow-gallery"),
                        help="folder for the new figures, results and logs (default /tmp/shallow-gallery)")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-12)
    parser.add_argument("--show", type=int, default=8, help="moved values printed per study")
    parser.add_argument("--compare-only", action="store_true", help="compare the runs already under --out")
    args = parser.parse_args(argv)
    known = studies()
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown studies {unknown}; `shallow list` names them")
    names = args.names or known
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        if not args.compare_only:
            start = time.perf_counter()
            with open(args.out / f"{name}.log", "w") as log:
                command = [sys.executable, "-m", "shallow.cli", "run", name, "--force", "--out", str(args.out)]
                rc = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            if rc != 0:
                print(f"== {name}: exit status {rc} after {time.perf_counter() - start:.0f} s "
                      f"(log: {args.out / (name + '.log')})")
                failed.append(name)
                continue
        if not compare(name, args.out, args.rtol, args.atol, args.show):
            failed.append(name)
    print(f"{len(names) - len(failed)} of {len(names)} studies reproduce the gallery"
          + (f"; not: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
