"""The Kubernetes manifests with the images a registry holds:

  python deploy/render.py --registry REGISTRY --out out/k8s   (what `make k8s` runs)

Copies deploy/k8s/*.yaml to OUT, with every `image: thresher:cpu` / `thresher:gpu`
(the Makefile's IMAGE_CPU / IMAGE_GPU) prefixed by REGISTRY/. Without --registry the
names stay local (a cluster that loads images itself, such as kind or minikube).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

K8S = Path(__file__).resolve().parent / "k8s"


def render(text: str, images: list[str], registry: str) -> str:
    if not registry:
        return text
    for image in images:
        text = re.sub(rf"(image:\s*){re.escape(image)}(\s|$)",
                      rf"\g<1>{registry.rstrip('/')}/{image}\g<2>", text, flags=re.M)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", default="")
    parser.add_argument("--images", nargs="+", default=["thresher:cpu", "thresher:gpu"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(K8S.glob("*.yaml")):
        (args.out / path.name).write_text(render(path.read_text(), args.images, args.registry))
    print(f"wrote {args.out}/: " + ", ".join(p.name for p in sorted(K8S.glob("*.yaml"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
