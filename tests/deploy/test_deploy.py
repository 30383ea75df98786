"""deploy/: the manifests validate against KubeRay's CRD schemas (1.6.2 and 1.7.0) and
Kubernetes' own (1.33, strict: an unknown field fails, as `kubectl apply` refuses it),
their cross-references hold (Secret keys, volumes and mounts, the ConfigMap's pipeline
under thresher's own config check, image names against the Makefile), the CronJob's
submission script is idempotent on a real Ray cluster, and the Dockerfiles keep what
the tested environment has. The images are built where docker exists."""

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

from thresher.pipeline.tools.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = ROOT / "tests" / "schemas"
KUBERAY = ("v1.6.2", "v1.7.0")
THRESHER = str(Path(sys.executable).with_name("thresher"))


def make_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"Makefile defines no {name}"
    return match.group(1)


def documents() -> list[dict]:
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
                found.append({**doc, "_file": path.name})
    return found


def one(kind: str) -> dict:
    [doc] = [d for d in documents() if d["kind"] == kind]
    return doc


def named(kind: str, name: str) -> dict:
    [doc] = [d for d in documents() if d["kind"] == kind and d["metadata"].get("name") == name]
    return doc


def pod_templates() -> list[tuple[str, dict]]:
    """(where, pod template) of every pod the manifests make."""
    cluster = one("RayCluster")["spec"]
    pods = [("head", cluster["headGroupSpec"]["template"])]
    pods += [(g["groupName"], g["template"]) for g in cluster["workerGroupSpecs"]]
    pods.append(("cronjob", one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]))
    return pods


def thresher_args(command: str) -> list:
    """Each `thresher ...` command in a shell line, parsed by thresher's CLI parser."""
    parsed = []
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        if words and words[0] == "thresher":
            parsed.append(_parser().parse_args(words[1:]))
    return parsed


def cron_script() -> str:
    return one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "args"][0]


def cron_job_command() -> str:
    """The command the CronJob's script submits (its `job="..."`), on one line."""
    found = re.search(r'^job="(.*?)"$', cron_script(), re.M | re.S)
    return found.group(1).replace("\\\n", " ")


# --- schemas ---------------------------------------------------------------------

def load_schema(*parts: str) -> dict:
    with gzip.open(SCHEMAS.joinpath(*parts), "rt", encoding="utf-8") as f:
        return json.load(f)


def strict(schema):
    """A CRD's structural schema as `kubectl apply` (field validation Strict) applies it:
    an object with declared properties takes no other field, unless the schema keeps
    unknown fields; `nullable` allows null."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def errors(schema: dict, doc: dict, cls=jsonschema.Draft7Validator) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in cls(schema).iter_errors(doc))


def k8s_errors(kind: str, doc: dict) -> list[str]:
    return errors(load_schema("kubernetes-v1.33.0", f"{kind}.json.gz"), doc,
                  jsonschema.Draft202012Validator)


def plain(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_file"}


@pytest.mark.parametrize("version", KUBERAY)
@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_kuberay_resources_validate_against_the_crds(kind, version):
    schema = strict(load_schema(f"kuberay-{version}", f"{kind.lower()}.json.gz"))
    assert errors(schema, plain(one(kind))) == []
    # a misspelt field is caught, as kubectl would refuse it
    broken = json.loads(json.dumps(plain(one(kind))))
    broken["spec"]["entrypointt" if kind == "RayJob" else "enableInTreeAutoscalingg"] = True
    assert errors(schema, broken)


def test_pod_templates_validate_against_kubernetes():
    for where, template in pod_templates():
        assert k8s_errors("podtemplatespec", template) == [], where
    broken = json.loads(json.dumps(pod_templates()[0][1]))
    broken["spec"]["containers"][0]["volumeMount"] = []
    assert k8s_errors("podtemplatespec", broken)


def test_kubernetes_resources_validate_against_kubernetes():
    kinds = {"CronJob": "cronjob", "PersistentVolumeClaim": "persistentvolumeclaim",
             "ConfigMap": "configmap"}
    seen = set()
    for doc in documents():
        if doc["kind"] in kinds:
            assert k8s_errors(kinds[doc["kind"]], plain(doc)) == [], doc["_file"]
            seen.add(doc["kind"])
    assert seen == set(kinds)


# --- cross-references ------------------------------------------------------------

def test_token_auth_is_kuberays_and_clients_read_its_secret():
    cluster = one("RayCluster")
    assert cluster["spec"]["authOptions"] == {"mode": "token"}  # the operator makes the Secret
    for where, template in pod_templates()[:-1]:  # no hand-set auth in Ray's own pods
        for container in template["spec"]["containers"]:
            assert not {e["name"] for e in container.get("env", [])} & {
                "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, where
    client = one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in client["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    # KubeRay names the Secret after the cluster, with the token under auth_token
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": cluster["metadata"]["name"], "key": "auth_token"}
    assert env["RAY_API_SERVER_ADDRESS"]["value"] == (
        f"http://{cluster['metadata']['name']}-head-svc:8265")


def test_every_mount_has_its_volume_and_every_claim_and_configmap_exists():
    claims = {d["metadata"]["name"] for d in documents() if d["kind"] == "PersistentVolumeClaim"}
    configmaps = {d["metadata"]["name"] for d in documents() if d["kind"] == "ConfigMap"}
    assert one("RayCluster")["_file"] != named("PersistentVolumeClaim", "thresher-state")["_file"]
    for where, template in pod_templates():
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        mounted = {m["name"] for c in template["spec"]["containers"]
                   for m in c.get("volumeMounts", [])}
        assert mounted == set(volumes), where  # none missing, none unused
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, where


def test_ray_pods_have_shared_memory_resources_and_a_head_without_tasks():
    cluster = one("RayCluster")["spec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] and cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for where, template in pod_templates():
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            assert resources["requests"] and resources["limits"], where
        if where != "cronjob":
            shm = [m for c in template["spec"]["containers"] for m in c["volumeMounts"]
                   if m["mountPath"] == "/dev/shm"]
            [volume] = [v for v in template["spec"]["volumes"] if v["name"] == shm[0]["name"]]
            assert volume["emptyDir"]["medium"] == "Memory", where
    assert cluster["rayVersion"] == metadata.version("ray")


def test_the_gpu_group_serves_the_shipped_pipelines_gpu_stages(tmp_path):
    cluster = one("RayCluster")["spec"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu-workers"]
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"]
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pipeline = yaml.safe_load(named("ConfigMap", "thresher-gpu-pipeline")["data"]["pipeline.yaml"])
    engines = {s["stage"]: s.get("teacher", s.get("engine")) for s in pipeline["stages"]
               if s["stage"] in ("dataman", "wrap")}
    assert {e["engine"] for e in engines.values()} == {"vllm"}
    models = {e["model"] for e in engines.values()}
    # the model folders are on the models volume, mounted where the config says, on the
    # GPU workers (which load them) and the head (whose config check resolves them)
    for template in (gpu["template"], cluster["headGroupSpec"]["template"]):
        mounts = {m["mountPath"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert all(any(m.startswith(p + "/") for p in mounts) for m in models)
        assert mounts["/models"]["readOnly"]
    # the jobs run this pipeline: the head mounts the ConfigMap where --config points
    head = cluster["headGroupSpec"]["template"]["spec"]
    [mount] = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == "pipeline"]
    [job] = thresher_args(one("RayJob")["spec"]["entrypoint"])
    assert job.config == f"{mount['mountPath']}/pipeline.yaml"
    assert thresher_args(cron_job_command())[1].config == job.config
    # and thresher's own config check passes it (model folders stood in for /models)
    text = named("ConfigMap", "thresher-gpu-pipeline")["data"]["pipeline.yaml"]
    for model in models:
        folder = tmp_path / model.lstrip("/")
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    config = tmp_path / "pipeline.yaml"
    config.write_text(text.replace("/models/", f"{tmp_path}/models/"))
    check = subprocess.run([THRESHER, "config", "--check", str(config)], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "wrap" in check.stdout and "dataman" in check.stdout


def test_rayjob_can_be_rerun_and_runs_a_valid_curate_against_remote_storage():
    job = one("RayJob")
    assert "name" not in job["metadata"] and job["metadata"]["generateName"]  # kubectl create
    assert job["spec"]["activeDeadlineSeconds"] > 0
    cluster = one("RayCluster")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    [args] = thresher_args(job["spec"]["entrypoint"])
    assert args.command == "curate"
    assert all(i.startswith("s3://") for i in args.input) and args.output.startswith("s3://")
    assert args.state.startswith("/state/")  # on the head's persistent volume
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "/state" in [m["mountPath"] for m in head["volumeMounts"]]
    waits = {e["name"]: e.get("value") for e in head["env"]}
    assert int(waits["THRESHER_WAIT_FOR_RESOURCES"]) > 0  # both worker groups idle at 0


def test_cronjob_imports_then_curates_what_the_rayjob_curates():
    cron = one("CronJob")
    assert len(cron["spec"]["schedule"].split()) == 5
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == make_variable("IMAGE_CPU")
    commands = thresher_args(cron_job_command())
    assert [c.command for c in commands] == ["import", "curate"]
    imported, curated = commands
    [job] = thresher_args(one("RayJob")["spec"]["entrypoint"])
    assert (curated.input, curated.output, curated.state) == (job.input, job.output, job.state)
    # what the import writes is what the curation's glob picks up
    pattern = re.compile(curated.input[0].replace("*", "[^/]*").replace(".parquet", r"\.parquet"))
    assert pattern.fullmatch(imported.output + "/x.parquet")
    assert "--no-wait" in cron_script() and '--submission-id "$id"' in cron_script()


def test_cronjob_script_submits_once_per_day_on_a_real_cluster(tmp_path, lang_only_config):
    """The CronJob's own script, run twice against a private Ray head with a job server
    and token auth (paths swapped for local ones): the first run submits the day's job
    without waiting for it, the second finds it and submits nothing. The job itself
    imports a WARC file and curates it."""
    from test_importers import write_warc
    from thresher.pipeline.tools.local_cluster import client_env

    warcs = tmp_path / "raw" / "c1" / "warc"
    write_warc(warcs / "a.warc.gz", {f"http://example.com/{i}": "<html><body><p>" +
                                     "A long paragraph about rivers and cities. " * 12 +
                                     "</p></body></html>" for i in range(3)})
    local = {"s3://my-crawls/raw/*/warc/*.warc.gz": f"{tmp_path}/raw/*/warc/*.warc.gz",
             "s3://my-crawls/crawls/imported/shards": f"{tmp_path}/crawls/imported/shards",
             "s3://my-crawls/crawls/*/shards/*.parquet": f"{tmp_path}/crawls/*/shards/*.parquet",
             "s3://my-curated/web": f"{tmp_path}/curated", "/state/": f"{tmp_path}/state/",
             "/etc/thresher/pipeline.yaml": str(lang_only_config)}
    script = cron_script()
    for remote, path in local.items():
        script = script.replace(remote, path)
    cluster = tmp_path / "cluster"
    # thresher and ray on PATH, as in the image: the head's jobs inherit it
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    up = subprocess.run([THRESHER, "cluster", "up", "--dir", str(cluster), "--port", "0",
                         "--dashboard-port", "0", "--num-cpus", "2"],
                        capture_output=True, text=True, timeout=180,
                        env={**os.environ, "PATH": path})
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        env = {**client_env(cluster), "PATH": path}
        first = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                               timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "submitted successfully" in first.stdout + first.stderr
        again = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0 and "was submitted already" in again.stdout, again.stderr
        job_id = re.search(r"(thresher-incremental-\d{8})", again.stdout).group(1)
        ray = str(Path(sys.executable).with_name("ray"))
        logs = subprocess.run([ray, "job", "logs", "--follow", job_id], env=env,
                              capture_output=True, text=True, timeout=400)
        status = subprocess.run([ray, "job", "status", job_id], env=env, capture_output=True,
                                text=True, timeout=60)
        assert f"Job '{job_id}' succeeded" in status.stdout, logs.stdout[-3000:]
        assert "3 rows in" in logs.stdout
    finally:
        subprocess.run([THRESHER, "cluster", "down", "--dir", str(cluster)],
                       capture_output=True, text=True, timeout=120)


# --- images ------------------------------------------------------------------------

def test_manifest_images_are_the_makefiles_and_render_with_a_registry(tmp_path):
    images = {c["image"] for _, t in pod_templates() for c in t["spec"]["containers"]}
    assert images == {make_variable("IMAGE_CPU"), make_variable("IMAGE_GPU")}
    done = subprocess.run([sys.executable, str(DEPLOY / "render.py"), "--registry",
                           "registry.example.com/team/", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = {c["image"] for path in tmp_path.glob("*.yaml")
                for doc in yaml.safe_load_all(path.read_text()) if doc
                for c in _containers(doc)}
    assert rendered == {f"registry.example.com/team/{i}" for i in images}
    makefile = (ROOT / "Makefile").read_text()
    assert "docker push $(IMAGE_REGISTRY)/$$image" in makefile


def _containers(doc: dict):
    if doc["kind"] == "RayCluster":
        yield from doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
        for group in doc["spec"]["workerGroupSpecs"]:
            yield from group["template"]["spec"]["containers"]
    elif doc["kind"] == "CronJob":
        yield from doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]


def test_cpu_dockerfile_keeps_docs_cpu_torch_a_user_and_the_source_last():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "make setup" in text  # the same install steps as `make curate` / `make test`
    assert "path-exclude" in text and "/usr/share/doc" in text  # docs kept in the slim base
    assert "download.pytorch.org/whl/cpu" in text and "torch.version.cuda" in text
    assert re.search(r"^USER thresher$", text, re.M)
    lines = text.splitlines()
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY") and line.endswith(". .")]
    assert len(copies) == 1  # the whole source once, after every dependency layer
    assert copies[0] > max(i for i, line in enumerate(lines) if "pip install" in line)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "out", ".git"} <= set(ignored)  # never the host's build into an image


def test_gpu_dockerfile_is_on_a_cuda_base_with_the_locked_resolution():
    text = (DEPLOY / "Dockerfile.gpu").read_text()
    cuda = re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime", text)
    lock = (ROOT / "constraints-gpu.txt").read_text()
    runtime = re.search(r"^nvidia-cuda-runtime==(\d+)\.(\d+)", lock, re.M)
    assert cuda and runtime and cuda.groups() == runtime.groups()  # the wheels' CUDA
    assert "-c constraints-gpu.txt -e '.[gpu]'" in text and re.search(r"^USER thresher$", text, re.M)
    assert "--build-arg BASE=$(IMAGE_CPU)" in (ROOT / "Makefile").read_text()


def _docker_engine() -> bool:
    """A docker client that reaches an engine (a client alone cannot build)."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine here: images not built")
def test_images_build():
    done = subprocess.run(["make", "-C", str(ROOT), "images"], capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_gpu_nodes_have_the_driver_the_image_needs_and_keep_vllms_kernel_cache():
    cluster = one("RayCluster")["spec"]
    gpu = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}["gpu-workers"]["template"]
    affinity = gpu["spec"]["affinity"]["nodeAffinity"]
    [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    [rule] = term["matchExpressions"]
    # the label NVIDIA's GPU feature discovery sets; the image's CUDA 13 needs driver 580+
    assert rule["key"] == "nvidia.com/cuda.driver-version.major" and rule["operator"] == "Gt"
    assert int(rule["values"][0]) + 1 == 580
    assert "driver for CUDA 13 (580 or later)" in (DEPLOY / "Dockerfile.gpu").read_text()
    container = gpu["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert env["VLLM_CACHE_ROOT"] in mounts and not mounts[env["VLLM_CACHE_ROOT"]].get("readOnly")


def test_datamans_prompt_is_cut_once_within_the_shipped_max_model_len():
    """The paper's 1,894-token cut plus DataMan's prompt must fit the engine's input
    limit (max_model_len - 64), or every long document is cut again in its middle."""
    from transformers import AutoTokenizer

    from thresher.models.dataman import MAX_TOKENS, requests_for, sampling_for
    from thresher.models.llm import end_of_turn_ids
    from thresher.models.registry import resolve_model

    pipeline = yaml.safe_load(named("ConfigMap", "thresher-gpu-pipeline")["data"]["pipeline.yaml"])
    [teacher] = [s["teacher"] for s in pipeline["stages"] if s["stage"] == "dataman"]
    gguf = resolve_model("smollm2-135m-instruct")  # a tokenizer of a similar size
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                              local_files_only=True)
    [conversation] = requests_for(["word " * 5000], tokenizer, "dataman", MAX_TOKENS)
    prompt = tokenizer.apply_chat_template(conversation, tokenize=False,
                                           add_generation_prompt=True)
    tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert tokens > MAX_TOKENS + 100  # the cut document and the prompt around it
    assert tokens <= teacher["max_model_len"] - 64
    answer = sampling_for("dataman", None, end_of_turn_ids(tokenizer)).max_new_tokens
    assert tokens + answer <= teacher["max_model_len"]
