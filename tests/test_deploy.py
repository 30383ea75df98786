"""deploy/: the images and manifests parse, carry the fields KubeRay and Kubernetes
require, and agree with the Makefile, pyproject.toml and thresher's own CLI."""

import re
import shlex
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from thresher.pipeline.tools.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def make_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"Makefile defines no {name}"
    return match.group(1)


def manifests() -> dict[str, dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
            assert doc["metadata"].get("name"), path
            found[doc["kind"]] = doc
    return found


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def thresher_args(command: str) -> list:
    """Each `thresher ...` command in a shell line, parsed by thresher's CLI parser."""
    parsed = []
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        if words and words[0] == "thresher":
            parsed.append(_parser().parse_args(words[1:]))
    return parsed


def test_every_manifest_parses_with_the_kinds_a_deployment_needs():
    assert {"RayCluster", "RayJob", "CronJob", "PersistentVolumeClaim"} <= manifests().keys()


def test_raycluster_has_cpu_and_gpu_workers_on_the_makefile_images():
    cluster = manifests()["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == metadata.version("ray")
    head = containers(cluster["spec"]["headGroupSpec"]["template"])[0]
    assert head["image"] == make_variable("IMAGE_CPU")
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    cpu, gpu = containers(groups["cpu-workers"]["template"])[0], containers(groups["gpu-workers"]["template"])[0]
    assert cpu["image"] == make_variable("IMAGE_CPU") and gpu["image"] == make_variable("IMAGE_GPU")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert groups["gpu-workers"]["rayStartParams"]["num-gpus"] == "1"
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in (head, cpu, gpu):  # token auth on every node
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"]
    claims = [v["persistentVolumeClaim"]["claimName"]
              for v in cluster["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [manifests()["PersistentVolumeClaim"]["metadata"]["name"]]


def test_rayjob_runs_a_valid_curate_on_the_cluster_against_remote_storage():
    job = manifests()["RayJob"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == manifests()["RayCluster"]["metadata"]["name"]
    [args] = thresher_args(job["spec"]["entrypoint"])
    assert args.command == "curate"
    assert all(i.startswith("s3://") for i in args.input) and args.output.startswith("s3://")
    assert args.state.startswith("/state/")  # on the head's persistent volume
    head = containers(manifests()["RayCluster"]["spec"]["headGroupSpec"]["template"])[0]
    assert "/state" in [m["mountPath"] for m in head["volumeMounts"]]


def test_cronjob_submits_import_then_curate_one_at_a_time():
    cron = manifests()["CronJob"]
    assert len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # one writer per ledger
    container = containers(cron["spec"]["jobTemplate"]["spec"]["template"])[0]
    assert container["image"] == make_variable("IMAGE_CPU")
    assert container["command"][:3] == ["ray", "job", "submit"]
    commands = thresher_args(container["args"][-1])
    assert [c.command for c in commands] == ["import", "curate"]
    imported, curated = commands
    job = thresher_args(manifests()["RayJob"]["spec"]["entrypoint"])[0]
    assert (curated.input, curated.output, curated.state) == (job.input, job.output, job.state)
    # what the import writes is what the curation's glob picks up
    pattern = re.compile(curated.input[0].replace("*", "[^/]*").replace(".parquet", r"\.parquet"))
    assert pattern.fullmatch(imported.output + "/x.parquet")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_build_with_the_makefile_and_the_declared_extras(name):
    text = (DEPLOY / name).read_text()
    assert text.count("FROM ") == 1
    if name == "Dockerfile":
        assert "make setup" in text  # the same install steps as `make curate` / `make test`
        assert re.search(r"^setup:", (ROOT / "Makefile").read_text(), re.M)
    else:
        extra = re.search(r"pip install .*'\.\[(\w+)\]'", text).group(1)
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert re.search(rf"^{extra} = \[.*vllm", pyproject, re.M)
        assert f"--build-arg BASE=$(IMAGE_CPU)" in (ROOT / "Makefile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "out", ".git"} <= set(ignored)  # never the host's build into an image
