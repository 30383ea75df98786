"""Write the schema files the deploy tests validate against (they are data, kept here
so that the tests need no network):

  kuberay-v1.6.2/, kuberay-v1.7.0/: {raycluster,rayjob}.json.gz
      the openAPIV3Schema of KubeRay's CRDs at those tags,
      github.com/ray-project/kuberay ray-operator/config/crd/bases/ray.io_*.yaml
  kubernetes-v1.33.0/{cronjob,configmap,persistentvolumeclaim,podtemplatespec}.json.gz
      Kubernetes 1.33.0's own schemas (strict: no unknown fields), from the
      kubernetes-validate 1.36.0 wheel (kubernetes-json-schema/v1.33.0-local-strict/),
      each with only the definitions it reaches; podtemplatespec is for the pod
      templates inside KubeRay's resources, whose CRDs leave most pod fields open.

  python tests/schemas/extract.py KUBERAY_CHECKOUT KUBERNETES_VALIDATE_WHEEL

The KubeRay checkout must have the tags (git show reads the files from it).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KUBERAY = ("v1.6.2", "v1.7.0")  # the releases with authOptions
KUBERNETES = "v1.33.0"
KINDS = {"cronjob": "cronjob-batch-v1", "configmap": "configmap-v1",
         "persistentvolumeclaim": "persistentvolumeclaim-v1"}


def write(path: Path, schema: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as out:
        json.dump(schema, out, sort_keys=True, separators=(",", ":"))
    print(f"wrote {path.relative_to(HERE)} ({path.stat().st_size:,} bytes)")


def kuberay(checkout: Path) -> None:
    import yaml

    for tag in KUBERAY:
        for kind in ("rayclusters", "rayjobs"):
            text = subprocess.run(["git", "-C", str(checkout), "show", f"{tag}:ray-operator/"
                                   f"config/crd/bases/ray.io_{kind}.yaml"], check=True,
                                  capture_output=True, text=True).stdout
            crd = yaml.safe_load(text)
            [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            write(HERE / f"kuberay-{tag}" / f"{kind[:-1]}.json.gz",
                  version["schema"]["openAPIV3Schema"])


def kubernetes(wheel: Path) -> None:
    base = f"kubernetes_validate/kubernetes-json-schema/{KUBERNETES}-local-strict/"
    ref = "/api/_definitions.json#/$defs/"
    with zipfile.ZipFile(wheel) as z:
        root = json.loads(z.read(base + "_definitions.json"))
        definitions = root["$defs"]
        kinds = {name: json.loads(z.read(base + file + ".json")) for name, file in KINDS.items()}
        # Pod templates inside KubeRay's resources: its CRDs leave most pod fields open
        kinds["podtemplatespec"] = {"$ref": ref + "io.k8s.api.core.v1.PodTemplateSpec"}
        for name, schema in kinds.items():
            reached, todo = {}, [schema]
            while todo:  # the definitions this kind reaches, and only those
                pattern = r'"\$ref": ?"(?:/api/_definitions\.json)?#/\$defs/([^"]+)"'
                for found in re.findall(pattern, json.dumps(todo.pop())):
                    if found not in reached:
                        reached[found] = definitions[found]
                        todo.append(definitions[found])
            bundled = json.loads(json.dumps({"$schema": root["$schema"], **schema,
                                             "$defs": reached}).replace(ref, "#/$defs/"))
            write(HERE / f"kubernetes-{KUBERNETES}" / f"{name}.json.gz", bundled)


if __name__ == "__main__":
    kuberay(Path(sys.argv[1]))
    kubernetes(Path(sys.argv[2]))
