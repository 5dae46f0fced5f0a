#!/usr/bin/env python3
"""Checks the deployment artifacts in deploy/ without a Kubernetes cluster or systemd running.

- Kubernetes (deploy/k8s): every manifest parses; every object has apiVersion, kind and
  metadata.name; kustomization resources and configMapGenerator files exist; every StatefulSet
  has a headless Service named by serviceName, a selector its pod template's labels satisfy,
  required pod anti-affinity by topology.kubernetes.io/zone that selects its own pods, containers
  with an image, mounts of declared volumes or claim templates, configMap subPaths that the
  generator provides, and probes on named ports; a Deployment (the stateless query service) the
  same but the Service and the claim templates; every Service selects some pod template.
- Kubernetes schemas: every object validates strictly (no unknown fields) against the OpenAPI
  schemas of Kubernetes K8S_VERSION, with kubernetes-validate from PyPI (its schemas are bundled;
  no cluster, no network). Run the script with the python of scripts/duckdb-env.sh, which has it.
- systemd (deploy/systemd): `systemd-analyze verify` of every unit, with ExecStart pointed at
  $MERIDIAN_BIN (the units name /usr/local/bin/meridian, which a build machine does not have);
  skipped with a note when systemd-analyze is missing.
- Dockerfile: builds the meridian binary with the toolchain of Cargo.toml's rust-version and runs it.

The TOML configs under deploy/ are checked by `cargo test -p meridian-cli` (they load and validate
as each service's config). Needs PyYAML (`pip install pyyaml`). Exits 1 listing every problem.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The Kubernetes release whose schemas the manifests must satisfy.
K8S_VERSION = "1.33"
DEPLOY = ROOT / "deploy"
problems = []


def problem(message):
    problems.append(message)


def check_k8s():
    try:
        import yaml
    except ImportError:
        problem("PyYAML is missing: pip install pyyaml (needed to parse the Kubernetes manifests)")
        return
    k8s = DEPLOY / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    generated = {}
    for generator in kustomization.get("configMapGenerator", []):
        for name in generator.get("files", []):
            if not (k8s / name).is_file():
                problem(f"kustomization: configMapGenerator file {name} does not exist")
            generated.setdefault(generator["name"], set()).add(pathlib.Path(name).name)
    objects = []
    for resource in kustomization.get("resources", []):
        path = k8s / resource
        if not path.is_file():
            problem(f"kustomization: resource {resource} does not exist")
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            for field in ("apiVersion", "kind"):
                if not doc.get(field):
                    problem(f"{resource}: an object has no {field}")
            if not (doc.get("metadata") or {}).get("name"):
                problem(f"{resource}: a {doc.get('kind')} has no metadata.name")
            objects.append((resource, doc))
    check_k8s_schemas(objects)
    services = {doc["metadata"]["name"]: doc for _, doc in objects if doc.get("kind") == "Service"}
    templates = []
    for resource, doc in objects:
        if doc.get("kind") not in ("StatefulSet", "Deployment"):
            continue
        # A Deployment (a stateless service) gets every check but the StatefulSet's own: a
        # governing Service and volume claims.
        stateful = doc["kind"] == "StatefulSet"
        name = doc["metadata"]["name"]
        who = f"{resource}: {doc['kind']} {name}"
        spec = doc.get("spec") or {}
        if doc.get("apiVersion") != "apps/v1":
            problem(f"{who}: apiVersion must be apps/v1")
        service = services.get(spec.get("serviceName"))
        if not stateful:
            pass
        elif service is None:
            problem(f"{who}: serviceName {spec.get('serviceName')!r} names no Service in the manifests")
        elif service["spec"].get("clusterIP") != "None" and spec.get("replicas", 1) > 1:
            problem(f"{who}: its Service {service['metadata']['name']} must be headless (clusterIP: None) for stable pod DNS names")
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        templates.append(labels)
        if not selector or any(labels.get(key) != value for key, value in selector.items()):
            problem(f"{who}: spec.selector.matchLabels {selector} is empty or not satisfied by the template labels {labels}")
        pod = template.get("spec") or {}
        if spec.get("replicas", 1) > 1:
            terms = (((pod.get("affinity") or {}).get("podAntiAffinity") or {})
                     .get("requiredDuringSchedulingIgnoredDuringExecution") or [])
            zoned = [term for term in terms if term.get("topologyKey") == "topology.kubernetes.io/zone"]
            if not zoned:
                problem(f"{who}: no required podAntiAffinity with topologyKey topology.kubernetes.io/zone")
            for term in zoned:
                match = (term.get("labelSelector") or {}).get("matchLabels") or {}
                if not match or any(labels.get(key) != value for key, value in match.items()):
                    problem(f"{who}: the anti-affinity selector {match} does not select its own pods")
        volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
        claims = {claim["metadata"]["name"] for claim in spec.get("volumeClaimTemplates") or []}
        if stateful and not claims:
            problem(f"{who}: no volumeClaimTemplates: its data would not survive a reschedule")
        containers = pod.get("containers") or []
        if not containers:
            problem(f"{who}: no containers")
        for container in containers:
            cwho = f"{who} container {container.get('name')}"
            if not container.get("image"):
                problem(f"{cwho}: no image")
            ports = {port.get("name") for port in container.get("ports") or []}
            for probe in ("readinessProbe", "livenessProbe"):
                port = ((container.get(probe) or {}).get("httpGet") or (container.get(probe) or {}).get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problem(f"{cwho}: {probe} uses port {port!r}, which the container does not name")
            for mount in container.get("volumeMounts") or []:
                source = mount.get("name")
                if source not in volumes and source not in claims:
                    problem(f"{cwho}: mounts {source!r}, which is neither a volume nor a claim template")
                config_map = (volumes.get(source) or {}).get("configMap")
                if config_map and mount.get("subPath") and mount["subPath"] not in generated.get(config_map["name"], set()):
                    problem(f"{cwho}: subPath {mount['subPath']!r} is not a file of ConfigMap {config_map['name']}")
    for name, service in services.items():
        selector = service["spec"].get("selector") or {}
        if not any(all(labels.get(key) == value for key, value in selector.items()) for labels in templates):
            problem(f"Service {name}: its selector {selector} matches no pod template")
    if not any(doc.get("kind") == "StatefulSet" and doc["metadata"]["name"] == "nameserver" for _, doc in objects):
        problem("no nameserver StatefulSet")
    if not any(doc.get("kind") == "StatefulSet" and "broker" in doc["metadata"]["name"] for _, doc in objects):
        problem("no broker StatefulSet")


def check_k8s_schemas(objects):
    try:
        import kubernetes_validate
    except ImportError:
        problem(
            "kubernetes-validate is missing: run this script with the python scripts/duckdb-env.sh prints "
            "(`$(scripts/duckdb-env.sh) scripts/check-deploy.py`), or pip install kubernetes-validate"
        )
        return
    for resource, doc in objects:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "the object"
            problem(f"{resource}: {doc.get('kind')} {(doc.get('metadata') or {}).get('name')}: "
                    f"{where}: {error.message} (Kubernetes {K8S_VERSION} schema)")


def check_systemd():
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    if not units:
        problem("deploy/systemd has no units")
    analyze = shutil.which("systemd-analyze")
    binary = os.environ.get("MERIDIAN_BIN") or str(ROOT / "target" / "debug" / "meridian")
    if analyze is None:
        print("note: systemd-analyze is not installed; unit files not verified", file=sys.stderr)
        return
    if not os.access(binary, os.X_OK):
        problem(f"{binary} is not an executable meridian binary (build it, or set MERIDIAN_BIN)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        for unit in units:
            text = unit.read_text().replace("/usr/local/bin/meridian", binary)
            # Template units are verified as an instance.
            name = unit.name.replace("@.service", "@a-0.service")
            (pathlib.Path(scratch) / name).write_text(text)
        for unit in sorted(pathlib.Path(scratch).iterdir()):
            result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True)
            output = (result.stdout + result.stderr).strip()
            # Ordering on other units that exist only on a real machine is not a problem here.
            lines = [line for line in output.splitlines() if "not found" not in line.lower() or "meridian" in line.lower()]
            if result.returncode != 0 or lines:
                problem(f"systemd-analyze verify {unit.name}: " + " | ".join(lines or [output]))
        for unit in units:
            if "ExecStart=/usr/local/bin/meridian " not in unit.read_text():
                problem(f"{unit.name}: ExecStart does not run /usr/local/bin/meridian")


def check_dockerfile():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    version = re.search(r'^rust-version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    if f"FROM rust:{version}" not in dockerfile:
        problem(f"Dockerfile: the build stage must use rust:{version} (Cargo.toml's rust-version)")
    if "cargo build --release --locked --bin meridian" not in dockerfile:
        problem("Dockerfile: does not build the meridian binary with --release --locked")
    if 'ENTRYPOINT ["/usr/local/bin/meridian"]' not in dockerfile:
        problem("Dockerfile: the entrypoint is not /usr/local/bin/meridian")


check_k8s()
check_systemd()
check_dockerfile()
if problems:
    print(f"deploy/ has {len(problems)} problem(s):", file=sys.stderr)
    for message in problems:
        print(f"  - {message}", file=sys.stderr)
    sys.exit(1)
print("deploy/: Kubernetes manifests, systemd units and Dockerfile check out")
