"""The chart installed, upgraded and uninstalled by the real helm against the Kubernetes API emulator:
release storage in Secrets, the CRDs as templates (upgraded by `helm upgrade`, kept on uninstall),
the post-install hook that creates the access policy, and every optional object."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "managed-secrets"
EMULATOR = os.environ.get("KUBE_EMULATOR_BIN", "kube-emulator")
HELM = os.environ.get("HELM", str(ROOT / ".tools" / "bin" / "helm"))
NS = "managed-secrets"

SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}

RULES = [{"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
          "secrets": ["$(labels.env)/$(namespace)/*"]}]
OPTIONS = [
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "networkPolicy.enabled=true",
    "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]',
    "--set", "grafanaDashboard.enabled=true",
    "--set-json", "accessPolicy.rules=" + json.dumps(RULES),
]


def crd_files():
    return {yaml.safe_load(p.read_text())["metadata"]["name"]: yaml.safe_load(p.read_text())
            for p in sorted((ROOT / "crds").glob("*.yaml"))}


class ChartOnEmulator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.kubeconfig = os.path.join(cls.dir.name, "kubeconfig")
        cls.proc = subprocess.Popen([EMULATOR, "--write-kubeconfig", cls.kubeconfig],
                                    stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        assert line.startswith("listening on "), line
        config.load_kube_config(config_file=cls.kubeconfig)
        cls.core = client.CoreV1Api()
        cls.apps = client.AppsV1Api()
        cls.custom = client.CustomObjectsApi()
        cls.ext = client.ApiextensionsV1Api()
        cls.rbac = client.RbacAuthorizationV1Api()
        cls.ext.create_custom_resource_definition(SERVICE_MONITOR_CRD)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.dir.cleanup()

    def helm(self, *args):
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, HELM_CACHE_HOME=self.dir.name + "/cache",
                   HELM_CONFIG_HOME=self.dir.name + "/config", HELM_DATA_HOME=self.dir.name + "/data")
        out = subprocess.run([HELM, *args], env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, f"helm {' '.join(args)}\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def release_secrets(self):
        return sorted(s.metadata.name for s in self.core.list_namespaced_secret(NS, label_selector="owner=helm,name=ms").items)

    def exists(self, read, *args):
        try:
            read(*args)
            return True
        except ApiException as e:
            self.assertEqual(e.status, 404)
            return False

    def test_install_upgrade_uninstall_and_reinstall(self):
        self.helm("install", "ms", str(CHART), "-n", NS, "--create-namespace", *OPTIONS)

        # Release storage: one Secret per revision, as helm writes it.
        self.assertEqual(self.release_secrets(), ["sh.helm.release.v1.ms.v1"])
        stored = self.core.read_namespaced_secret("sh.helm.release.v1.ms.v1", NS)
        self.assertEqual(stored.type, "helm.sh/release.v1")
        self.assertEqual(stored.metadata.labels["status"], "deployed")

        # The Deployment: two replicas, rolling updates, leader election on the release's Lease.
        d = self.apps.read_namespaced_deployment("ms", NS)
        self.assertEqual(d.spec.replicas, 2)
        self.assertEqual(d.spec.strategy.type, "RollingUpdate")
        env = {e.name: e.value for e in d.spec.template.spec.containers[0].env}
        self.assertEqual(env["MANAGED_SECRETS_LEADER_ELECTION"], "true")
        self.assertEqual(env["MANAGED_SECRETS_LEASE_NAME"], "ms-leader")
        self.assertEqual(env["MANAGED_SECRETS_LEASE_NAMESPACE"], NS)
        self.assertEqual(d.spec.template.spec.containers[0].image, "ghcr.io/managed-secrets/managed-secrets:" +
                         yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
        self.assertEqual([c.topology_key for c in d.spec.template.spec.topology_spread_constraints],
                         ["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
        pdb = client.PolicyV1Api().read_namespaced_pod_disruption_budget("ms", NS)
        self.assertEqual(pdb.spec.max_unavailable, 1)
        self.assertEqual(pdb.spec.selector.match_labels, d.spec.selector.match_labels)
        role = self.rbac.read_namespaced_role("ms-leader-election", NS)
        self.assertEqual(role.rules[1].resource_names, ["ms-leader"])

        # The CRDs, from the templates: what crds/ holds, kept on uninstall.
        for name, want in crd_files().items():
            got = self.ext.read_custom_resource_definition(name)
            self.assertEqual(got.metadata.annotations["helm.sh/resource-policy"], "keep")
            self.assertEqual(got.metadata.annotations["meta.helm.sh/release-name"], "ms")
            self.assertEqual(client.ApiClient().sanitize_for_serialization(got.spec)["versions"][0]["schema"],
                             want["spec"]["versions"][0]["schema"])

        # Optional objects, all asked for here.
        sm = self.custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", NS, "servicemonitors", "ms")
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "http")
        np = client.NetworkingV1Api().read_namespaced_network_policy("ms", NS)
        self.assertEqual(np.spec.ingress[0].ports[0].port, 8080)
        cm = self.core.read_namespaced_config_map("ms-dashboard", NS)
        self.assertEqual(cm.metadata.labels["grafana_dashboard"], "1")
        self.assertEqual(json.loads(cm.data["managed-secrets.json"])["uid"], "managed-secrets")
        # The access policy: a post-install hook, created once its CRD existed.
        policy = self.custom.get_cluster_custom_object("managedsecrets.io", "v1alpha1", "secretaccesspolicies", "ms")
        self.assertEqual(policy["spec"]["rules"], RULES)

        # helm upgrade upgrades the CRDs (a chart's crds/ directory never would) and the rest.
        newer = Path(self.dir.name) / "newer-chart"
        shutil.copytree(CHART, newer)
        crd_path = newer / "files" / "crds" / "managedsecrets.io_managedsecrets.yaml"
        crd = yaml.safe_load(crd_path.read_text())
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "upgraded by the chart test"
        crd_path.write_text(yaml.safe_dump(crd))
        self.helm("upgrade", "ms", str(newer), "-n", NS, *OPTIONS, "--set", "replicaCount=3")
        got = self.ext.read_custom_resource_definition("managedsecrets.managedsecrets.io")
        self.assertEqual(got.spec.versions[0].schema.open_apiv3_schema.description, "upgraded by the chart test")
        self.assertEqual(self.apps.read_namespaced_deployment("ms", NS).spec.replicas, 3)
        self.assertEqual(self.release_secrets(), ["sh.helm.release.v1.ms.v1", "sh.helm.release.v1.ms.v2"])
        self.assertIn("deployed", self.helm("status", "ms", "-n", NS))

        # helm uninstall: the release's objects go, the CRDs (and so every ManagedSecret) stay.
        self.helm("uninstall", "ms", "-n", NS)
        self.assertEqual(self.release_secrets(), [])
        self.assertFalse(self.exists(self.apps.read_namespaced_deployment, "ms", NS))
        self.assertFalse(self.exists(client.PolicyV1Api().read_namespaced_pod_disruption_budget, "ms", NS))
        self.assertFalse(self.exists(self.rbac.read_namespaced_role, "ms-leader-election", NS))
        self.assertFalse(self.exists(self.core.read_namespaced_service_account, "ms", NS))
        self.assertFalse(self.exists(self.rbac.read_cluster_role, f"{NS}-ms"))
        for name in crd_files():
            self.assertTrue(self.exists(self.ext.read_custom_resource_definition, name), name)

        # Installing again adopts the kept CRDs (they still name the release).
        self.helm("install", "ms", str(CHART), "-n", NS)
        self.assertEqual(self.apps.read_namespaced_deployment("ms", NS).spec.replicas, 2)
        got = self.ext.read_custom_resource_definition("managedsecrets.managedsecrets.io")
        self.assertNotEqual(got.spec.versions[0].schema.open_apiv3_schema.description, "upgraded by the chart test")
        self.helm("uninstall", "ms", "-n", NS)

    def test_crds_install_false_leaves_crds_alone(self):
        out = self.helm("template", "x", str(CHART), "-n", "other", "--set", "crds.install=false")
        kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
        self.assertNotIn("CustomResourceDefinition", kinds)
        self.assertIn("Deployment", kinds)


if __name__ == "__main__":
    unittest.main()
