"""Offline checks of sluice's deploy kit (run by deploy/validate.sh, which installs the tools).

Kubernetes: renders the base and every overlay with `kubectl kustomize`, validates every object
against the Kubernetes OpenAPI schemas of a pinned version (kubernetes-validate, strict: unknown
fields are errors), the ServiceMonitor (a CRD, so not in those schemas) against the subset of its
CRD schema below, and checks what the kit promises: probes, grace period above sluice's own,
security context, the config each overlay ships (through `sluice validate`), and that the Service,
ServiceMonitor and PodDisruptionBudget select what they should.

ECS: validates the task definition and the service against the RegisterTaskDefinition and
CreateService input shapes of botocore's ECS service model, and checks stopTimeout, the non-root
read-only container, logs and the deployment's percentages; its config goes through
`sluice validate` too.

Each check fails with the file, the object and what is wrong; the exit code is 1 if any did.
Before all that, a few deliberately broken copies are fed to the validators, which must refuse
them: a validator that accepts anything would otherwise pass silently.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import botocore.session
import jsonschema
import kubernetes_validate
import yaml
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

# sluice's default shutdown_grace_period_seconds (docs/configuration.md).
DEFAULT_GRACE = 25
ADMIN_PORT = 9090
ECS_MAX_STOP_TIMEOUT = 120

# The Prometheus Operator's duration pattern (monitoring.coreos.com_servicemonitors.yaml).
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
# The fields of monitoring.coreos.com/v1 ServiceMonitor that the kit uses and the common ones a
# user adds, with the CRD's types; anything else is refused, so extend this when you add a field.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "params": {"type": "object"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


class Checker:
    def __init__(self, root, sluice_cmd, k8s_version):
        self.root = root
        self.sluice_cmd = sluice_cmd
        self.k8s_version = k8s_version
        self.failures = []
        ecs = botocore.session.get_session().get_service_model("ecs")
        self.register_shape = ecs.operation_model("RegisterTaskDefinition").input_shape
        self.create_service_shape = ecs.operation_model("CreateService").input_shape

    def fail(self, where, what):
        self.failures.append(f"{where}: {what}")

    def check(self, cond, where, what):
        if not cond:
            self.fail(where, what)
        return cond

    # --- validators (also used by the self-test) ---------------------------------------------

    def schema_problem(self, obj):
        """Why `obj` does not match its schema, or None."""
        if obj.get("apiVersion") == "monitoring.coreos.com/v1":
            try:
                jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            except jsonschema.ValidationError as e:
                path = "/".join(str(p) for p in e.absolute_path)
                return f"{path or '(top)'}: {e.message}"
            return None
        try:
            kubernetes_validate.validate(obj, self.k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            return f"{path or '(top)'}: {e.message}"
        except kubernetes_validate.SchemaNotFoundError as e:
            return f"no schema for {obj.get('apiVersion')} {obj.get('kind')}: {e}"
        return None

    def ecs_problem(self, params, shape):
        try:
            validate_parameters(params, shape)
        except ParamValidationError as e:
            return str(e).replace("\n", " ")
        return None

    def sluice_validate(self, where, config_text):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(config_text)
            path = f.name
        try:
            r = subprocess.run(
                self.sluice_cmd + ["validate", "--config", path],
                capture_output=True,
                text=True,
                cwd=self.root,
            )
        finally:
            os.unlink(path)
        if r.returncode != 0:
            self.fail(where, "sluice validate refused the config:\n" + r.stderr.replace(path, "config.yaml").strip())
        return r.returncode == 0

    # --- Kubernetes ----------------------------------------------------------------------------

    def render(self, kustomization):
        r = subprocess.run(
            ["kubectl", "kustomize", kustomization], capture_output=True, text=True
        )
        if r.returncode != 0:
            self.fail(kustomization, "kubectl kustomize failed: " + r.stderr.strip())
            return []
        return [d for d in yaml.safe_load_all(r.stdout) if d]

    def kubernetes(self, rel, expect):
        """`expect`: None (the base: schema only), "single" or "replicas"."""
        objs = self.render(os.path.join(self.root, rel))
        by_kind = {}
        for obj in objs:
            where = f"{rel}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            problem = self.schema_problem(obj)
            self.check(problem is None, where, f"schema: {problem}")
            by_kind.setdefault(obj.get("kind"), []).append(obj)
        print(f"{rel}: {len(objs)} objects rendered and checked against their schemas")
        if expect is None:
            return
        kind = "StatefulSet" if expect == "single" else "Deployment"
        workloads = by_kind.get(kind, [])
        if not self.check(len(workloads) == 1, rel, f"expected one {kind}, found {len(workloads)}"):
            return
        self.check(
            not by_kind.get("Deployment" if kind == "StatefulSet" else "StatefulSet"),
            rel,
            "expected only one kind of workload",
        )
        w = workloads[0]
        where = f"{rel}: {kind}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        replicas = w["spec"].get("replicas", 1)

        # The config: the ConfigMap the pod mounts at /etc/sluice holds config.yaml.
        cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        cm_name = vols.get("config", {}).get("configMap", {}).get("name")
        if not self.check(cm_name in cms, where, f"volume config names ConfigMap {cm_name!r}, which the kit does not render"):
            return
        text = cms[cm_name].get("data", {}).get("config.yaml")
        if not self.check(text is not None, where, f"ConfigMap {cm_name} has no config.yaml"):
            return
        self.sluice_validate(f"{rel}: ConfigMap {cm_name} config.yaml", text)
        config = yaml.safe_load(text)
        grace = config.get("shutdown_grace_period_seconds", DEFAULT_GRACE)

        tgps = pod.get("terminationGracePeriodSeconds", 30)
        self.check(tgps > grace + 1, where, f"terminationGracePeriodSeconds {tgps} must exceed shutdown_grace_period_seconds {grace} plus a second")
        psc = pod.get("securityContext", {})
        self.check(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
        self.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "pod seccompProfile must be RuntimeDefault")
        self.check(pod.get("serviceAccountName") in {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}, where, "serviceAccountName must name the kit's ServiceAccount")
        for sa in by_kind.get("ServiceAccount", []):
            self.check("eks.amazonaws.com/role-arn" in sa["metadata"].get("annotations", {}), f"{rel}: ServiceAccount/{sa['metadata']['name']}", "no eks.amazonaws.com/role-arn annotation (IRSA)")

        (c,) = [c for c in pod["containers"] if c["name"] == "sluice"]
        self.check(c.get("args", [])[:1] == ["run"] and "/etc/sluice/config.yaml" in c.get("args", []), where, f"args must be run --config /etc/sluice/config.yaml, not {c.get('args')}")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        self.check(env.get("SLUICE_LOG_FORMAT") == "json", where, "SLUICE_LOG_FORMAT must be json")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        self.check(ports.get("admin") == ADMIN_PORT, where, f"container port admin must be {ADMIN_PORT}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            self.check(get.get("path") == path and get.get("port") in ("admin", ADMIN_PORT), where, f"{probe} must GET {path} on the admin port, not {get}")
        sc = c.get("securityContext", {})
        self.check(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem must be true")
        self.check(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation must be false")
        self.check(sc.get("capabilities", {}).get("drop") == ["ALL"], where, "capabilities must drop ALL")
        self.check(sc.get("runAsUser", psc.get("runAsUser")) == 65532, where, "must run as uid 65532 (the image's nonroot)")
        res = c.get("resources", {})
        self.check(res.get("requests") and res.get("limits", {}).get("memory"), where, "resources need requests and a memory limit")

        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        self.check(mounts.get("/etc/sluice") == "config", where, "the config volume must be mounted at /etc/sluice")
        checkpoint_dir = env.get("SLUICE_CHECKPOINT_DIR") or config.get("checkpoint_dir")
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        if expect == "single":
            self.check(replicas == 1, where, f"the embedded store allows one process: replicas must be 1, not {replicas}")
            self.check("coordination" not in config, where, "the single overlay's config must not set coordination")
            self.check(mounts.get(checkpoint_dir) in claims, where, f"checkpoint_dir {checkpoint_dir} must be on a volume claim (claims: {sorted(claims)})")
        else:
            lease_table = (config.get("coordination") or {}).get("lease_table")
            self.check(bool(lease_table), where, "several replicas need coordination.lease_table in the config")
            self.check(replicas >= 2, where, f"replicas {replicas}: the replicas overlay runs several")
            self.check(bool(pod.get("topologySpreadConstraints")), where, "replicas should spread (topologySpreadConstraints)")
            strategy = w["spec"].get("strategy", {}).get("rollingUpdate", {})
            self.check(strategy.get("maxUnavailable") == 0, where, "rolling updates must start a new pod before stopping one (maxUnavailable 0)")
            self.check(checkpoint_dir in mounts, where, f"checkpoint_dir {checkpoint_dir} must be writable (a volume) on a read-only root")

        labels = w["spec"]["template"]["metadata"].get("labels", {})
        svc_ports, svc_labels = set(), {}
        for svc in by_kind.get("Service", []):
            sel = svc["spec"].get("selector", {})
            self.check(sel and all(labels.get(k) == v for k, v in sel.items()), f"{rel}: Service/{svc['metadata']['name']}", f"selector {sel} does not match the pods' labels")
            svc_ports |= {p.get("name") for p in svc["spec"]["ports"]}
            svc_labels = svc["metadata"].get("labels", {})
        for sm in by_kind.get("ServiceMonitor", []):
            smw = f"{rel}: ServiceMonitor/{sm['metadata']['name']}"
            sel = sm["spec"]["selector"].get("matchLabels", {})
            self.check(all(svc_labels.get(k) == v for k, v in sel.items()), smw, f"selector {sel} does not match the Service's labels")
            for ep in sm["spec"]["endpoints"]:
                self.check(ep.get("port") in svc_ports and ep.get("path", "/metrics") == "/metrics", smw, f"endpoint {ep} must scrape /metrics on a Service port ({sorted(svc_ports)})")
        pdbs = by_kind.get("PodDisruptionBudget", [])
        self.check(len(pdbs) == 1, rel, "expected one PodDisruptionBudget")
        for pdb in pdbs:
            pw = f"{rel}: PodDisruptionBudget/{pdb['metadata']['name']}"
            sel = pdb["spec"]["selector"].get("matchLabels", {})
            self.check(all(labels.get(k) == v for k, v in sel.items()), pw, "selector does not match the pods")
            if "minAvailable" in pdb["spec"]:
                self.check(pdb["spec"]["minAvailable"] < replicas, pw, f"minAvailable {pdb['spec']['minAvailable']} with {replicas} replicas blocks every drain")

    # --- ECS -------------------------------------------------------------------------------------

    def ecs(self, rel):
        base = os.path.join(self.root, rel)
        with open(os.path.join(base, "task-definition.json")) as f:
            task = json.load(f)
        with open(os.path.join(base, "service.json")) as f:
            service = json.load(f)
        with open(os.path.join(base, "config.yaml")) as f:
            config_text = f.read()
        tw = f"{rel}/task-definition.json"
        sw = f"{rel}/service.json"
        problem = self.ecs_problem(task, self.register_shape)
        self.check(problem is None, tw, f"RegisterTaskDefinition input: {problem}")
        problem = self.ecs_problem(service, self.create_service_shape)
        self.check(problem is None, sw, f"CreateService input: {problem}")

        self.sluice_validate(f"{rel}/config.yaml", config_text)
        config = yaml.safe_load(config_text)
        grace = config.get("shutdown_grace_period_seconds", DEFAULT_GRACE)
        self.check(bool((config.get("coordination") or {}).get("lease_table")), f"{rel}/config.yaml", "tasks have no persistent volume: the config must use coordination.lease_table")

        self.check(task.get("networkMode") == "awsvpc", tw, "networkMode must be awsvpc")
        self.check(task.get("taskRoleArn") and task.get("executionRoleArn"), tw, "taskRoleArn and executionRoleArn are needed")
        containers = {c["name"]: c for c in task["containerDefinitions"]}
        c = containers.get("sluice")
        if not self.check(c is not None, tw, "no container named sluice"):
            return
        stop = c.get("stopTimeout", 30)
        self.check(grace + 1 < stop <= ECS_MAX_STOP_TIMEOUT, tw, f"stopTimeout {stop} must exceed shutdown_grace_period_seconds {grace} plus a second, and ECS allows at most {ECS_MAX_STOP_TIMEOUT}")
        self.check(c.get("readonlyRootFilesystem") is True, tw, "readonlyRootFilesystem must be true")
        self.check(c.get("user", "").split(":")[0] not in ("", "0", "root"), tw, f"user {c.get('user')!r} must be non-root")
        self.check(c.get("linuxParameters", {}).get("capabilities", {}).get("drop") == ["ALL"], tw, "capabilities must drop ALL")
        self.check(c.get("logConfiguration", {}).get("logDriver") == "awslogs", tw, "logs must go to awslogs")
        self.check(c.get("command", [])[:1] == ["run"], tw, "command must be run --config ...")
        env = {e["name"]: e["value"] for e in c.get("environment", [])}
        self.check(env.get("SLUICE_LOG_FORMAT") == "json", tw, "SLUICE_LOG_FORMAT must be json")
        self.check(any(p["containerPort"] == ADMIN_PORT for p in c.get("portMappings", [])), tw, f"port {ADMIN_PORT} must be mapped")
        ckpt = env.get("SLUICE_CHECKPOINT_DIR", "")
        ro = {m["containerPath"] for m in c.get("mountPoints", [])}
        self.check(ckpt.startswith("/var/lib/sluice/") and ckpt not in ro, tw, "SLUICE_CHECKPOINT_DIR must name a directory that does not exist (the root is read-only; the lease table holds the checkpoints)")
        for dep in c.get("dependsOn", []):
            self.check(dep["containerName"] in containers, tw, f"dependsOn names an unknown container {dep['containerName']}")

        dc = service.get("deploymentConfiguration", {})
        self.check(dc.get("minimumHealthyPercent") == 100 and dc.get("maximumPercent", 0) >= 200, sw, "deployments must start new tasks before stopping old ones (minimumHealthyPercent 100, maximumPercent 200)")
        self.check(service.get("desiredCount", 0) >= 2, sw, "the service runs several tasks sharing the lease table")
        for lb in service.get("loadBalancers", []):
            self.check(lb.get("containerName") == "sluice" and lb.get("containerPort") == ADMIN_PORT, sw, "the target group must point at the sluice container's admin port")
        self.check(service.get("taskDefinition") == task.get("family"), sw, "taskDefinition must name the task definition's family")
        print(f"{rel}: task definition and service checked against botocore's ECS shapes")

    # --- self-test -------------------------------------------------------------------------------

    def self_test(self):
        """The validators refuse broken objects (else a green run would prove nothing)."""
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        }
        ok = self.schema_problem(deployment) is None
        typo = copy.deepcopy(deployment)
        typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
        wrong_type = copy.deepcopy(deployment)
        wrong_type["spec"]["replicas"] = "three"
        monitor = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "x"},
            "spec": {"selector": {}, "endpoints": [{"port": "admin", "interval": "30 s"}]},
        }
        task = {"family": "f", "containerDefinitions": [{"name": "c", "image": "i", "stopTimout": 40}]}
        service = {"serviceName": "s", "desiredCount": "2"}
        refused = [
            self.schema_problem(typo) is not None,
            self.schema_problem(wrong_type) is not None,
            self.schema_problem(monitor) is not None,
            self.ecs_problem(task, self.register_shape) is not None,
            self.ecs_problem(service, self.create_service_shape) is not None,
        ]
        self.check(ok and all(refused), "self-test", f"validators misbehave: accepts a valid Deployment {ok}, refuses broken objects {refused}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the repository's root")
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--sluice", required=True, help="command running sluice, e.g. 'target/debug/sluice'")
    args = ap.parse_args()
    checker = Checker(args.root, args.sluice.split(), args.kubernetes_version)
    checker.self_test()
    checker.kubernetes("deploy/kubernetes/base", None)
    checker.kubernetes("deploy/kubernetes/overlays/single", "single")
    checker.kubernetes("deploy/kubernetes/overlays/replicas", "replicas")
    checker.ecs("deploy/ecs")
    if checker.failures:
        for f in checker.failures:
            print(f"FAIL {f}", file=sys.stderr)
        print(f"deploy kit: {len(checker.failures)} problem(s)", file=sys.stderr)
        return 1
    print(f"deploy kit: ok (Kubernetes {args.kubernetes_version} schemas, botocore {botocore.__version__} ECS shapes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
