"""The `thresher` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from thresher.pipeline.config import ConfigError, default_config_text, load_config
from thresher.pipeline.ledger import Ledger
from thresher.pipeline.shards import InputError

log = logging.getLogger("thresher")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _logging(args.log_level)
    try:
        return args.func(args)
    except (ConfigError, InputError) as err:
        print(f"thresher: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thresher: interrupted; finished shards are kept, run again to resume",
              file=sys.stderr)
        return 130
    except Exception as err:
        from thresher.pipeline.run import RunError

        if isinstance(err, RunError):
            print(f"thresher: error: {err}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thresher", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("THRESHER_LOG", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log (default INFO; env THRESHER_LOG)")
    commands = parser.add_subparsers(dest="command", required=True)

    curate = commands.add_parser("curate", help="run the pipeline over input shards")
    curate.add_argument("--input", "-i", nargs="+", required=True,
                        help="Parquet files, directories or globs")
    curate.add_argument("--output", "-o", required=True, help="output directory")
    curate.add_argument("--config", "-c", help="pipeline YAML (default: the built-in one)")
    curate.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else "
                                          "an in-process Ray)")
    curate.add_argument("--num-cpus", type=int, help="CPUs of the in-process Ray")
    curate.add_argument("--no-progress", action="store_true", help="hide Ray's progress bars")
    curate.set_defaults(func=_curate)

    status = commands.add_parser("status", help="what the ledger of an output knows")
    status.add_argument("--output", "-o", required=True)
    status.set_defaults(func=_status)

    config = commands.add_parser("config", help="print the default config, or check one")
    config.add_argument("--check", metavar="FILE", help="validate FILE and print its stages")
    config.set_defaults(func=_config)

    demo = commands.add_parser("demo-crawl", help="build the demo crawl from local material")
    demo.add_argument("--output", "-o", required=True)
    demo.add_argument("--shards", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def _curate(args) -> int:
    from thresher.pipeline.run import curate

    config = load_config(args.config)
    result = curate(args.input, args.output, config, address=args.address,
                    num_cpus=args.num_cpus, progress=not args.no_progress)
    t = result.totals
    if result.state == "nothing-to-do":
        print(f"thresher: nothing new to do: all {result.plan.get('done', 0)} input shards "
              f"are already done in {result.out_dir} (`thresher status -o {args.output}`)")
    else:
        print(f"thresher: run {result.run_id} {result.state}: {t['rows_in']:,} rows in -> "
              f"{t['curated']:,} curated, {t['rejected']:,} rejected, "
              f"{t['quarantined']:,} quarantined ({_plan_text(result.plan)})")
    print(f"  outputs:  {result.out_dir}/{{curated,rejected,quarantine}}/")
    print(f"  manifest: {result.manifest_path}")
    if result.report_path:
        print(f"  report:   {result.report_path}")
    return 0


def _plan_text(plan: dict) -> str:
    return ", ".join(f"{n} shards {k}" for k, n in plan.items() if n) or "no shards"


def _status(args) -> int:
    out = Path(args.output)
    if not (out / "ledger.sqlite").exists():
        raise InputError(f"{out} holds no ledger.sqlite: no run has written there")
    ledger = Ledger(out)
    shards = ledger.shards()
    by_state: dict[str, int] = {}
    for row in shards:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    print(f"{out}: {len(shards)} shards known: "
          + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())))
    print(f"{'run':<24} {'state':<14} {'shards':>6} {'rows_in':>10} {'curated':>10} "
          f"{'rejected':>10} {'quarant.':>9}")
    totals = [0, 0, 0, 0]
    for r in ledger.run_counts():
        print(f"{r['run_id']:<24} {r['state']:<14} {r['shards']:>6} {r['rows_in']:>10,} "
              f"{r['curated']:>10,} {r['rejected']:>10,} {r['quarantined']:>9,}")
        for i, k in enumerate(("rows_in", "curated", "rejected", "quarantined")):
            totals[i] += r[k]
    print(f"{'total':<24} {'':<14} {'':>6} {totals[0]:>10,} {totals[1]:>10,} {totals[2]:>10,} "
          f"{totals[3]:>9,}")
    pending = [row["path"] for row in shards if row["state"] not in ("done", "quarantined")]
    if pending:
        print(f"{len(pending)} shard(s) not finished (resumed by the next run), e.g. {pending[0]}")
    ledger.close()
    return 0


def _config(args) -> int:
    if args.check:
        config = load_config(args.check)
        for spec in config.stages:
            print(f"stage {spec.name}: {spec.params} {spec.resources}")
        for rule in config.filters:
            print(f"keep if {rule}   (else drop_reason {rule.reason})")
        return 0
    print(default_config_text(), end="")
    return 0


def _demo(args) -> int:
    from thresher.pipeline.demo_crawl import build_demo_crawl

    paths = build_demo_crawl(Path(args.output), shards=args.shards, seed=args.seed)
    print(f"thresher: demo crawl: {len(paths)} shards in {args.output}")
    return 0


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Ray Data logs every operator at INFO; keep that for DEBUG.
    logging.getLogger("ray").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
