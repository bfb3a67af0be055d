"""The Kubernetes API emulator driven by the official Python `kubernetes` client: another real client
whose expectations (status codes, Status bodies, list/watch shapes) the emulator must meet."""

import os
import subprocess
import tempfile
import unittest

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

EMULATOR = os.environ.get("KUBE_EMULATOR_BIN", "kube-emulator")

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.reference.test"},
    "spec": {
        "group": "reference.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}


class EmulatorWithPythonClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        kubeconfig = os.path.join(cls.dir.name, "kubeconfig")
        cls.proc = subprocess.Popen([EMULATOR, "--write-kubeconfig", kubeconfig, "--bookmark-seconds", "1"],
                                    stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        assert line.startswith("listening on "), line
        config.load_kube_config(config_file=kubeconfig)
        cls.core = client.CoreV1Api()
        cls.apps = client.AppsV1Api()
        cls.custom = client.CustomObjectsApi()
        cls.core.create_namespace({"metadata": {"name": "py"}})
        client.ApiextensionsV1Api().create_custom_resource_definition(WIDGET_CRD)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.dir.cleanup()

    def test_secret_round_trip_and_errors(self):
        s = self.core.create_namespaced_secret("py", {"metadata": {"name": "s1", "labels": {"app": "x"}}, "stringData": {"k": "v"}})
        self.assertEqual(s.data, {"k": "dg=="})
        self.assertEqual(s.type, "Opaque")
        got = self.core.read_namespaced_secret("s1", "py")
        self.assertEqual(got.metadata.uid, s.metadata.uid)
        with self.assertRaises(ApiException) as e:
            self.core.read_namespaced_secret("missing", "py")
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(ApiException) as e:
            self.core.create_namespaced_secret("py", {"metadata": {"name": "s1"}})
        self.assertEqual(e.exception.status, 409)
        listed = self.core.list_namespaced_secret("py", label_selector="app in (x,y)")
        self.assertEqual([i.metadata.name for i in listed.items], ["s1"])
        self.assertTrue(listed.metadata.resource_version)

    def test_custom_objects_validation_status_and_merge_patch(self):
        w = self.custom.create_namespaced_custom_object("reference.test", "v1", "py", "widgets",
                                                        {"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 2}})
        self.assertEqual(w["metadata"]["generation"], 1)
        with self.assertRaises(ApiException) as e:
            self.custom.create_namespaced_custom_object("reference.test", "v1", "py", "widgets",
                                                        {"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 0}})
        self.assertEqual(e.exception.status, 422)
        self.assertIn("spec.size", e.exception.body)
        w = self.custom.patch_namespaced_custom_object("reference.test", "v1", "py", "widgets", "w1", {"spec": {"size": 3}})
        self.assertEqual(w["metadata"]["generation"], 2)
        w = self.custom.patch_namespaced_custom_object_status("reference.test", "v1", "py", "widgets", "w1", {"status": {"phase": "ok"}})
        self.assertEqual(w["status"]["phase"], "ok")
        self.assertEqual(w["metadata"]["generation"], 2)

    def test_watch_delivers_events_from_a_resource_version(self):
        rv = self.core.list_namespaced_config_map("py").metadata.resource_version
        self.core.create_namespaced_config_map("py", {"metadata": {"name": "c1"}, "data": {"a": "1"}})
        self.core.patch_namespaced_config_map("c1", "py", {"data": {"a": "2"}})
        events = []
        for ev in watch.Watch().stream(self.core.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=2):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 2:
                break
        self.assertEqual(events, [("ADDED", "c1"), ("MODIFIED", "c1")])

    def test_deployment_revisions_are_recorded(self):
        dep = {"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
        self.apps.create_namespaced_deployment("py", dep)
        for w in watch.Watch().stream(self.apps.list_namespaced_deployment, "py", timeout_seconds=5):
            annotations = w["object"].metadata.annotations or {}
            if annotations.get("deployment.kubernetes.io/revision") == "1":
                break
        else:
            self.fail("no revision annotation")
        d = self.apps.read_namespaced_deployment("web", "py")
        self.assertEqual(d.status.observed_generation, 1)


if __name__ == "__main__":
    unittest.main()
