"""The official Kubernetes Python client against a running keelson server.

Usage: python smoke.py KUBECONFIG. Exits non-zero (with a message) on the first behaviour
that differs from what the client expects of Kubernetes.
"""

import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def expect_status(call, code, reason):
    try:
        call()
    except ApiException as e:
        body = json.loads(e.body)
        assert e.status == code, (e.status, e.body)
        assert body["kind"] == "Status" and body["reason"] == reason, e.body
        return
    raise AssertionError(f"expected {code} {reason}")


def main():
    config.load_kube_config(config_file=sys.argv[1])
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    version = client.VersionApi().get_code()
    assert version.major == "1", version

    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings", labels={"app": "py"}), data={"color": "blue"})
    created = core.create_namespaced_config_map("py", cm)
    first_rv = int(created.metadata.resource_version)
    assert created.metadata.uid and first_rv > 0

    read = core.read_namespaced_config_map("settings", "py")
    assert read.data == {"color": "blue"}

    patched = core.patch_namespaced_config_map("settings", "py", {"data": {"color": "green"}})
    assert patched.data["color"] == "green" and int(patched.metadata.resource_version) > first_rv

    read.data["color"] = "red"  # `read` is stale now: replacing it conflicts.
    expect_status(lambda: core.replace_namespaced_config_map("settings", "py", read), 409, "Conflict")
    expect_status(lambda: core.create_namespaced_config_map("py", cm), 409, "AlreadyExists")
    expect_status(lambda: core.read_namespaced_config_map("missing", "py"), 404, "NotFound")

    selected = core.list_namespaced_config_map("py", label_selector="app=py")
    assert [c.metadata.name for c in selected.items] == ["settings"]

    # A watch from the list's resourceVersion sees the next change.
    stream = watch.Watch()
    events = stream.stream(core.list_namespaced_config_map, "py", resource_version=selected.metadata.resource_version, timeout_seconds=10)
    core.delete_namespaced_config_map("settings", "py")
    event = next(events)
    stream.stop()
    assert event["type"] == "DELETED" and event["object"].metadata.name == "settings", event["type"]

    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")]),
            ),
        ),
    )
    apps.create_namespaced_deployment("py", deployment)
    apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 4}})
    scale = apps.read_namespaced_deployment_scale("web", "py")
    assert scale.spec.replicas == 4 and scale.status.selector == "app=web", scale
    assert apps.read_namespaced_deployment("web", "py").metadata.generation == 2

    # A deleted namespace is Terminating until the namespace controller has emptied it.
    core.delete_namespace("py")
    deadline = time.monotonic() + 30
    while True:
        try:
            phase = core.read_namespace("py").status.phase
            assert phase == "Terminating", phase
        except ApiException as e:
            assert e.status == 404 and json.loads(e.body)["reason"] == "NotFound", e.body
            break
        assert time.monotonic() < deadline, "namespace py still there after 30 s"
        time.sleep(0.2)
    print("ok")


if __name__ == "__main__":
    main()
