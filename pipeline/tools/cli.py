"""The `thresher` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from thresher.pipeline.engine.config import ConfigError, default_config_text, load_config
from thresher.pipeline.engine.ledger import Ledger
from thresher.pipeline.engine.shards import InputError
from thresher.pipeline.io.storage import Store

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
        from thresher.pipeline.steps.calibrate import CalibrationError
        from thresher.pipeline.engine.run import OutputBusy, RunError

        if isinstance(err, (CalibrationError, OutputBusy)):
            print(f"thresher: error: {err}", file=sys.stderr)
            return 2
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
                        help="Parquet files, directories or globs; local paths or URIs "
                             "(s3://, gs://, hdfs://)")
    curate.add_argument("--output", "-o", required=True,
                        help="output directory: a local path or a URI")
    curate.add_argument("--state", help="folder for the ledger and run manifests (default: "
                                       "the output folder when local, else "
                                       "$THRESHER_STATE_DIR/<output>)")
    curate.add_argument("--config", "-c", help="pipeline YAML (default: the built-in one)")
    curate.add_argument("--recipe", help="a published recipe instead (thresher config --recipe "
                        "NAME prints it): " + ", ".join(_recipe_names()))
    curate.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="a recipe's variable, e.g. --set classifier=/models/x.bin")
    curate.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else "
                                          "an in-process Ray)")
    curate.add_argument("--num-cpus", type=int, help="CPUs of the in-process Ray")
    curate.add_argument("--no-progress", action="store_true", help="hide Ray's progress bars (shown only on a terminal anyway)")
    curate.set_defaults(func=_curate)

    plan = commands.add_parser("plan", help="what `curate` would do (new, changed, resumed, "
                                            "done shards), without doing it")
    plan.add_argument("--input", "-i", nargs="+", required=True,
                      help="Parquet files, directories or globs")
    plan.add_argument("--output", "-o", required=True, help="output directory (its ledger)")
    plan.add_argument("--state", help="folder for the ledger and run manifests (default: "
                                       "the output folder when local, else "
                                       "$THRESHER_STATE_DIR/<output>)")
    plan.add_argument("--json", action="store_true", help="one JSON object per shard")
    plan.set_defaults(func=_plan)

    importer = commands.add_parser(
        "import", help="turn raw crawl files (WARC, WET, JSONL) into input shards")
    importer.add_argument("--format", "-f", required=True, choices=["warc", "wet", "jsonl"])
    importer.add_argument("--input", "-i", nargs="+", required=True,
                          help="files, directories or globs; local paths or URIs")
    importer.add_argument("--output", "-o", required=True,
                          help="folder for the Parquet shards: a local path or a URI")
    importer.add_argument("--crawl", help="the `crawl` value of every row (default: a "
                                          "CC-MAIN-YYYY-WW in the file's path, else its folder)")
    importer.add_argument("--part-rows", type=int, default=20_000,
                          help="rows per output shard (default 20000)")
    importer.add_argument("--workers", type=int, help="worker processes (default: CPUs)")
    importer.add_argument("--address", help="Ray cluster to spread the files over (default: "
                                            "RAY_ADDRESS, else local worker processes)")
    importer.add_argument("--extract-timeout", type=float, default=5.0,
                          help="seconds per page for WARC main-text extraction (default 5)")
    importer.add_argument("--state", help="folder for the import ledger (default: the "
                                          "output folder when local)")
    importer.set_defaults(func=_import)

    cluster = commands.add_parser(
        "cluster", help="a private local Ray head for `ray job submit` (own temp dir, token auth)")
    cluster.add_argument("action", choices=["up", "down", "env"],
                         help="up: start it; down: stop it (and nothing else); env: print "
                              "the exports a `ray` or `thresher` client needs")
    cluster.add_argument("--dir", default=".cluster",
                         help="its folder: token, address, log (default .cluster)")
    cluster.add_argument("--port", type=int, default=6390,
                         help="GCS port (default 6390; 0: a free one)")
    cluster.add_argument("--dashboard-port", type=int, default=8265,
                         help="job server port (default 8265; 0: a free one)")
    cluster.add_argument("--num-cpus", type=int, help="CPUs it offers (default: all)")
    cluster.set_defaults(func=_cluster)

    status = commands.add_parser("status", help="what the ledger of an output knows")
    status.add_argument("--output", "-o", required=True)
    status.add_argument("--state", help="folder for the ledger and run manifests (default: "
                                       "the output folder when local, else "
                                       "$THRESHER_STATE_DIR/<output>)")
    status.set_defaults(func=_status)

    config = commands.add_parser("config", help="print the default config, or check one")
    config.add_argument("--check", metavar="FILE", help="validate FILE and print its stages")
    config.add_argument("--recipe", help="print a published recipe's config: "
                        + ", ".join(_recipe_names()))
    config.set_defaults(func=_config)

    models = commands.add_parser("models", help="train and calibrate models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    train = model_commands.add_parser(
        "train-lm", help="train a KenLM (cc_net: normalized text, SentencePiece, 5-gram)")
    train.add_argument("--lang", required=True)
    train.add_argument("--corpus", nargs="+", required=True, help="text files, a line a unit")
    train.add_argument("--out", required=True, help="writes <lang>.arpa.bin, <lang>.sp.model")
    train.add_argument("--order", type=_order, default=5,
                       help="n-gram order, or auto: the order (2-5) and pruning with the "
                            "lowest perplexity on held-out lines of the corpus (default 5)")
    train.add_argument("--vocab", type=int, default=65536, help="SentencePiece vocabulary "
                                                                "(a soft limit)")
    train.add_argument("--no-sp", action="store_true", help="word-level (OSCAR's harmful LMs)")
    train.add_argument("--raw", action="store_true", help="do not normalize the text")
    train.set_defaults(func=_train_lm)
    fit = model_commands.add_parser("fit-tau", help="choose tau for a harmful-content KenLM")
    fit.add_argument("--model", required=True, help="the harmful KenLM (<lang>.arpa.bin)")
    fit.add_argument("--positive", help="harmful documents: text file, one document a line")
    fit.add_argument("--negative", help="clean documents: text file, one document a line")
    fit.add_argument("--unlabelled", help="a sample without labels: tau in the valley")
    fit.add_argument("--reference", help="reference KenLM: also fit the cross-entropy rule")
    fit.set_defaults(func=_fit_tau)
    student = model_commands.add_parser(
        "train-dataman-student", help="train the fastText DataMan student on teacher ratings")
    student.add_argument("--annotations", required=True,
                         help="Parquet or JSONL: text, dataman_<rating> x14, dataman_domain "
                              "(and dataman_status; OUT/calibration/dataman/annotations.parquet "
                              "has this layout)")
    student.add_argument("--out", required=True, help="folder for the 15 models and card.json")
    student.add_argument("--holdout", type=float, default=0.2,
                         help="share of rows held out to measure agreement (default 0.2)")
    student.set_defaults(func=_train_student)
    serve = model_commands.add_parser(
        "serve-llm", help="serve a local LLM over the OpenAI chat API (transformers engine)")
    serve.add_argument("--model", default="smollm2-135m-instruct",
                       help="a built-in name, a .gguf file or a model folder")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8011,
                       help="0: any free port (the line it prints says which)")
    serve.add_argument("--device", default="auto", help="cpu, cuda or auto")
    serve.set_defaults(func=_serve_llm)
    defaults = model_commands.add_parser("build-defaults", help="build the embedded run's models")
    defaults.add_argument("--crawl", default="data/demo-crawl")
    defaults.add_argument("--out", default="models-data")
    defaults.set_defaults(func=_build_defaults)

    dedup = commands.add_parser("dedup", help="the dedup index (OUT/dedup)")
    dedup_commands = dedup.add_subparsers(dest="dedup_command", required=True)
    rebuild = dedup_commands.add_parser(
        "rebuild", help="make the index again, in this version's format and with the "
                        "config's settings, from the outputs (they are not changed)")
    rebuild.add_argument("--output", "-o", required=True, help="the output folder or URI")
    rebuild.add_argument("--config", "-c", help="pipeline YAML whose dedup settings the index "
                                                "takes (default: the built-in one)")
    rebuild.add_argument("--state", help="folder of the ledger (as for curate)")
    rebuild.add_argument("--address", help="Ray cluster address (as for curate)")
    rebuild.add_argument("--num-cpus", type=int, help="CPUs of the in-process Ray")
    rebuild.set_defaults(func=_dedup_rebuild)

    demo = commands.add_parser("demo-crawl", help="build the demo crawl from local material, "
                                                  "as Parquet shards or as WARC files")
    demo.add_argument("--output", "-o", required=True)
    demo.add_argument("--format", choices=["parquet", "warc"], default="parquet",
                      help="parquet: build the crawl's shards (default); warc: write the "
                           "Parquet crawl in --from as gzipped WARC files under OUTPUT/<crawl>/ "
                           "for `thresher import --format warc`")
    demo.add_argument("--from", dest="source", metavar="DIR",
                      help="warc: the Parquet demo crawl (default: the repository's "
                           "data/demo-crawl; built first if it holds no shards)")
    demo.add_argument("--copies", type=int,
                      help="warc: write the whole crawl N times, each copy with its own URLs "
                           "and record ids (default 1)")
    demo.add_argument("--docs-per-shard", type=int, metavar="N",
                      help="warc: at most N documents of each shard (default all)")
    demo.add_argument("--shards", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def _recipe_names() -> list[str]:
    from thresher.pipeline.recipes import names

    return names()


def _run_config(args):
    """--config, --recipe (with its --set variables) or the default."""
    from thresher.pipeline.recipes import load_recipe, parse_sets

    if args.recipe and args.config:
        raise ConfigError("give --config or --recipe, not both")
    if args.recipe:
        return load_recipe(args.recipe, parse_sets(args.set))
    if args.set:
        raise ConfigError("--set fills a recipe's variables: give --recipe too")
    return load_config(args.config)


def _curate(args) -> int:
    from thresher.pipeline.engine.run import curate

    config = _run_config(args)
    result = curate(args.input, args.output, config, address=args.address,
                    num_cpus=args.num_cpus,
                    # Ray's progress bars only on a terminal: in a log they are noise.
                    progress=not args.no_progress and sys.stderr.isatty(),
                    state_dir=args.state)
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


def _dedup_rebuild(args) -> int:
    from thresher.pipeline.steps.dedup.rebuild import rebuild_index

    summary = rebuild_index(args.output, load_config(args.config), address=args.address,
                            num_cpus=args.num_cpus, state_dir=args.state)
    print(f"thresher: dedup index rebuilt from the outputs of {summary['shards']:,} shards: "
          f"{summary['documents']:,} documents, {summary['documents_in_clusters']:,} in "
          f"clusters of 2+ ({summary['seconds']} s)")
    print(_index_line(args.output))
    return 0


def _plan_text(plan: dict) -> str:
    return ", ".join(f"{n} shards {k}" for k, n in plan.items() if n) or "no shards"


def _plan(args) -> int:
    from collections import Counter

    from thresher.pipeline.engine.run import plan

    entries = plan(args.input, args.output, args.state)
    if args.json:
        for entry in entries:
            print(json.dumps(entry))
        return 0
    counts = Counter(e["action"] for e in entries)
    rows = Counter()
    for e in entries:
        rows[e["action"]] += e["rows"] or 0
    print(f"thresher: {len(entries)} input shards against {args.output}: "
          + ", ".join(f"{counts[a]} {a} ({rows[a]:,} rows)"
                      for a in ("new", "changed", "resumed", "done") if counts[a]))
    for entry in entries:
        if entry["action"] != "done":
            note = f"  (unreadable: {entry['error']})" if entry["error"] else ""
            print(f"  {entry['action']:<8} {entry['rows'] or 0:>10,}  {entry['path']}{note}")
    print(_index_line(args.output))
    return 0


def _index_line(output: str) -> str:
    """The dedup index that new documents are matched against (OUT/dedup)."""
    from thresher.pipeline.steps.dedup import index_size

    size = index_size(Store.at(output))
    if not size:
        return "dedup index: empty (no run with dedup has finished a shard here)"
    return (f"dedup index: {size['documents']:,} documents from {size['shards']:,} shards, "
            f"{size['bytes'] / 1e6:,.1f} MB in {Store.at(output).uri('dedup')}")


def _import(args) -> int:
    from thresher.pipeline.io.importers import import_files

    summary = import_files(args.format, args.input, args.output, crawl=args.crawl,
                           part_rows=args.part_rows, workers=args.workers,
                           extract_timeout=args.extract_timeout, state_dir=args.state,
                           address=args.address)
    print(f"thresher: imported {summary['imported']} of {summary['files']} {args.format} files "
          f"({summary['already_done']} already done) in {summary['seconds']} s: "
          f"{summary['rows']:,} rows -> {args.output}")
    if summary["skipped"]:
        print("  records that are not documents: " + ", ".join(
            f"{n:,} {reason}" for reason, n in summary["skipped"].most_common()))
    if summary["notes"]:
        print("  rows kept with a note (curate rejects or quarantines them): " + ", ".join(
            f"{n:,} {note}" for note, n in summary["notes"].most_common(8)))
    for error in summary["errors"]:
        print(f"  stopped early (rows before the error are kept): {error}")
    print(f"  next: thresher curate -i {args.output} -o OUT")
    return 1 if summary["errors"] else 0


def _cluster(args) -> int:
    from thresher.pipeline.tools import local_cluster

    try:
        return _cluster_action(args, local_cluster)
    except RuntimeError as err:  # the head did not start (1), or none is running (2)
        print(f"thresher: error: {err}", file=sys.stderr)
        return 2 if args.action == "env" else 1


def _cluster_action(args, local_cluster) -> int:
    import shlex

    if args.action == "up":
        info = local_cluster.running(args.dir)
        if info:
            print(f"thresher: a Ray head from {args.dir} is already running at {info['address']}")
        else:
            address = local_cluster.start_head(args.dir, port=args.port, num_cpus=args.num_cpus,
                                               dashboard_port=args.dashboard_port)
            print(f"thresher: Ray head at {address}, job server at "
                  f"{local_cluster.running(args.dir)['dashboard']} (folder {args.dir})")
        print(f"  submit jobs after: eval \"$(thresher cluster env --dir {args.dir})\"")
    elif args.action == "down":
        was = local_cluster.running(args.dir)
        local_cluster.stop_head(args.dir)
        print(f"thresher: {'stopped the' if was else 'no running'} Ray head from {args.dir}")
    else:
        env = local_cluster.client_env(args.dir)
        for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE",
                     "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED"):
            if name in env:
                print(f"export {name}={shlex.quote(env[name])}")
    return 0


def _status(args) -> int:
    from thresher.pipeline.engine.ledger import FINAL_STATES
    from thresher.pipeline.io.storage import state_folder

    out = state_folder(Store.at(args.output), args.state)
    if not (out / "ledger.sqlite").exists():
        raise InputError(f"{out} holds no ledger.sqlite: no run has written to "
                         f"{args.output} from here (give --state if it was elsewhere)")
    ledger = Ledger(out)
    shards = ledger.shards()
    by_state: dict[str, int] = {}
    for row in shards:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    print(f"{out}: {len(shards)} shards known: "
          + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())))
    # What the output holds now: each shard's latest finished counts. A shard redone
    # after it changed counts once, with its new content.
    now = [sum(row[k] or 0 for row in shards if row["state"] in FINAL_STATES)
           for k in ("rows_in", "curated", "rejected", "quarantined")]
    print(f"now in the output: {now[0]:,} rows in -> {now[1]:,} curated, {now[2]:,} rejected, "
          f"{now[3]:,} quarantined")
    print("history (what each run did, superseded shards included):")
    print(f"{'run':<24} {'state':<14} {'shards':>6} {'rows_in':>10} {'curated':>10} "
          f"{'rejected':>10} {'quarant.':>9}")
    for r in ledger.run_counts():
        print(f"{r['run_id']:<24} {r['state']:<14} {r['shards']:>6} {r['rows_in']:>10,} "
              f"{r['curated']:>10,} {r['rejected']:>10,} {r['quarantined']:>9,}")
    pending = [row["path"] for row in shards if row["state"] not in ("done", "quarantined")]
    if pending:
        print(f"{len(pending)} shard(s) not finished (resumed by the next run), e.g. {pending[0]}")
    print(_index_line(args.output))
    ledger.close()
    return 0


def _config(args) -> int:
    if args.recipe:
        from thresher.pipeline.recipes import recipe_text

        print(recipe_text(args.recipe), end="")
        return 0
    if args.check:
        config = load_config(args.check)
        for spec in config.stages:
            print(f"stage {spec.name}: {spec.params} {spec.resources}")
        for rule in config.filters:
            print(f"keep if {rule}   (else drop_reason {rule.reason})")
        return 0
    print(default_config_text(), end="")
    return 0


def _train_lm(args) -> int:
    from thresher.models.train_lm import train_lm

    for path in args.corpus:
        if not Path(path).is_file():
            raise InputError(f"corpus file {path} does not exist")
    try:
        card = train_lm(args.lang, args.corpus, args.out, order=args.order, vocab=args.vocab,
                        sentencepiece_model=not args.no_sp, raw=args.raw)
    except (FileNotFoundError, ValueError) as err:  # no KenLM tools, an empty corpus
        raise InputError(str(err)) from None
    print(json.dumps(card, indent=1))
    return 0


def _order(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        order = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"order must be a number or auto, not {value!r}") from None
    if not 1 <= order <= 9:
        raise argparse.ArgumentTypeError(f"order must be 1 to 9 (or auto), not {order}")
    return order


def _fit_tau(args) -> int:
    import math

    from thresher.models.harm_tau import best_rule, card_path, sweep_tau, valley_tau
    from thresher.models.kenlm_lm import WordLM

    def documents(path):
        if not Path(path).is_file():
            raise InputError(f"{path} does not exist")
        return [l for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]

    model = Path(args.model)
    try:
        harm = WordLM(model)
    except (FileNotFoundError, ValueError) as err:  # missing, or not a KenLM model
        raise InputError(str(err)) from None
    result: dict = {"model": str(model)}
    if args.unlabelled:
        result["ppl"] = {"tau": valley_tau(harm.perplexities(documents(args.unlabelled))),
                         "method": "valley of log-perplexity (unlabelled sample)"}
    elif args.positive and args.negative:
        pos, neg = documents(args.positive), documents(args.negative)
        pos_ppl, neg_ppl = harm.perplexities(pos), harm.perplexities(neg)
        result["ppl"] = sweep_tau(pos_ppl, neg_ppl)
        if args.reference:
            try:
                ref = WordLM(args.reference)
            except (FileNotFoundError, ValueError) as err:
                raise InputError(str(err)) from None
            xent = [[math.log(h) - math.log(r) for h, r in zip(hs, ref.perplexities(d))]
                    for hs, d in ((pos_ppl, pos), (neg_ppl, neg))]
            result["xent"] = sweep_tau(xent[0], xent[1], log=False)
            result["best"] = best_rule(result)
            print(f"thresher: macro-F1 on these examples: perplexity rule "
                  f"{result['ppl']['macro_f1']:.3f}, cross-entropy rule "
                  f"{result['xent']['macro_f1']:.3f}; the harm stage's rule: auto uses "
                  f"{result['best']}", file=sys.stderr)
    else:
        raise InputError("give --positive and --negative, or --unlabelled")
    card = card_path(model)
    card.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"thresher: wrote {card}", file=sys.stderr)
    return 0


def _train_student(args) -> int:
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from thresher.models.dataman import RATINGS, STATUS_OK
    from thresher.models.dataman_student import train_student

    path = Path(args.annotations)
    if not path.is_file():
        raise InputError(f"annotations {path} do not exist")
    try:
        table = pq.read_table(path) if path.suffix == ".parquet" else pj.read_json(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"cannot read annotations {path}: {err}") from None
    needed = ["text", "dataman_domain"] + [f"dataman_{r}" for r in RATINGS]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise InputError(f"annotations {path} lack columns {missing}")
    if "dataman_status" not in table.column_names:
        table = table.append_column("dataman_status", pa.array([STATUS_OK] * table.num_rows))
    try:
        card = train_student(table, Path(args.out), holdout=args.holdout)
    except ValueError as err:
        raise InputError(str(err)) from None
    print(json.dumps(card["agreement"], indent=1))
    print(f"thresher: DataMan student ({card['train_rows']} training rows, "
          f"{card['held_out_rows']} held out) in {args.out}", file=sys.stderr)
    return 0


def _serve_llm(args) -> int:
    from thresher.models.llm import load_engine
    from thresher.models.llm.serve import make_server
    from thresher.models.registry import ModelNotFound

    try:
        engine = load_engine({"engine": "transformers", "model": args.model,
                              "device": args.device})
    except (ModelNotFound, FileNotFoundError) as err:
        raise InputError(str(err)) from None
    server = make_server(engine, args.host, args.port)
    port = server.server_address[1]  # the one the system chose, for --port 0
    print(f"thresher: serving {engine.name} at http://{args.host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _build_defaults(args) -> int:
    from thresher.pipeline.tools.default_models import build_default_models

    summary = build_default_models(Path(args.crawl), Path(args.out))
    harm = summary["harm"]
    names = {"ppl": "perplexity", "xent": "cross-entropy"}
    print(f"thresher: default models in {args.out}: CCNet LMs for "
          f"{', '.join(sorted(summary['ccnet']))}; Spanish harmful LM (test macro-F1 "
          f"{harm[harm['best']]['test']['macro_f1']:.3f} with the {names[harm['best']]} "
          f"rule, the better on validation)")
    return 0


def _demo(args) -> int:
    from thresher.pipeline.io.demo_crawl import build_demo_crawl

    if args.format == "warc":
        return _demo_warc(args)
    warc_only = [flag for flag, value in (("--from", args.source), ("--copies", args.copies),
                                          ("--docs-per-shard", args.docs_per_shard))
                 if value is not None]
    if warc_only:
        raise InputError(f"{', '.join(warc_only)}: only for --format warc")
    paths = build_demo_crawl(Path(args.output), shards=args.shards, seed=args.seed)
    print(f"thresher: demo crawl: {len(paths)} shards in {args.output}")
    return 0


def _demo_warc(args) -> int:
    """The Parquet demo crawl (built first where missing) written out as WARC files."""
    from thresher.pipeline.io import demo_crawl

    copies = 1 if args.copies is None else args.copies
    for flag, value in (("--copies", copies), ("--docs-per-shard", args.docs_per_shard)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be 1 or more, not {value}")
    source = Path(args.source) if args.source else demo_crawl.REPO_CRAWL
    demo_crawl.ensure_demo_crawl(source, shards=args.shards, seed=args.seed)
    paths = demo_crawl.write_warc(source, Path(args.output), copies=copies,
                                  limit=args.docs_per_shard)
    built = json.loads((Path(args.output) / "_BUILD.json").read_text())
    folders = sorted({str(p.parent) for p in paths})
    print(f"thresher: demo crawl as WARC: {len(paths)} files, {built['records']:,} response "
          f"records ({copies} x {built['documents']:,} documents) in {', '.join(folders)}")
    return 0


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Ray's own console lines only at DEBUG (dag.quiet_ray does the rest when Ray starts).
    logging.getLogger("ray").setLevel(logging.DEBUG if level == "DEBUG" else logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
