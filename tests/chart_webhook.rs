//! The chart's admission webhook as rendered by the real helm: the configuration the issue asks
//! for, names that agree between the Deployment's flags, the Service, the RBAC and cert-manager's
//! objects, the NetworkPolicy, and nothing of it when it is off.

mod support;
use serde_json::{json, Value};
use support::rbac::render;

fn set(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// The operator container's environment, by name.
fn env(docs: &[Value]) -> std::collections::BTreeMap<String, String> {
    let d = doc(docs, "Deployment", "managed-secrets").expect("Deployment");
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn the_webhook_configuration_is_what_the_issue_asks_and_its_names_agree() {
    let docs = render("ops", &[]);
    let vwc = doc(
        &docs,
        "ValidatingWebhookConfiguration",
        "ops-managed-secrets",
    )
    .expect("VWC");
    let hooks = vwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    for w in hooks {
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["timeoutSeconds"], 3);
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(w["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
        assert_eq!(
            w["clientConfig"]["service"]["name"],
            "managed-secrets-webhook"
        );
        assert_eq!(w["clientConfig"]["service"]["port"], 443);
        assert!(
            w["clientConfig"].get("caBundle").is_none(),
            "kept by the operator"
        );
    }
    assert_eq!(hooks[0]["rules"][0]["resources"], json!(["managedsecrets"]));
    assert_eq!(
        hooks[0]["namespaceSelector"]["matchExpressions"],
        json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ops"]}])
    );
    assert_eq!(
        hooks[1]["rules"][0]["resources"],
        json!(["secretaccesspolicies"])
    );
    // The Service sends 443 to the container's webhook port, which the operator listens on.
    let svc = doc(&docs, "Service", "managed-secrets-webhook").expect("Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    let d = doc(&docs, "Deployment", "managed-secrets").unwrap();
    let ports = &d["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(ports
        .as_array()
        .unwrap()
        .contains(&json!({"name": "webhook", "containerPort": 9443})));
    let e = env(&docs);
    assert_eq!(e["MANAGED_SECRETS_WEBHOOK_ADDR"], "0.0.0.0:9443");
    assert_eq!(
        e["MANAGED_SECRETS_WEBHOOK_SERVICE"],
        "managed-secrets-webhook"
    );
    assert_eq!(
        e["MANAGED_SECRETS_WEBHOOK_CONFIGURATION"],
        "ops-managed-secrets"
    );
    assert_eq!(
        e["MANAGED_SECRETS_WEBHOOK_CERT_SECRET"],
        "managed-secrets-webhook-cert"
    );
    assert_eq!(e["MANAGED_SECRETS_WEBHOOK_CERT_ISSUER"], "operator");
    // The operator's flags accept what the chart passes.
    let argv = [
        "managed-secrets",
        "run",
        "--webhook-addr",
        &e["MANAGED_SECRETS_WEBHOOK_ADDR"],
        "--webhook-ca-validity",
        &e["MANAGED_SECRETS_WEBHOOK_CA_VALIDITY"],
        "--webhook-cert-validity",
        &e["MANAGED_SECRETS_WEBHOOK_CERT_VALIDITY"],
    ];
    let cli = <managed_secrets::config::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let managed_secrets::config::Command::Run(args) = cli.command else {
        panic!("run")
    };
    assert!(args.validate().unwrap().webhook.is_some());
    // With watched namespaces, only those are judged.
    let docs = render(
        "ops",
        &set(&["watchNamespaces={apps}", "webhook.failurePolicy=Fail"]),
    );
    let vwc = doc(
        &docs,
        "ValidatingWebhookConfiguration",
        "ops-managed-secrets",
    )
    .unwrap();
    assert_eq!(vwc["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(
        vwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][1],
        json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps"]})
    );
}

#[test]
fn cert_manager_signs_with_a_ca_of_its_own_and_the_injector_names_that_certificate() {
    let docs = render("ops", &set(&["webhook.certificate.issuer=certManager"]));
    let vwc = doc(
        &docs,
        "ValidatingWebhookConfiguration",
        "ops-managed-secrets",
    )
    .unwrap();
    assert_eq!(
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "ops/managed-secrets-webhook"
    );
    let serving = doc(&docs, "Certificate", "managed-secrets-webhook").expect("Certificate");
    assert_eq!(serving["metadata"]["namespace"], "ops");
    assert_eq!(
        serving["spec"]["secretName"],
        "managed-secrets-webhook-cert"
    );
    assert!(serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&json!("managed-secrets-webhook.ops.svc")));
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": "managed-secrets-webhook-ca"})
    );
    let ca = doc(&docs, "Certificate", "managed-secrets-webhook-ca").expect("CA");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        doc(&docs, "Issuer", "managed-secrets-webhook-ca").unwrap()["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let e = env(&docs);
    assert_eq!(e["MANAGED_SECRETS_WEBHOOK_CERT_ISSUER"], "external");
    assert_eq!(
        e["MANAGED_SECRETS_WEBHOOK_CERT_SECRET"],
        "managed-secrets-webhook-cert"
    );
    // A named issuer replaces the release's own CA.
    let docs = render(
        "ops",
        &set(&[
            "webhook.certificate.issuer=certManager",
            "webhook.certificate.certManagerIssuerRef.kind=ClusterIssuer",
            "webhook.certificate.certManagerIssuerRef.name=corp",
        ]),
    );
    assert!(doc(&docs, "Certificate", "managed-secrets-webhook-ca").is_none());
    assert_eq!(
        doc(&docs, "Certificate", "managed-secrets-webhook").unwrap()["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp"})
    );
}

#[test]
fn the_network_policy_admits_the_webhook_port_and_nothing_is_rendered_when_it_is_off() {
    let docs = render(
        "ops",
        &set(&[
            "networkPolicy.enabled=true",
            "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/16",
        ]),
    );
    let np = doc(&docs, "NetworkPolicy", "managed-secrets").expect("NetworkPolicy");
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"protocol": "TCP", "port": 9443}], "from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]}])
    );
    let docs = render("ops", &set(&["webhook.enabled=false"]));
    for kind in ["ValidatingWebhookConfiguration", "Certificate", "Issuer"] {
        assert!(!docs.iter().any(|d| d["kind"] == kind), "{kind}");
    }
    assert!(doc(&docs, "Service", "managed-secrets-webhook").is_none());
    assert!(!env(&docs).contains_key("MANAGED_SECRETS_WEBHOOK_ADDR"));
}
