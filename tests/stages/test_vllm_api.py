"""The vLLM path against the pinned releases, on a machine without a GPU or vllm.

vLLM's API moves between releases (truncate_prompt_tokens left SamplingParams in
0.17). So the vLLM engine runs here against a stand-in `vllm` package whose
signatures and fields are read from the locked vLLM release's own source (fetched by
`make test`: deploy/lock_gpu.py --source): a keyword, attribute or module the
project uses that 0.33.0 lacks fails these tests. Ray's `ray.data.llm` is checked
in the installed Ray, which is the pinned one, and what it calls in vLLM is read
from its source and looked up in vLLM's.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from lock_gpu import read_lock  # noqa: E402

VERSION = read_lock()["vllm"]
SOURCE = ROOT / "tools" / "vllm-src" / f"vllm-{VERSION}"


@pytest.fixture(scope="module")
def src():
    if not (SOURCE / "vllm" / "__init__.py").is_file():
        pytest.fail(f"the vLLM {VERSION} source is not in {SOURCE}: `make test` fetches it "
                    "(python deploy/lock_gpu.py --source tools/vllm-src)")
    return PinnedSource(SOURCE)


class PinnedSource:
    """Names, signatures and fields of a package's source, read with ast (nothing of
    it is imported)."""

    def __init__(self, root: Path):
        self.root = root
        self._modules: dict[str, ast.Module] = {}

    def module(self, dotted: str) -> ast.Module | None:
        if dotted not in self._modules:
            base = self.root / dotted.replace(".", "/")
            path = base.with_suffix(".py") if base.with_suffix(".py").is_file() \
                else base / "__init__.py"
            self._modules[dotted] = ast.parse(path.read_text()) if path.is_file() else None
        return self._modules[dotted]

    def defines(self, dotted: str, name: str) -> bool:
        """The module defines or imports `name` at its top level (or lists it in a
        lazy-import table, as vllm/__init__.py does)."""
        tree = self.module(dotted)
        if tree is None:
            return False
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
                return True
            if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                    (a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return True
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.target.id == name:  # X: TypeAlias = ...
                return True
            if isinstance(node, ast.Constant) and node.value == name:
                return True  # MODULE_ATTRS = {"LLM": ".entrypoints.llm:LLM", ...}
        return False

    def cls(self, dotted: str, name: str) -> ast.ClassDef:
        [node] = [n for n in self.module(dotted).body if isinstance(n, ast.ClassDef)
                  and n.name == name]
        return node

    def signature(self, dotted: str, cls: str, method: str) -> inspect.Signature:
        [func] = [n for n in self.cls(dotted, cls).body
                  if isinstance(n, ast.FunctionDef) and n.name == method]
        a, params = func.args, []
        positional = a.posonlyargs + a.args
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        for i, (arg, default) in enumerate(zip(positional, defaults)):
            kind = (inspect.Parameter.POSITIONAL_ONLY if i < len(a.posonlyargs)
                    else inspect.Parameter.POSITIONAL_OR_KEYWORD)
            params.append(inspect.Parameter(arg.arg, kind, default=inspect.Parameter.empty
                                            if default is None else None))
        if a.vararg:
            params.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
        for arg, default in zip(a.kwonlyargs, a.kw_defaults):
            params.append(inspect.Parameter(arg.arg, inspect.Parameter.KEYWORD_ONLY,
                                            default=inspect.Parameter.empty
                                            if default is None else None))
        if a.kwarg:
            params.append(inspect.Parameter(a.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
        return inspect.Signature(params)

    def fields(self, dotted: str, name: str) -> set[str]:
        """A class's attributes: annotated fields (dataclass, msgspec Struct), what
        __init__ assigns to self, and its methods and properties, with its bases' in
        the same module."""
        node, out = self.cls(dotted, name), set()
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                out.add(item.target.id)
            elif isinstance(item, ast.FunctionDef):
                out.add(item.name)
                if item.name == "__init__":
                    out |= {t.attr for n in ast.walk(item) if isinstance(n, ast.Assign)
                            for t in n.targets if isinstance(t, ast.Attribute)
                            and isinstance(t.value, ast.Name) and t.value.id == "self"}
                    out |= {n.target.attr for n in ast.walk(item) if isinstance(n, ast.AnnAssign)
                            and isinstance(n.target, ast.Attribute)}
        for base in node.bases:
            if isinstance(base, ast.Name) and self.defines(dotted, base.id):
                try:
                    out |= self.fields(dotted, base.id)
                except ValueError:  # imported from elsewhere
                    pass
        return out


# --- a stand-in vllm package with the pinned release's shapes -------------------------

class Pinned:
    """An object that has exactly the pinned class's attributes: reading any other
    one fails, naming the release."""

    def __init__(self, kind: str, allowed: set[str], **values):
        unknown = set(values) - allowed
        assert not unknown, f"vLLM {VERSION}'s {kind} has no {sorted(unknown)}"
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name):
        if name in self._values:
            return self._values[name]
        if name in self._allowed:
            return None
        raise AttributeError(f"vLLM {VERSION}'s {self._kind} has no attribute {name!r}")


class WordTokenizer:
    """What fit_conversation uses of vLLM's TokenizerLike, on words."""

    all_special_tokens: list[str] = []

    def apply_chat_template(self, conversation, tokenize=False, add_generation_prompt=True):
        return "".join(f"<|{m['role']}|> {m['content']} " for m in conversation) + "<|assistant|>"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}

    def decode(self, ids):
        return " ".join(ids)

    def get_added_vocab(self):
        return {}


def install_fake_vllm(monkeypatch, src: PinnedSource, chat=None) -> dict:
    """Put a stand-in `vllm` in sys.modules; returns what the engine passed to it."""
    for dotted, name in [("vllm", "LLM"), ("vllm", "SamplingParams"),
                         ("vllm.exceptions", "VLLMError"),
                         ("vllm.v1.engine.exceptions", "EngineDeadError")]:
        assert src.defines(dotted, name), f"vLLM {VERSION} has no {dotted}.{name}"
    init = src.signature("vllm.entrypoints.llm", "LLM", "__init__")
    chat_signature = src.signature("vllm.entrypoints.llm", "LLM", "chat")
    engine_args = src.fields("vllm.engine.arg_utils", "EngineArgs")
    sampling_fields = src.fields("vllm.sampling_params", "SamplingParams")
    request_fields = src.fields("vllm.outputs", "RequestOutput")
    completion_fields = src.fields("vllm.outputs", "CompletionOutput")
    tokenizer_methods = src.fields("vllm.tokenizers.protocol", "TokenizerLike")
    assert {"apply_chat_template", "__call__", "decode", "all_special_tokens",
            "get_added_vocab"} <= tokenizer_methods
    seen: dict = {"chat": []}

    class VLLMError(Exception):
        pass

    class EngineDeadError(VLLMError):
        pass

    class LLM:
        def __init__(self, *args, **kwargs):
            bound = init.bind(self, *args, **kwargs)
            extra = bound.arguments.get("kwargs", {})
            unknown = set(extra) - engine_args
            assert not unknown, f"vLLM {VERSION}'s LLM/EngineArgs take no {sorted(unknown)}"
            seen["init"] = {**{k: v for k, v in bound.arguments.items()
                               if k not in ("self", "kwargs")}, **extra}

        def get_tokenizer(self):
            src.signature("vllm.entrypoints.llm", "LLM", "get_tokenizer").bind(self)
            return WordTokenizer()

        def chat(self, *args, **kwargs):
            bound = chat_signature.bind(self, *args, **kwargs)
            seen["chat"].append(bound.arguments)
            if chat is not None:
                return chat(bound.arguments, VLLMError, EngineDeadError)
            params = bound.arguments["sampling_params"]
            return [Pinned("RequestOutput", request_fields, prompt_token_ids=list(range(7)),
                           outputs=[Pinned("CompletionOutput", completion_fields,
                                           text=f"answer {i}", token_ids=[1] * (i + 1),
                                           finish_reason="length" if i + 1 >= params.max_tokens
                                           else "stop")])
                    for i, _ in enumerate(bound.arguments["messages"])]

    def sampling_params(**kwargs):
        return Pinned("SamplingParams", sampling_fields, **kwargs)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, sampling_params
    exceptions = types.ModuleType("vllm.exceptions")
    exceptions.VLLMError = VLLMError
    engine_exceptions = types.ModuleType("vllm.v1.engine.exceptions")
    engine_exceptions.EngineDeadError = EngineDeadError
    for name, module in [("vllm", vllm), ("vllm.exceptions", exceptions),
                         ("vllm.v1", types.ModuleType("vllm.v1")),
                         ("vllm.v1.engine", types.ModuleType("vllm.v1.engine")),
                         ("vllm.v1.engine.exceptions", engine_exceptions)]:
        monkeypatch.setitem(sys.modules, name, module)
    return seen


CONVERSATIONS = [[{"role": "system", "content": "Rate it."},
                  {"role": "user", "content": f"document {i} " + "word " * 40}] for i in range(3)]


def test_vllm_engine_makes_only_calls_the_pinned_vllm_has(monkeypatch, src, tmp_path):
    from thresher.models.llm import Sampling
    from thresher.models.llm.vllm_engine import VLLMEngine

    seen = install_fake_vllm(monkeypatch, src)
    engine = VLLMEngine(tmp_path, max_model_len=40, max_input_tokens=30, batch_size=2)
    out = engine.generate(CONVERSATIONS, Sampling(max_new_tokens=2))
    assert [g.text for g in out] == ["answer 0", "answer 1", "answer 0"]  # batches of 2, 1
    assert [g.truncated_output for g in out] == [False, True, False]
    assert [g.completion_tokens for g in out] == [1, 2, 1]
    assert all(g.prompt_tokens == 7 and g.truncated_prompt for g in out)
    assert len(seen["chat"]) == 2 and seen["init"]["max_model_len"] == 40
    # the document was cut, the template kept: the last turn still opens the answer
    sent = seen["chat"][0]["messages"][0]
    assert sent[0]["content"] == "Rate it." and " ... " in sent[1]["content"]
    assert len(WordTokenizer().apply_chat_template(sent).split()) <= 30


def test_vllm_engine_shares_gpu_memory_by_its_num_gpus(monkeypatch, src, tmp_path):
    from thresher.models.llm import vllm_engine

    seen = install_fake_vllm(monkeypatch, src)
    monkeypatch.setattr(vllm_engine, "gpu_share", lambda: 0.5)
    vllm_engine.VLLMEngine(tmp_path)
    assert seen["init"]["gpu_memory_utilization"] == pytest.approx(0.45)
    vllm_engine.VLLMEngine(tmp_path, gpu_memory_utilization=0.3)  # a config's own wins
    assert seen["init"]["gpu_memory_utilization"] == 0.3


def test_a_vllm_error_fails_the_batch_and_a_dead_engine_ends_the_worker(monkeypatch, src,
                                                                      tmp_path):
    from thresher.models.llm import EngineError, Sampling
    from thresher.models.llm import vllm_engine

    def refuse(arguments, VLLMError, EngineDeadError):
        raise VLLMError("prompt too long")

    install_fake_vllm(monkeypatch, src, chat=refuse)
    with pytest.raises(EngineError, match="VLLMError: prompt too long"):
        vllm_engine.VLLMEngine(tmp_path).generate(CONVERSATIONS[:1], Sampling())

    def die(arguments, VLLMError, EngineDeadError):
        raise EngineDeadError("core gone")

    class Ended(BaseException):
        pass

    def end_worker(why):
        raise Ended(why)

    install_fake_vllm(monkeypatch, src, chat=die)
    monkeypatch.setattr(vllm_engine, "end_worker", end_worker)
    with pytest.raises(Ended, match="engine died"):
        vllm_engine.VLLMEngine(tmp_path).generate(CONVERSATIONS[:1], Sampling())


def test_end_worker_takes_the_child_processes_with_it(tmp_path):
    """vLLM's engine core is a child process holding the GPU: it must not outlive the
    worker, or the restarted one finds the GPU memory taken."""
    script = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(tmp_path / 'pid')!r}, "w").write(str(child.pid))
        from thresher.models.llm.watchdog import end_worker
        end_worker("a test")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 75, done.stderr
    import psutil

    pid = int((tmp_path / "pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# --- ray.data.llm (the pinned Ray is the installed one) and what it calls in vLLM ----

def test_ray_data_llm_calls_into_vllm_exist_in_the_pinned_vllm(src):
    """Ray 2.60's vLLM stage imports and calls these; each must exist in vLLM 0.33.0."""
    import ray.llm._internal.batch.stages.vllm_engine_stage as stage

    text = Path(stage.__file__).read_text()
    names = set(re.findall(r"from (vllm(?:\.\w+)*) import \(?\s*([\w, \n]+?)\)?\s*(?:#|\n)",
                           text))
    wanted = {(module, name.strip()) for module, group in names
              for name in group.replace("\n", " ").split(",") if name.strip()}
    for chain in set(re.findall(r"\bvllm((?:\.\w+)+)", text)):
        parts = chain.strip(".").split(".")
        if parts[-1] in ("ai", "com") or "docs" in parts:  # URLs in docstrings
            continue
        if src.module(".".join(["vllm", *parts])) is not None:
            continue  # a module, named in a comment or an import
        for cut in range(len(parts), 0, -1):  # the longest prefix that is a module
            module = ".".join(["vllm", *parts[:cut - 1]])
            if src.module(module) is not None:
                wanted.add((module, parts[cut - 1]))
                break
    # Ray falls back from the newer location to the older one for these two
    optional = {("vllm.inputs", "TextPrompt"), ("vllm.inputs", "TokensPrompt"),
                ("vllm.inputs", "MultiModalDataDict")}
    missing = sorted(f"{m}.{n}" for m, n in wanted - optional if not src.defines(m, n))
    assert len(wanted) >= 8, wanted
    assert not missing, f"Ray 2.60's vLLM stage uses what vLLM {VERSION} lacks: {missing}"


def test_processor_configs_are_valid_for_the_pinned_ray(src, monkeypatch):
    from thresher.pipeline.engine import ray_llm as processor

    monkeypatch.setattr("thresher.models.registry.resolve_model", lambda name: Path("/m"))
    config = processor.vllm_config({"engine": "vllm", "model": "x", "max_model_len": 2048,
                                    "tensor_parallel_size": 2, "batch_size": 32}, gpus=8)
    assert config.concurrency == 4 and config.batch_size == 32  # 8 GPUs / TP 2
    assert config.should_continue_on_error and config.model_source == "/m"
    engine_args = src.fields("vllm.engine.arg_utils", "EngineArgs")
    unknown = set(config.engine_kwargs) - engine_args - {"task_type"}  # Ray's own
    assert not unknown, f"vLLM {VERSION}'s EngineArgs take no {sorted(unknown)}"
    http = processor.http_config({"engine": "openai", "url": "http://h:1", "retries": 2})
    assert http.url == "http://h:1/v1/chat/completions" and http.max_retries == 2


def test_http_requests_use_fields_vllms_server_accepts(src, monkeypatch):
    """Every field the HTTP engine and the processor's HTTP variant send is a field of
    vLLM 0.33's ChatCompletionRequest (its server rejects or ignores others)."""
    from thresher.models.llm import Sampling
    from thresher.pipeline.engine import ray_llm as processor
    from thresher.models.llm.openai_engine import OpenAIEngine

    fields = src.fields("vllm.entrypoints.openai.chat_completion.protocol",
                        "ChatCompletionRequest")
    engine = OpenAIEngine("http://127.0.0.1:9", model="m", max_input_tokens=100)
    sent = []
    monkeypatch.setattr(engine, "_request", lambda method, path, body: sent.append(body) or {
        "choices": [{"message": {"content": "ok"}, "finish_reason": "length"}], "usage": {}})
    [made] = engine.generate([[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=3))
    assert made.truncated_output  # finish_reason "length"
    rows = []  # what the processor's preprocess makes of a row
    import ray.data.llm

    monkeypatch.setattr(ray.data.llm, "build_processor", lambda config, preprocess, postprocess:
                        rows.append(preprocess({processor.ROW: 0, "conversation": []})))
    processor.build({"engine": "openai", "url": "http://h:1", "max_input_tokens": 100},
                    Sampling(), model_name="m")
    for body in (sent[0], rows[0]["payload"]):
        assert body["truncate_prompt_tokens"] == 100 and body["top_k"] == 0
        unknown = set(body) - fields
        assert not unknown, f"vLLM {VERSION}'s chat request has no {sorted(unknown)}"


def refuse_system(self, conversation, tokenize=False, add_generation_prompt=True):
    """A chat template that refuses a system turn, as Mistral's v0.1 raises on one."""
    if any(m["role"] == "system" for m in conversation):
        raise ValueError("Conversation roles must alternate user/assistant/user/...")
    return WordTokenizer.render(self, conversation)


WordTokenizer.render = WordTokenizer.apply_chat_template


class NoSystemTokenizer(WordTokenizer):
    apply_chat_template = refuse_system


def test_vllm_sampling_has_no_per_request_seed_and_stops_at_the_end_of_turn(
        monkeypatch, src, tmp_path):
    """Every request seeded 0 made vLLM sample them one by one with the same noise
    (vllm/v1/sample/ops/topk_topp_sampler.py, random_sample); a complete answer must
    end on an end-of-turn id, not at the token limit."""
    from thresher.models.llm import Sampling
    from thresher.models.llm.vllm_engine import VLLMEngine

    seen = install_fake_vllm(monkeypatch, src)
    engine = VLLMEngine(tmp_path, seed=3)
    engine.generate(CONVERSATIONS[:1], Sampling(temperature=0.8, seed=0, stop_token_ids=(2, 7)))
    params = seen["chat"][0]["sampling_params"]
    assert params.seed is None and params.stop_token_ids == [2, 7]
    assert seen["init"]["seed"] == 3  # the engine is seeded once


def test_a_template_that_refuses_a_system_turn_gets_it_folded_and_errors_fail_the_batch(
        monkeypatch, src, tmp_path):
    from thresher.models.llm import EngineError, Sampling, fit_conversation
    from thresher.models.llm import vllm_engine

    conversation = [{"role": "system", "content": "Rephrase it."},
                    {"role": "user", "content": "the text " * 30}]
    folded, prompt, _, _ = fit_conversation(conversation, NoSystemTokenizer(), 1000)
    assert [m["role"] for m in folded] == ["user"]
    assert folded[0]["content"].startswith("Rephrase it.\n\nthe text")
    seen = install_fake_vllm(monkeypatch, src)
    monkeypatch.setattr(WordTokenizer, "apply_chat_template", refuse_system)
    engine = vllm_engine.VLLMEngine(tmp_path)
    [made] = engine.generate([conversation], Sampling(max_new_tokens=5))
    assert made.text == "answer 0"
    assert [m["role"] for m in seen["chat"][0]["messages"][0]] == ["user"]

    def broken(self, conversation, tokenize=False, add_generation_prompt=True):
        raise KeyError("a template bug")

    monkeypatch.setattr(WordTokenizer, "apply_chat_template", broken)
    with pytest.raises(EngineError, match="could not render a batch of 1"):
        engine.generate([CONVERSATIONS[0][1:]], Sampling())


def test_a_load_that_keeps_failing_stops_after_a_bounded_number_of_tries(monkeypatch, src,
                                                                         tmp_path):
    import os

    from thresher.models.llm import EngineError
    from thresher.models.llm import vllm_engine

    monkeypatch.setattr(vllm_engine.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    monkeypatch.delenv("VLLM_ENGINE_READY_TIMEOUT_S", raising=False)
    install_fake_vllm(monkeypatch, src)
    model = tmp_path / "model"
    for _ in range(vllm_engine.LOAD_TRIES):  # loads ended by the watchdog count too
        vllm_engine._count_load(str(model))
    with pytest.raises(EngineError, match=f"failed {vllm_engine.LOAD_TRIES} times on this node"):
        vllm_engine.VLLMEngine(model, timeout_s=900)
    # vLLM's own ready wait is above thresher's deadline, set before vllm is imported
    assert int(os.environ["VLLM_ENGINE_READY_TIMEOUT_S"]) > 900
    vllm_engine._count_load(str(model), reset=True)
    vllm_engine.VLLMEngine(model, timeout_s=900)  # a load that finishes resets the count
    assert vllm_engine._count_load(str(model)) == 1


def test_the_processor_sends_token_ids_with_rays_tokenizer_stages_off(src, monkeypatch):
    """Ray's chat-template, tokenize and detokenize stages are CPU actors that load the
    tokenizer on any node: on KubeRay the CPU workers have no models volume."""
    import ray.data.llm
    from ray.data.llm import vLLMEngineProcessorConfig

    from thresher.models.llm import Sampling
    from thresher.pipeline.engine import ray_llm as processor

    monkeypatch.setattr("thresher.models.registry.resolve_model", lambda name: Path("/m"))
    config = processor.vllm_config({"engine": "vllm", "model": "x"}, gpus=1)
    assert isinstance(config, vLLMEngineProcessorConfig)
    for stage in ("chat_template_stage", "tokenize_stage", "detokenize_stage"):
        assert getattr(config, stage) is False
    built = {}

    def build_processor(config, preprocess, postprocess):
        built.update(request=preprocess({processor.ROW: 0, "conversation": [],
                                         "tokens": [5, 6, 7]}), postprocess=postprocess)

    monkeypatch.setattr(ray.data.llm, "build_processor", build_processor)
    sampling = Sampling(max_new_tokens=30, stop_token_ids=(2,))
    processor.build({"engine": "vllm", "model": "x"}, sampling)
    request = built["request"]
    assert request["tokenized_prompt"] == [5, 6, 7] and "messages" not in request
    assert request["sampling_params"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 30,
                                          "stop_token_ids": [2]}
    assert set(request["sampling_params"]) <= src.fields("vllm.sampling_params",
                                                         "SamplingParams")
    done = built["postprocess"]({processor.ROW: 0, "generated_text": "A\n1",
                                 "num_generated_tokens": 30, "num_input_tokens": 3,
                                 "generated_tokens": [9] * 29 + [2]})
    assert done["truncated_output"] is False  # a complete answer ending on its stop id
    cut = built["postprocess"]({processor.ROW: 0, "generated_text": "A\n1",
                                "num_generated_tokens": 30, "generated_tokens": [9] * 30})
    assert cut["truncated_output"] is True
    with pytest.raises(ValueError, match="must be a model folder on this machine"):
        processor.generate_rows({"engine": "vllm", "model": "x"}, [[]], sampling)
