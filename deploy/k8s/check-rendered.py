#!/usr/bin/env python3
"""Checks one rendered overlay (`kubectl kustomize` output) for what kubernetes-validate cannot.

    check-rendered.py RENDERED.yaml BUILTIN_OUT.yaml [--external-secrets NAME,NAME...]

kubernetes-validate knows the built-in kinds of Kubernetes only. This script, run by
deploy/validate before it:

1. Splits the rendered objects. KEDA's kinds (keda.sh/v1alpha1 ScaledObject and
   TriggerAuthentication) are checked here against a schema of the fields this repository uses
   (a subset of KEDA 2.x's CRDs: required fields, types, enums, no unknown fields). Every other
   object goes to BUILTIN_OUT for `kubernetes-validate --strict`, together with the
   HorizontalPodAutoscaler each ScaledObject makes KEDA create, so that its replica bounds and
   `behavior` are validated strictly against the Kubernetes schema too.
2. Checks references within the overlay: Secrets, ConfigMaps and ServiceAccounts of the pods,
   Service and PodDisruptionBudget selectors and target ports, the scale targets of
   ScaledObjects and HPAs, TriggerAuthentications and their Secrets. A referenced Secret that
   the overlay does not define must be named in --external-secrets (created outside the
   repository), and every name given there must be referenced: the list in the README stays
   exact.
3. Checks the rules every pod here follows: non-root, read-only root filesystem, no privilege
   escalation, all capabilities dropped, RuntimeDefault seccomp, CPU and memory requests and
   limits on every container; containers serving gRPC have gRPC startup, readiness and
   liveness probes on that port and a PodDisruptionBudget; autoscaled Deployments set no
   `replicas`; KEDA's RabbitMQ triggers name exactly the chunk queues the worker consumes
   (`{prefix}.chunks.{group}.critical|normal`, from its ConfigMap).

Needs PyYAML and jsonschema (both come with kubernetes-validate). Exits 1 on any finding.
"""

import argparse
import json
import sys

import jsonschema
import yaml

KEDA_API = "keda.sh/v1alpha1"

# Defaults of import-worker's queue settings (crates/import-worker/config.default.toml).
DEFAULT_QUEUE_PREFIX = "userimport"
DEFAULT_BATCH_GROUPS = ["default"]

_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string", "minLength": 1}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}

# The rabbitmq scaler's metadata (KEDA 2.x docs, "RabbitMQ Queue" scaler).
_RABBITMQ_METADATA = {
    "type": "object",
    "required": ["queueName", "mode", "value"],
    "properties": {
        "host": _STR,
        "hostFromEnv": _STR,
        "protocol": {"enum": ["auto", "amqp", "http"]},
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "activationValue": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "queueName": _STR,
        "vhostName": _STR,
        "useRegex": {"enum": ["true", "false"]},
        "excludeUnacknowledged": {"enum": ["true", "false"]},
        "pageSize": {"type": "string", "pattern": r"^[0-9]+$"},
        "operation": {"enum": ["sum", "max", "avg"]},
        "timeout": {"type": "string", "pattern": r"^[0-9]+$"},
        "unsafeSsl": {"enum": ["true", "false"]},
    },
    "additionalProperties": False,
}

SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KEDA_API},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": _STR,
                        "kind": _STR,
                        "name": _STR,
                        "envSourceContainerName": _STR,
                    },
                    "additionalProperties": False,
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": _INT,
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                            ]
                        },
                    },
                    "additionalProperties": False,
                },
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {
                                "name": _STR,
                                # Validated by kubernetes-validate in the derived HPA.
                                "behavior": {"type": "object"},
                            },
                            "additionalProperties": False,
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": _STR,
                            "name": _STR,
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": _STR,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                                "additionalProperties": False,
                            },
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                        "if": {"properties": {"type": {"const": "rabbitmq"}}},
                        "then": {"properties": {"metadata": _RABBITMQ_METADATA}},
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

TRIGGER_AUTHENTICATION_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KEDA_API},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "properties": {"parameter": _STR, "name": _STR, "key": _STR},
                        "additionalProperties": False,
                    },
                },
                "configMapTargetRef": {"type": "array"},
                "env": {"type": "array"},
                "podIdentity": {"type": "object"},
                "hashiCorpVault": {"type": "object"},
                "azureKeyVault": {"type": "object"},
                "awsSecretManager": {"type": "object"},
                "gcpSecretManager": {"type": "object"},
                "boundServiceAccountToken": {"type": "array"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

KEDA_SCHEMAS = {
    "ScaledObject": SCALED_OBJECT_SCHEMA,
    "TriggerAuthentication": TRIGGER_AUTHENTICATION_SCHEMA,
}

POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class Findings:
    def __init__(self):
        self.errors = []

    def add(self, obj, message):
        self.errors.append("%s: %s" % (ident(obj), message))


def ident(obj):
    return "%s/%s" % (obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?"))


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_template(obj):
    if obj.get("kind") == "Job":
        return obj["spec"]["template"]
    return obj.get("spec", {}).get("template")


def all_containers(pod_spec):
    return list(pod_spec.get("initContainers") or []) + list(pod_spec.get("containers") or [])


def check_keda(obj, found):
    """Validates a KEDA object against its schema; False when it does not conform."""
    schema = KEDA_SCHEMAS.get(obj.get("kind"))
    if schema is None or obj.get("apiVersion") != KEDA_API:
        found.add(obj, "%s is not a KEDA kind this check knows (%s ScaledObject, "
                  "TriggerAuthentication)" % (obj.get("apiVersion"), KEDA_API))
        return False
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    for error in errors:
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        found.add(obj, "%s: %s" % (path, error.message))
    return not errors


def derived_hpa(scaled_object):
    """The HorizontalPodAutoscaler KEDA creates for a ScaledObject (external metrics)."""
    spec = scaled_object["spec"]
    meta = scaled_object["metadata"]
    advanced = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
    metrics = []
    for index, trigger in enumerate(spec.get("triggers") or []):
        value = str((trigger.get("metadata") or {}).get("value", "1"))
        metrics.append({
            "type": "External",
            "external": {
                "metric": {
                    "name": "s%d-%s" % (index, trigger.get("type", "trigger")),
                    "selector": {"matchLabels": {"scaledobject.keda.sh/name": meta["name"]}},
                },
                "target": {"type": "AverageValue", "averageValue": value},
            },
        })
    target = spec.get("scaleTargetRef") or {}
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": advanced.get("name", "keda-hpa-" + meta["name"]),
            "namespace": meta.get("namespace", "default"),
            "annotations": {"check-rendered/derived-from": "ScaledObject/" + meta["name"]},
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": target.get("apiVersion", "apps/v1"),
                "kind": target.get("kind", "Deployment"),
                "name": target.get("name", ""),
            },
            "minReplicas": max(1, spec.get("minReplicaCount", 0)),
            "maxReplicas": spec.get("maxReplicaCount", 100),
            "metrics": metrics,
        },
    }
    if "behavior" in advanced:
        hpa["spec"]["behavior"] = advanced["behavior"]
    return hpa


def check_pod_rules(owner, pod_spec, found):
    pod_sc = pod_spec.get("securityContext") or {}
    for container in all_containers(pod_spec):
        where = "container %s" % container.get("name")
        sc = container.get("securityContext") or {}

        def effective(key):
            return sc.get(key, pod_sc.get(key))

        if effective("runAsNonRoot") is not True:
            found.add(owner, "%s: runAsNonRoot is not true" % where)
        if sc.get("readOnlyRootFilesystem") is not True:
            found.add(owner, "%s: readOnlyRootFilesystem is not true" % where)
        if sc.get("allowPrivilegeEscalation") is not False:
            found.add(owner, "%s: allowPrivilegeEscalation is not false" % where)
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            found.add(owner, "%s: capabilities do not drop ALL" % where)
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            found.add(owner, "%s: seccompProfile is not RuntimeDefault" % where)
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(part) or {}):
                    found.add(owner, "%s: no %s %s" % (where, resource, part))


def check_grpc_probes(owner, pod_spec, found):
    """Containers with a `grpc` port: gRPC startup/readiness/liveness probes on it."""
    served = False
    for container in pod_spec.get("containers") or []:
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if "grpc" not in ports:
            continue
        served = True
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (container.get(probe) or {}).get("grpc") or {}
            if grpc.get("port") != ports["grpc"]:
                found.add(owner, "container %s: %s is not a gRPC probe on port %s"
                          % (container.get("name"), probe, ports["grpc"]))
    return served


def referenced_names(pod_spec):
    """(kind, name, optional) of the Secrets, ConfigMaps and ServiceAccount a pod uses."""
    refs = []
    if pod_spec.get("serviceAccountName"):
        refs.append(("ServiceAccount", pod_spec["serviceAccountName"], False))
    for container in all_containers(pod_spec):
        for source in container.get("envFrom") or []:
            for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if key in source:
                    refs.append((kind, source[key]["name"], bool(source[key].get("optional"))))
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if key in value_from:
                    ref = value_from[key]
                    refs.append((kind, ref["name"], bool(ref.get("optional"))))
    for volume in pod_spec.get("volumes") or []:
        if "secret" in volume:
            refs.append(("Secret", volume["secret"]["secretName"],
                         bool(volume["secret"].get("optional"))))
        if "configMap" in volume:
            refs.append(("ConfigMap", volume["configMap"]["name"],
                         bool(volume["configMap"].get("optional"))))
        for source in (volume.get("projected") or {}).get("sources") or []:
            for key, kind in (("secret", "Secret"), ("configMap", "ConfigMap")):
                if key in source:
                    refs.append((kind, source[key]["name"], bool(source[key].get("optional"))))
    return refs


def parse_toml_value(text):
    """An environment value as figment reads it (TOML); JSON where tomllib is missing."""
    try:
        import tomllib  # Python 3.11+
        return tomllib.loads("value = " + text)["value"]
    except ImportError:
        try:
            return json.loads(text)
        except ValueError:
            return None
    except tomllib.TOMLDecodeError:
        return None


def expected_queues(deployment, by_kind):
    """The chunk queues a worker Deployment consumes, from its ConfigMaps' settings."""
    settings = {}
    pod_spec = pod_template(deployment)["spec"]
    for container in pod_spec.get("containers") or []:
        for source in container.get("envFrom") or []:
            name = (source.get("configMapRef") or {}).get("name")
            config_map = by_kind.get("ConfigMap", {}).get(name)
            if config_map:
                settings.update(config_map.get("data") or {})
        for env in container.get("env") or []:
            if "value" in env:
                settings[env["name"]] = env["value"]
    prefix = settings.get("IMPORT_WORKER_QUEUE__PREFIX", DEFAULT_QUEUE_PREFIX)
    groups = settings.get("IMPORT_WORKER_WORKER__BATCH_GROUPS")
    groups = parse_toml_value(groups) if groups is not None else DEFAULT_BATCH_GROUPS
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("IMPORT_WORKER_WORKER__BATCH_GROUPS is not a list of strings: %r"
                         % settings.get("IMPORT_WORKER_WORKER__BATCH_GROUPS"))
    return {"%s.chunks.%s.%s" % (prefix, group, lane)
            for group in groups for lane in ("critical", "normal")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("builtin_out")
    parser.add_argument("--external-secrets", default="",
                        help="comma-separated Secrets the overlay references but does not define")
    args = parser.parse_args()
    external = {name for name in args.external_secrets.split(",") if name}

    with open(args.rendered) as f:
        objects = [doc for doc in yaml.safe_load_all(f) if doc]

    found = Findings()
    by_kind = {}
    builtin, keda, conforming = [], [], set()
    for obj in objects:
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion") \
                or not (obj.get("metadata") or {}).get("name"):
            found.errors.append(("an object without apiVersion, kind or metadata.name: %r"
                                 % (obj,))[:200])
            continue
        names = by_kind.setdefault(obj["kind"], {})
        if obj["metadata"]["name"] in names:
            found.add(obj, "defined twice")
        names[obj["metadata"]["name"]] = obj
        if obj["apiVersion"].split("/")[0] == "keda.sh":
            keda.append(obj)
            if check_keda(obj, found):
                conforming.add(id(obj))
        else:
            builtin.append(obj)

    def exists(kind, name):
        return name in by_kind.get(kind, {})

    # Pods: references, rules, probes.
    missing_secrets = set()
    grpc_servers = []
    for obj in objects:
        if obj.get("kind") not in POD_OWNERS or not pod_template(obj):
            continue
        template = pod_template(obj)
        pod_spec = template.get("spec") or {}
        for kind, name, optional in referenced_names(pod_spec):
            if exists(kind, name) or optional:
                continue
            if kind == "Secret":
                missing_secrets.add(name)
            else:
                found.add(obj, "refers to the %s %s, which is not in the overlay" % (kind, name))
        check_pod_rules(obj, pod_spec, found)
        if check_grpc_probes(obj, pod_spec, found):
            grpc_servers.append(obj)

    # Services: the selector selects pods that have the target ports.
    for service in by_kind.get("Service", {}).values():
        selector = service["spec"].get("selector") or {}
        pods = [o for o in objects if o.get("kind") in POD_OWNERS
                and matches(selector, (pod_template(o).get("metadata") or {}).get("labels") or {})]
        if not pods:
            found.add(service, "its selector %s selects no pod template" % selector)
        for pod_owner in pods:
            named = {p.get("name") for c in all_containers(pod_template(pod_owner)["spec"])
                     for p in c.get("ports") or []}
            for port in service["spec"].get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str) and target not in named:
                    found.add(service, "targetPort %s is no port of %s"
                              % (target, ident(pod_owner)))

    # PodDisruptionBudgets select a pod template; every gRPC server has one.
    budgets = list(by_kind.get("PodDisruptionBudget", {}).values())
    for budget in budgets:
        selector = (budget["spec"].get("selector") or {}).get("matchLabels") or {}
        if not any(o.get("kind") in POD_OWNERS and matches(
                selector, (pod_template(o).get("metadata") or {}).get("labels") or {})
                for o in objects):
            found.add(budget, "its selector %s selects no pod template" % selector)
    for server in grpc_servers:
        labels = (pod_template(server).get("metadata") or {}).get("labels") or {}
        if not any(matches((b["spec"].get("selector") or {}).get("matchLabels") or {}, labels)
                   for b in budgets):
            found.add(server, "no PodDisruptionBudget selects its pods")

    # Autoscaling: targets exist, one autoscaler each, no fixed replicas; KEDA's references.
    scaled = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        scaled.setdefault(hpa["spec"]["scaleTargetRef"]["name"], []).append(hpa)
    derived = 0
    for scaled_object in by_kind.get("ScaledObject", {}).values():
        if id(scaled_object) not in conforming:
            continue
        spec = scaled_object["spec"]
        target_name = (spec.get("scaleTargetRef") or {}).get("name")
        scaled.setdefault(target_name, []).append(scaled_object)
        builtin.append(derived_hpa(scaled_object))
        derived += 1
        deployment = by_kind.get("Deployment", {}).get(target_name)
        if deployment is None:
            found.add(scaled_object, "scales %s, which is not a Deployment in the overlay"
                      % target_name)
            continue
        if not (0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)):
            found.add(scaled_object, "minReplicaCount is above maxReplicaCount")
        try:
            wanted = expected_queues(deployment, by_kind)
        except ValueError as error:
            found.add(deployment, str(error))
            continue
        queues = set()
        for trigger in spec.get("triggers") or []:
            auth = (trigger.get("authenticationRef") or {}).get("name")
            if auth and (trigger["authenticationRef"].get("kind", "TriggerAuthentication")
                         == "TriggerAuthentication") and not exists("TriggerAuthentication", auth):
                found.add(scaled_object, "refers to the TriggerAuthentication %s, which is not "
                          "in the overlay" % auth)
            if trigger.get("type") == "rabbitmq":
                queues.add((trigger.get("metadata") or {}).get("queueName"))
        if queues and queues != wanted:
            found.add(scaled_object, "its rabbitmq triggers watch %s, but %s consumes %s"
                      % (sorted(queues), target_name, sorted(wanted)))
    for target_name, scalers in scaled.items():
        if len(scalers) > 1:
            found.errors.append("%s is scaled by more than one autoscaler: %s"
                                % (target_name, ", ".join(ident(s) for s in scalers)))
        deployment = by_kind.get("Deployment", {}).get(target_name)
        if deployment is not None and "replicas" in deployment["spec"]:
            found.add(deployment, "sets replicas although %s scales it; every apply would "
                      "reset the count" % ident(scalers[0]))
    for auth in by_kind.get("TriggerAuthentication", {}).values():
        for ref in (auth.get("spec") or {}).get("secretTargetRef") or []:
            if not exists("Secret", ref.get("name")):
                missing_secrets.add(ref.get("name"))

    for name in sorted(missing_secrets - external):
        found.errors.append("the Secret %s is referenced but neither defined in the overlay nor "
                            "listed as external" % name)
    for name in sorted(external - missing_secrets):
        found.errors.append("the Secret %s is listed as external but nothing refers to it "
                            "(or the overlay defines it)" % name)

    with open(args.builtin_out, "w") as f:
        yaml.safe_dump_all(builtin, f, sort_keys=False)

    if found.errors:
        for error in found.errors:
            print("ERROR %s: %s" % (args.rendered, error), file=sys.stderr)
        return 1
    print("%d objects: %d built-in (+%d HPA derived from ScaledObjects) for kubernetes-validate, "
          "%d KEDA checked here; references and pod rules ok; external Secrets: %s"
          % (len(objects), len(builtin) - derived, derived, len(keda),
             ", ".join(sorted(external)) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
