"""The pipeline config: stages in order with their parameters and resources, and the
filter rules. YAML (or JSON, which YAML reads). Validated up front with messages that
name the file and the entry, so a bad config fails before Ray starts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources as package_files
from pathlib import Path

import yaml

from thresher.models.registry import ModelNotFound
from thresher.stages import Resources, Stage, stage_class
from thresher.pipeline.engine.rules import Rule


class ConfigError(ValueError):
    """The config cannot run; the message says where and why."""


@dataclass(frozen=True)
class RunOptions:
    read_batch_rows: int = 2048
    max_text_bytes: int = 5_000_000
    part_max_rows: int = 100_000
    part_max_bytes: int = 256 * 1024 * 1024  # in memory (Arrow), before compression


@dataclass(frozen=True)
class MixtureOptions:
    """The global mixing step after a run (pipeline/steps/mixture.py, DESIGN.md 4 `aioli`)."""

    group_by: str | None = None  # None: the first stage's `mixture_group` column
    max_groups: int = 8  # the largest groups; the rest are merged into `other`
    docs_per_group: int = 400  # sampled for the proxy: 80% train, 10% val, 10% test
    proxy: dict = field(default_factory=dict)  # ProxySettings
    aioli: dict = field(default_factory=dict)  # AioliSettings, less seed
    baselines: tuple = ("stratified",)  # and/or {fixed: {group: weight}}
    seed: int = 0
    training_tokens: int | None = None  # None: as many as curated holds
    shard_max_rows: int = 100_000
    # The training shards also as token ids: {tokenizer: NAME, format: megatron |
    # datatrove, eos: TOKEN (default: the tokenizer's)}; None: Parquet text only.
    tokenize: dict | None = None


@dataclass
class StageSpec:
    name: str
    params: dict
    resources: Resources
    cls: type[Stage]
    kept_only: bool | None = None  # None: the stage's own default
    # Known once the stage is built (at the config check): may it share a worker with
    # its neighbours, and how many bytes its models take in a worker.
    fusable: bool = True
    memory_estimate: int = 0
    _stage: Stage | None = field(default=None, init=False, repr=False, compare=False)

    def build(self) -> Stage:
        """The stage, built once per spec and process: the config check's instance (its
        models loaded by check()) is the one calibration and the manifest use. Values
        found before the stream make a new spec (with_params), hence a new stage."""
        if self._stage is None:
            stage = self.cls(resources=self.resources, **self.params)
            if self.kept_only is not None:
                stage.kept_only = self.kept_only
            self._stage = stage
        return self._stage

    def with_params(self, values: dict) -> "StageSpec":
        """This spec with more parameters (values a step found before the stream)."""
        return replace(self, params={**self.params, **values})

    def __getstate__(self) -> dict:
        # Sent to workers without the driver's instance: they build and load their own.
        return {**self.__dict__, "_stage": None}


@dataclass
class Config:
    stages: list[StageSpec]
    filters: list[Rule]
    run: RunOptions = field(default_factory=RunOptions)
    source: str = "default"
    raw: dict = field(default_factory=dict)
    mixture: MixtureOptions | None = None

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True)


def default_config_text() -> str:
    return package_files.files("thresher.pipeline.engine").joinpath("default.yaml").read_text()


def load_config(path: str | Path | None = None) -> Config:
    if path is None:
        return parse_config(yaml.safe_load(default_config_text()), "default config")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_config(raw, str(path))


def parse_config(raw: object, source: str) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with `stages` and `filters`")
    unknown = set(raw) - {"run", "stages", "filters", "mixture", "recipe"}  # recipe: its header
    if unknown:
        raise ConfigError(f"{source}: unknown top-level keys {sorted(unknown)}; "
                          "known: run, stages, filters, mixture")
    run = _run_options(raw.get("run") or {}, source)
    stages = [_stage_spec(entry, i, source) for i, entry in enumerate(raw.get("stages") or [])]
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: a stage is listed twice: {names}")
    _check_reads(stages, source)
    produced = {col for s in stages for col in s.cls.columns}
    filters = []
    for text in raw.get("filters") or []:
        try:
            rule = Rule.parse(text)
        except ValueError as err:
            raise ConfigError(f"{source}: {err}") from None
        if rule.column not in produced:
            raise ConfigError(f"{source}: filter {text!r} uses column {rule.column!r}, which no "
                              f"configured stage adds (they add: {', '.join(sorted(produced))})")
        filters.append(rule)
    mixture = _mixture(raw["mixture"], source, stages) if raw.get("mixture") else None
    config = Config(stages=stages, filters=filters, run=run, source=source, raw=raw,
                    mixture=mixture)
    from thresher.pipeline.steps import before_stream  # they import this module

    for step in before_stream():
        step.check(config)
    return config


def _mixture(values: object, source: str, stages: list[StageSpec]) -> MixtureOptions:
    from dataclasses import fields as dataclass_fields

    from thresher.models.aioli import AioliSettings
    from thresher.models.proxy_lm import ProxySettings

    where = f"{source}: mixture"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping")
    try:
        options = MixtureOptions(**{k: tuple(v) if k == "baselines" else v
                                    for k, v in values.items()})
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None
    for name, cls, given in (("proxy", ProxySettings, options.proxy),
                             ("aioli", AioliSettings, options.aioli)):
        known = {f.name for f in dataclass_fields(cls)} - {"seed"}
        if set(given) - known:
            raise ConfigError(f"{where}.{name}: unknown keys {sorted(set(given) - known)}; "
                              f"known: {', '.join(sorted(known))}")
    for entry in options.baselines:
        if entry != "stratified" and not (isinstance(entry, dict) and isinstance(
                entry.get("fixed"), dict)):
            raise ConfigError(f"{where}.baselines: {entry!r} is not `stratified` or "
                              "{fixed: {group: weight, ...}}")
    if options.max_groups < 1 or options.docs_per_group < 20:
        raise ConfigError(f"{where}: max_groups must be >= 1 and docs_per_group >= 20")
    if options.tokenize is not None:
        _check_tokenize(options.tokenize, f"{where}.tokenize")
    if options.proxy.get("tokenizer") is not None:
        _check_tokenizer(options.proxy["tokenizer"], f"{where}.proxy.tokenizer")
    if options.group_by is None:
        groups = [spec.cls.mixture_group for spec in stages if spec.cls.mixture_group]
        if not groups:
            raise ConfigError(f"{where}.group_by is missing, and no configured stage names a "
                              "column to group by: name one (a column of the input or of a "
                              "stage)")
        options = replace(options, group_by=groups[0])
    return options


def _check_tokenize(spec: object, where: str) -> None:
    from thresher.pipeline.io.tokenized import FORMATS

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping {{tokenizer: ..., format: ...}}")
    known = {"tokenizer", "format", "eos"}
    if set(spec) - known:
        raise ConfigError(f"{where}: unknown keys {sorted(set(spec) - known)}; "
                          f"known: {', '.join(sorted(known))}")
    if spec.get("format", "megatron") not in FORMATS:
        raise ConfigError(f"{where}.format: unknown format {spec['format']!r}; "
                          f"known: {', '.join(FORMATS)}")
    if not isinstance(spec.get("eos", ""), str):
        raise ConfigError(f"{where}.eos: expected a token's text, e.g. '<|endoftext|>'")
    if not spec.get("tokenizer"):
        raise ConfigError(f"{where}.tokenizer is missing: a Hugging Face tokenizer folder, "
                          "a .gguf file or a built-in LLM name (smollm2-135m-instruct)")
    _check_tokenizer(spec["tokenizer"], f"{where}.tokenizer")


def _check_tokenizer(name: object, where: str) -> None:
    """The tokenizer's files exist (loading it takes seconds: that waits for the run)."""
    from thresher.models.tokenizer import tokenizer_path

    if not isinstance(name, str):
        raise ConfigError(f"{where}: expected a tokenizer name or path, got {name!r}")
    try:
        tokenizer_path(name)
    except ModelNotFound as err:
        raise ConfigError(f"{where}: {err}") from None


def _run_options(values: dict, source: str) -> RunOptions:
    try:
        opts = RunOptions(**values)
    except TypeError as err:
        raise ConfigError(f"{source}: run: {err}") from None
    for key, value in vars(opts).items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: run.{key} must be a positive integer, got {value!r}")
    return opts


def _check_reads(stages: list[StageSpec], source: str) -> None:
    """A stage that reads a column a later stage makes would find it missing on every
    row (and quarantine them all): refuse the order, naming both stages. A column no
    stage makes must come with the input."""
    makers = {col: spec.name for spec in stages for col in spec.cls.columns}
    made: set[str] = set()
    for spec in stages:
        for col in spec.build().reads:
            if col in makers and col not in made:
                raise ConfigError(f"{source}: stage {spec.name} reads column {col!r}, which "
                                  f"stage {makers[col]} adds after it: put {makers[col]} "
                                  f"before {spec.name}")
        made |= set(spec.cls.columns)


def _stage_spec(entry: object, index: int, source: str) -> StageSpec:
    where = f"{source}: stages[{index}]"
    if not isinstance(entry, dict) or "stage" not in entry:
        raise ConfigError(f"{where}: expected a mapping with a `stage` key")
    params = dict(entry)
    name = params.pop("stage")
    kept_only = params.pop("kept_only", None)
    if kept_only not in (None, True, False):
        raise ConfigError(f"{where} ({name}): kept_only must be true or false, got {kept_only!r}")
    try:
        cls = stage_class(name)
        given = params.pop("resources", None) or {}
        if not isinstance(given, dict):
            raise ValueError(f"resources must be a mapping, got {given!r}")
        resources = Resources.from_dict({**vars(cls.default_resources), **given})
        spec = StageSpec(name=cls.name, params=params, resources=resources, cls=cls,
                         kept_only=kept_only)
        stage = spec.build()
        stage.check()  # parameters, model files exist and load
        spec.fusable, spec.memory_estimate = stage.fusable, stage.memory_estimate()
        spec.resources = stage.resources  # a stage may take what its model needs
    except ModelNotFound as err:
        raise ConfigError(f"{where} ({name}): {err}") from None
    except (TypeError, ValueError, OSError, RuntimeError) as err:
        raise ConfigError(f"{where} ({name}): {err}") from None
    return spec
