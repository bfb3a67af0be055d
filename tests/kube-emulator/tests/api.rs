//! The emulator's behaviours, one test each, over plain HTTP.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const W: &str = "/apis/reference.test/v1/namespaces/ref/widgets";

fn widget(name: &str, size: i64) -> Value {
    json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": name, "namespace": "ref"}, "spec": {"size": size}})
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn discovery_serves_builtins_and_crds_until_deleted() {
    let api = start().await;
    let (c, v) = api.get("/api/v1").await;
    assert_eq!(c, 200);
    assert!(v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "secrets" && r["namespaced"] == true));
    let (_, v) = api.get("/apis/apps/v1").await;
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "deployments",
        "deployments/status",
        "statefulsets",
        "daemonsets",
        "replicasets",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    for gv in [
        "/apis/coordination.k8s.io/v1",
        "/apis/events.k8s.io/v1",
        "/apis/apiextensions.k8s.io/v1",
    ] {
        assert_eq!(api.get(gv).await.0, 200, "{gv}");
    }
    assert_eq!(api.get("/apis/reference.test/v1").await.0, 404);
    api.create_widget_crd().await;
    let (c, v) = api.get("/apis/reference.test/v1").await;
    assert_eq!(c, 200);
    assert_eq!(v["resources"][0]["name"], "widgets");
    assert_eq!(v["resources"][0]["singularName"], "widget");
    assert_eq!(v["resources"][1]["name"], "widgets/status");
    let (_, g) = api.get("/apis/reference.test").await;
    assert_eq!(g["preferredVersion"]["groupVersion"], "reference.test/v1");
    let (_, all) = api.get("/apis").await;
    assert!(all["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "reference.test"));
    api.post(W, widget("w1", 1)).await;
    let crd = api
        .wait_for(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.reference.test",
            |v| {
                v["status"]["conditions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
                    .unwrap_or(false)
            },
        )
        .await;
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    let (c, _) = api
        .delete(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.reference.test",
            None,
        )
        .await;
    assert_eq!(c, 200);
    assert_eq!(api.get("/apis/reference.test/v1").await.0, 404);
    assert_eq!(api.get(&format!("{W}/w1")).await.0, 404);
}

#[tokio::test]
async fn server_stamps_metadata_and_generation_tracks_spec_only() {
    let api = start().await;
    api.create_widget_crd().await;
    let (c, w) = api.post(W, widget("w1", 3)).await;
    assert_eq!(c, 201);
    assert_eq!(w["metadata"]["generation"], 1);
    assert!(w["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(w["metadata"]["creationTimestamp"].is_string());
    assert_eq!(
        w["metadata"]["managedFields"][0]["manager"],
        "emulator-tests"
    );
    let rv1 = rv(&w);
    let (_, w2) = api
        .patch(
            &format!("{W}/w1"),
            "application/merge-patch+json",
            json!({"spec": {"size": 4}}),
        )
        .await;
    assert_eq!(w2["metadata"]["generation"], 2);
    assert!(rv(&w2) > rv1);
    let (_, w3) = api
        .patch(
            &format!("{W}/w1/status"),
            "application/merge-patch+json",
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await;
    assert_eq!(
        w3["metadata"]["generation"], 2,
        "status writes keep generation"
    );
    let (_, w4) = api
        .patch(
            &format!("{W}/w1"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"a": "b"}}, "status": {"conditions": []}}),
        )
        .await;
    assert_eq!(
        w4["metadata"]["generation"], 2,
        "metadata-only writes keep generation"
    );
    assert_eq!(
        w4["status"]["conditions"][0]["type"], "Ready",
        "main endpoint ignores status"
    );
    // One cluster-wide counter: a Secret created afterwards has a higher resourceVersion.
    let (_, s) = api.post("/api/v1/namespaces/ref/secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}})).await;
    assert!(rv(&s) > rv(&w4));
    assert!(s["metadata"].get("generation").is_none());
}

#[tokio::test]
async fn errors_have_real_status_bodies() {
    let api = start().await;
    api.create_widget_crd().await;
    api.post(W, widget("w1", 3)).await;
    let (c, e) = api.post(W, widget("w1", 3)).await;
    assert_eq!(c, 409);
    assert_eq!(
        e,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "widgets.reference.test \"w1\" already exists", "reason": "AlreadyExists", "details": {"name": "w1", "group": "reference.test", "kind": "widgets"}, "code": 409})
    );
    let (c, e) = api.get(&format!("{W}/nope")).await;
    assert_eq!(c, 404);
    assert_eq!(e["message"], "widgets.reference.test \"nope\" not found");
    let (c, e) = api.get("/api/v1/namespaces/ref/configmaps/nope").await;
    assert_eq!(c, 404);
    assert_eq!(e["details"], json!({"name": "nope", "kind": "configmaps"}));
    let (c, _) = api
        .post(
            "/api/v1/namespaces/missing/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(c, 404, "namespace must exist");
}

#[tokio::test]
async fn update_with_stale_resource_version_conflicts() {
    let api = start().await;
    api.create_widget_crd().await;
    let (_, w) = api.post(W, widget("w1", 3)).await;
    api.patch(
        &format!("{W}/w1"),
        "application/merge-patch+json",
        json!({"spec": {"size": 4}}),
    )
    .await;
    let mut stale = w.clone();
    stale["spec"]["size"] = json!(9);
    let (c, e) = api.put(&format!("{W}/w1"), stale).await;
    assert_eq!(c, 409);
    assert_eq!(e["reason"], "Conflict");
    let (_, cur) = api.get(&format!("{W}/w1")).await;
    let mut fresh = cur.clone();
    fresh["spec"]["size"] = json!(9);
    let (c, v) = api.put(&format!("{W}/w1"), fresh).await;
    assert_eq!(c, 200);
    assert_eq!(v["spec"]["size"], 9);
}

#[tokio::test]
async fn list_supports_selectors_and_pagination() {
    let api = start().await;
    api.create_widget_crd().await;
    for (n, tier) in [("a", "x"), ("b", "y"), ("c", "z")] {
        let mut w = widget(n, 1);
        w["metadata"]["labels"] = json!({"tier": tier});
        api.post(W, w).await;
    }
    let names = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (_, l) = api.get(W).await;
    assert_eq!(l["kind"], "WidgetList");
    assert!(l["metadata"]["resourceVersion"].is_string());
    assert_eq!(names(&l), ["a", "b", "c"]);
    let (_, l) = api
        .get(&format!("{W}?labelSelector=tier%20in%20(x,z)"))
        .await;
    assert_eq!(names(&l), ["a", "c"]);
    let (_, l) = api.get(&format!("{W}?labelSelector=tier!%3Dx")).await;
    assert_eq!(names(&l), ["b", "c"]);
    let (_, l) = api
        .get(&format!("{W}?fieldSelector=metadata.name%3Db"))
        .await;
    assert_eq!(names(&l), ["b"]);
    let (_, p1) = api.get(&format!("{W}?limit=2")).await;
    assert_eq!(names(&p1), ["a", "b"]);
    assert_eq!(p1["metadata"]["remainingItemCount"], 1);
    let cont = p1["metadata"]["continue"].as_str().unwrap();
    let (_, p2) = api.get(&format!("{W}?limit=2&continue={cont}")).await;
    assert_eq!(names(&p2), ["c"]);
    let (_, all) = api.get("/apis/reference.test/v1/widgets").await;
    assert_eq!(names(&all).len(), 3, "list across namespaces");
}

#[tokio::test]
async fn json_merge_and_strategic_patches() {
    let api = start().await;
    api.create_widget_crd().await;
    api.post(W, widget("w1", 3)).await;
    let (c, v) = api
        .patch(
            &format!("{W}/w1"),
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/size", "value": 5}]),
        )
        .await;
    assert_eq!((c, v["spec"]["size"].clone()), (200, json!(5)));
    let (c, e) = api
        .patch(
            &format!("{W}/w1"),
            "application/json-patch+json",
            json!([{"op": "test", "path": "/spec/size", "value": 99}]),
        )
        .await;
    assert_eq!((c, e["reason"].clone()), (422, json!("Invalid")));
    // The API server's JSON Patch treats `test` for null on a missing path as passing (kube-rs'
    // finalizer helper relies on it).
    let (c, v) = api
        .patch(&format!("{W}/w1"), "application/json-patch+json", json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]))
        .await;
    assert_eq!(
        (c, v["metadata"]["finalizers"].clone()),
        (200, json!(["x/y"]))
    );
    let (c, e) = api
        .patch(
            &format!("{W}/w1"),
            "application/strategic-merge-patch+json",
            json!({"spec": {"size": 6}}),
        )
        .await;
    assert_eq!(
        (c, e["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}]}, {"name": "side", "image": "busybox"}]}}}});
    let (c, _) = api
        .post("/apis/apps/v1/namespaces/ref/deployments", dep)
        .await;
    assert_eq!(c, 201);
    let (c, d) = api
        .patch("/apis/apps/v1/namespaces/ref/deployments/web", "application/strategic-merge-patch+json", json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}}}}))
        .await;
    assert_eq!(c, 200);
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2, "merged by name, not replaced");
    assert_eq!(cs[0]["image"], "nginx:2");
    assert_eq!(
        cs[0]["env"].as_array().unwrap().len(),
        2,
        "env merged by name"
    );
}

#[tokio::test]
async fn server_side_apply_tracks_owners_conflicts_and_removals() {
    let api = start().await;
    api.create_widget_crd().await;
    let p = format!("{W}/w2?fieldManager=alice");
    let (c, v) = api.apply(&p, json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 7, "color": "red"}})).await;
    assert_eq!(c, 201, "apply creates");
    assert_eq!(v["metadata"]["managedFields"][0]["operation"], "Apply");
    assert_eq!(
        v["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:spec": {"f:color": {}, "f:size": {}}})
    );
    let (c, e) = api.apply(&format!("{W}/w2?fieldManager=bob"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 8, "color": "red"}})).await;
    assert_eq!(c, 409);
    assert_eq!(
        e["message"],
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.size"
    );
    assert_eq!(e["details"]["causes"][0]["field"], ".spec.size");
    let (c, v) = api.apply(&format!("{W}/w2?fieldManager=bob&force=true"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 8, "color": "red"}})).await;
    assert_eq!(c, 200);
    assert_eq!(v["spec"]["size"], 8);
    let mf = v["metadata"]["managedFields"].as_array().unwrap();
    let alice = mf.iter().find(|m| m["manager"] == "alice").unwrap();
    assert_eq!(
        alice["fieldsV1"],
        json!({"f:spec": {"f:color": {}}}),
        "force takes ownership"
    );
    // Re-applying the same config is a no-op: same resourceVersion.
    let (_, again) = api.apply(&format!("{W}/w2?fieldManager=bob"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 8, "color": "red"}})).await;
    assert_eq!(rv(&again), rv(&v));
    // A field bob stops applying stays while alice still owns it; an unshared one goes.
    let (_, v) = api.apply(&format!("{W}/w2?fieldManager=bob"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2", "labels": {"x": "1"}}, "spec": {"size": 8}})).await;
    assert_eq!(v["spec"]["color"], "red");
    let (_, v) = api.apply(&format!("{W}/w2?fieldManager=bob"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 8}})).await;
    assert!(
        v["metadata"].get("labels").is_none(),
        "label no longer applied by its only owner is removed: {v}"
    );
    // A list item (keyed by name) the manager stops applying goes as a whole, key fields and all.
    let dp = "/apis/apps/v1/namespaces/ref/deployments/two?fieldManager=op";
    let dep = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "two"},
        "spec": {"selector": {"matchLabels": {"app": "two"}}, "template": {"metadata": {"labels": {"app": "two"}}, "spec": {"containers": containers}}}})
    };
    api.apply(
        dp,
        dep(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1", "args": ["x"]}])),
    )
    .await;
    let (c, v) = api
        .apply(dp, dep(json!([{"name": "a", "image": "a:1"}])))
        .await;
    assert_eq!(c, 200);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect::<Vec<_>>(),
        vec![json!("a")],
        "{v}"
    );
    // Status apply goes through the status subresource and leaves spec alone.
    let (c, v) = api.apply(&format!("{W}/w2/status?fieldManager=alice&force=true"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "w2"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}})).await;
    assert_eq!(c, 200);
    assert_eq!(v["status"]["conditions"][0]["status"], "False");
    assert_eq!(v["metadata"]["generation"], 2);
    // Secrets: stringData is folded into data, and an identical re-apply does not write.
    let sp = "/api/v1/namespaces/ref/secrets/s1?fieldManager=op";
    let (c, s) = api.apply(sp, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "type": "Opaque", "stringData": {"password": "x"}})).await;
    assert_eq!(c, 201);
    assert_eq!(s["data"]["password"], "eA==");
    let (_, s2) = api.apply(sp, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "type": "Opaque", "stringData": {"password": "x"}})).await;
    assert_eq!(rv(&s2), rv(&s));
    let (c, e) = api.apply(sp, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "type": "kubernetes.io/tls"})).await;
    assert_eq!(c, 422);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("field is immutable"));
}

/// A manager is its name and operation: what a client created or updated under a name is not
/// its apply's, until the client moves that entry to `Apply` by writing managedFields itself.
#[tokio::test]
async fn an_update_entry_is_another_manager_to_apply_until_migrated() {
    let api = start().await;
    let sp = "/api/v1/namespaces/ref/secrets";
    let (c, s) = api
        .post(
            &format!("{sp}?fieldManager=op"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "made", "labels": {"l": "1"}}, "data": {"a": "YQ==", "b": "Yg=="}}),
        )
        .await;
    assert_eq!(c, 201);
    let mf = &s["metadata"]["managedFields"];
    assert_eq!(mf.as_array().unwrap().len(), 1, "{mf}");
    assert_eq!(mf[0]["manager"], "op");
    assert_eq!(mf[0]["operation"], "Update");
    let p = format!("{sp}/made?fieldManager=op");
    let applied = |data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "made"}, "data": data});
    // Changing a value the same name created conflicts, naming the update manager and version.
    let (c, e) = api.apply(&p, applied(json!({"a": "Yw=="}))).await;
    assert_eq!(c, 409, "{e}");
    assert_eq!(
        e["message"],
        "Apply failed with 1 conflict: conflict with \"op\" using v1: .data.a"
    );
    // Applying the same value shares it; a field the update entry holds stays when the apply
    // stops naming it.
    let (c, _) = api
        .apply(&p, applied(json!({"a": "YQ==", "b": "Yg=="})))
        .await;
    assert_eq!(c, 200);
    let (_, s) = api.apply(&p, applied(json!({"a": "YQ=="}))).await;
    assert_eq!(
        s["data"]["b"], "Yg==",
        "still held by the update entry: {s}"
    );
    // Migrated (the entry's fields merged into the apply entry, the update entry gone): the
    // apply owns them, and the next apply that leaves one out removes it.
    let mut entries = s["metadata"]["managedFields"].as_array().unwrap().clone();
    let update = entries
        .iter()
        .position(|e| e["operation"] == "Update")
        .unwrap();
    let fields = entries.remove(update)["fieldsV1"].clone();
    let apply = entries
        .iter_mut()
        .find(|e| e["operation"] == "Apply")
        .unwrap();
    apply["fieldsV1"]["f:data"]["f:b"] = fields["f:data"]["f:b"].clone();
    apply["fieldsV1"]["f:metadata"] = fields["f:metadata"].clone();
    let rv = s["metadata"]["resourceVersion"].as_str().unwrap();
    let (c, m) = api
        .patch(
            &format!("{sp}/made"),
            "application/json-patch+json",
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                   {"op": "replace", "path": "/metadata/managedFields", "value": entries}]),
        )
        .await;
    assert_eq!(c, 200, "{m}");
    let mf = m["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1, "{m}");
    assert_eq!(mf[0]["operation"], "Apply");
    let (_, s) = api.apply(&p, applied(json!({"a": "YQ=="}))).await;
    assert!(s["data"].get("b").is_none(), "{s}");
    assert!(s["metadata"].get("labels").is_none(), "{s}");
    // A list that does not decode keeps them (a client that does not understand the field never
    // strips it); an empty list resets them.
    let (c, k) = api
        .patch(
            &format!("{sp}/made"),
            "application/merge-patch+json",
            json!({"metadata": {"managedFields": [{"manager": "x", "operation": "Frobnicate", "fieldsType": "FieldsV1"}]}}),
        )
        .await;
    assert_eq!(c, 200);
    assert_eq!(
        k["metadata"]["managedFields"],
        s["metadata"]["managedFields"]
    );
    let (c, k) = api
        .patch(
            &format!("{sp}/made"),
            "application/merge-patch+json",
            json!({"metadata": {"managedFields": []}}),
        )
        .await;
    assert_eq!(c, 200);
    assert!(k["metadata"].get("managedFields").is_none(), "{k}");
}

#[tokio::test]
async fn finalizers_hold_deletion_and_gc_collects_dependents() {
    let api = start().await;
    let cm = "/api/v1/namespaces/ref/configmaps";
    api.post(cm, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fin", "finalizers": ["reference.test/hold"]}})).await;
    let (c, v) = api.delete(&format!("{cm}/fin"), None).await;
    assert_eq!(c, 200);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        api.get(&format!("{cm}/fin")).await.0,
        200,
        "finalizer keeps it"
    );
    api.patch(
        &format!("{cm}/fin"),
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/metadata/finalizers"}]),
    )
    .await;
    assert_eq!(api.get(&format!("{cm}/fin")).await.0, 404);

    // Background propagation: the dependent is collected after the owner is gone.
    let (_, owner) = api
        .post(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}),
        )
        .await;
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    api.post("/api/v1/namespaces/ref/secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owned", "ownerReferences": oref}, "stringData": {"k": "v"}})).await;
    api.delete(&format!("{cm}/owner"), None).await;
    api.wait_gone("/api/v1/namespaces/ref/secrets/owned").await;

    // Foreground: the owner waits (foregroundDeletion finalizer) until dependents are gone.
    let (_, owner) = api
        .post(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fg"}}),
        )
        .await;
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "fg", "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    api.post("/api/v1/namespaces/ref/secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dep", "ownerReferences": oref}})).await;
    let (_, v) = api.delete(&format!("{cm}/fg"), Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}))).await;
    assert_eq!(v["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    api.wait_gone("/api/v1/namespaces/ref/secrets/dep").await;
    api.wait_gone(&format!("{cm}/fg")).await;

    // Orphan: the owner goes, the dependent stays without the ownerReference.
    let (_, owner) = api
        .post(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "orph"}}),
        )
        .await;
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "orph", "uid": owner["metadata"]["uid"], "controller": true}]);
    api.post("/api/v1/namespaces/ref/secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kept", "ownerReferences": oref}})).await;
    api.delete(&format!("{cm}/orph?propagationPolicy=Orphan"), None)
        .await;
    api.wait_gone(&format!("{cm}/orph")).await;
    let kept = api
        .wait_for("/api/v1/namespaces/ref/secrets/kept", |v| {
            v["metadata"].get("ownerReferences").is_none()
        })
        .await;
    assert_eq!(kept["metadata"]["name"], "kept");

    // deletecollection with a selector.
    for n in ["x1", "x2", "y1"] {
        api.post(cm, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "labels": {"g": &n[..1]}}})).await;
    }
    let (c, _) = api.delete(&format!("{cm}?labelSelector=g%3Dx"), None).await;
    assert_eq!(c, 200);
    assert_eq!(api.get(&format!("{cm}/x1")).await.0, 404);
    assert_eq!(api.get(&format!("{cm}/y1")).await.0, 200);

    // Deleting a namespace removes what is in it.
    api.delete("/api/v1/namespaces/ref", None).await;
    api.wait_gone("/api/v1/namespaces/ref").await;
    assert_eq!(api.get(&format!("{cm}/y1")).await.0, 404);
}

#[tokio::test]
async fn watch_streams_changes_bookmarks_and_gone() {
    let api = start().await;
    let cm = "/api/v1/namespaces/ref/configmaps";
    let (_, l) = api.get(cm).await;
    let from = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let wpath =
        format!("{cm}?watch=1&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=3");
    let watch = api.watch_lines(&wpath, 4, Duration::from_secs(5));
    // The watch starts from a resourceVersion: it replays what happened after it, whenever it connects.
    let writer = async {
        api.post(cm, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "labels": {"app": "x"}}, "data": {"a": "1"}})).await;
        api.patch(
            &format!("{cm}/cm1"),
            "application/merge-patch+json",
            json!({"data": {"a": "2"}}),
        )
        .await;
        api.delete(&format!("{cm}/cm1"), None).await;
    };
    let (events, _) = tokio::join!(watch, writer);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]);
    assert_eq!(events[1]["object"]["data"]["a"], "2");
    assert!(events[3]["object"]["metadata"]["resourceVersion"].is_string());

    // Without a resourceVersion: synthetic ADDED for what exists.
    api.post(
        cm,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "here"}}),
    )
    .await;
    let ev = api
        .watch_lines(
            &format!("{cm}?watch=1&timeoutSeconds=1"),
            1,
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["metadata"]["name"], "here");
    // A selector that matches nothing: no lines; the server closes at timeoutSeconds.
    let started = tokio::time::Instant::now();
    let ev = api
        .watch_lines(
            &format!("{cm}?watch=1&labelSelector=app%3Dy&timeoutSeconds=1"),
            1,
            Duration::from_secs(5),
        )
        .await;
    assert!(ev.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at timeoutSeconds"
    );
    // History expired: watching from an old resourceVersion answers 410 Gone.
    api.send("POST", "/__admin/history/expire", "application/json", None)
        .await;
    let ev = api
        .watch_lines(
            &format!("{cm}?watch=1&resourceVersion={from}"),
            1,
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn label_selected_watch_sees_objects_enter_and_leave() {
    let api = start().await;
    let cm = "/api/v1/namespaces/ref/configmaps";
    api.post(
        cm,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    )
    .await;
    let (_, l) = api.get(cm).await;
    let from = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let wpath =
        format!("{cm}?watch=1&resourceVersion={from}&labelSelector=app%3Dx&timeoutSeconds=2");
    let watch = api.watch_lines(&wpath, 2, Duration::from_secs(4));
    // The watch starts from a resourceVersion: it replays what happened after it, whenever it connects.
    let writer = async {
        api.patch(
            &format!("{cm}/c"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"app": "x"}}}),
        )
        .await;
        api.patch(
            &format!("{cm}/c"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"app": "y"}}}),
        )
        .await;
    };
    let (events, _) = tokio::join!(watch, writer);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn crd_schema_is_enforced_with_field_paths() {
    let api = start().await;
    api.create_widget_crd().await;
    let mut bad = widget("bad", 0);
    bad["spec"] = json!({"size": "big", "color": "green"});
    let (c, e) = api.post(W, bad).await;
    assert_eq!(c, 422);
    assert_eq!(e["reason"], "Invalid");
    let causes = e["details"]["causes"].as_array().unwrap();
    assert!(causes
        .iter()
        .any(|c| c["field"] == "spec.size" && c["reason"] == "FieldValueTypeInvalid"));
    assert!(causes
        .iter()
        .any(|c| c["field"] == "spec.color" && c["reason"] == "FieldValueNotSupported"));
    let mut missing = widget("bad2", 1);
    missing["spec"] = json!({"color": "red"});
    let (c, e) = api.post(W, missing).await;
    assert_eq!(c, 422);
    assert_eq!(
        e["message"],
        "Widget.reference.test \"bad2\" is invalid: spec.size: Required value"
    );
    for (spec, field) in [
        (json!({"size": 0}), "spec.size"),
        (json!({"size": 101}), "spec.size"),
        (json!({"size": 1, "code": "ABC"}), "spec.code"),
        (json!({"size": 1, "code": "abcdefghij"}), "spec.code"),
    ] {
        let mut w = widget("b3", 1);
        w["spec"] = spec.clone();
        let (c, e) = api.post(W, w).await;
        assert_eq!(c, 422, "{spec}");
        assert_eq!(e["details"]["causes"][0]["field"], field, "{spec}: {e}");
    }
    let mut pruned = widget("p", 1);
    pruned["spec"]["unknown"] = json!(1);
    pruned["spec"]["free"] = json!({"any": {"thing": 1}});
    let (c, v) = api.post(W, pruned).await;
    assert_eq!(c, 201);
    assert!(v["spec"].get("unknown").is_none(), "unknown fields pruned");
    assert_eq!(
        v["spec"]["free"]["any"]["thing"], 1,
        "preserve-unknown-fields kept"
    );
    // Patches and applies are validated too.
    let (c, _) = api
        .patch(
            &format!("{W}/p"),
            "application/merge-patch+json",
            json!({"spec": {"size": -1}}),
        )
        .await;
    assert_eq!(c, 422);
    let (c, _) = api.apply(&format!("{W}/p?fieldManager=m"), json!({"apiVersion": "reference.test/v1", "kind": "Widget", "metadata": {"name": "p"}, "spec": {"size": 1, "color": "pink"}})).await;
    assert_eq!(c, 422);
}

#[tokio::test]
async fn secrets_are_validated_like_the_real_server() {
    use base64::Engine;
    let api = start().await;
    let s = "/api/v1/namespaces/ref/secrets";
    let (c, e) = api.post(s, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "badkey"}, "stringData": {"bad key": "v"}})).await;
    assert_eq!(c, 422);
    assert_eq!(e["details"]["causes"][0]["field"], "data[bad key]");
    let (c, e) = api.post(s, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "Bad_Name"}, "stringData": {"k": "v"}})).await;
    assert_eq!(c, 422);
    assert_eq!(e["details"]["causes"][0]["field"], "metadata.name");
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 1024 * 1024 + 1]);
    let (c, e) = api.post(s, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "huge"}, "data": {"k": big}})).await;
    assert_eq!(c, 422);
    assert_eq!(
        e["message"],
        "Secret \"huge\" is invalid: data: Too long: must have at most 1048576 bytes"
    );
    let (c, e) = api.post(s, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}})).await;
    assert_eq!(c, 422);
    assert_eq!(
        e["message"],
        "Secret \"tls\" is invalid: data[tls.key]: Required value"
    );
    api.post(s, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "imm"}, "immutable": true, "stringData": {"k": "v"}})).await;
    let (c, e) = api
        .patch(
            &format!("{s}/imm"),
            "application/merge-patch+json",
            json!({"stringData": {"k": "v2"}}),
        )
        .await;
    assert_eq!(c, 422);
    assert_eq!(e["details"]["causes"][0]["reason"], "FieldValueForbidden");
}

#[tokio::test]
async fn workload_controller_records_revisions() {
    let api = start().await;
    let d = "/apis/apps/v1/namespaces/ref/deployments";
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
    let (_, created) = api.post(d, dep).await;
    assert_eq!(
        created["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults filled in"
    );
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    api.wait_for(&format!("{d}/web"), |v| {
        v["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
            && v["status"]["observedGeneration"] == 1
    })
    .await;
    api.apply(&format!("{d}/web?fieldManager=managed-secrets"), json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"metadata": {"annotations": {"managedsecrets.io/secret-version": "v2"}}}}})).await;
    let v = api
        .wait_for(&format!("{d}/web"), |v| {
            v["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        })
        .await;
    assert_eq!(v["metadata"]["generation"], 2);
    assert_eq!(v["status"]["observedGeneration"], 2);
    let (_, rs) = api
        .get("/apis/apps/v1/namespaces/ref/replicasets?labelSelector=app%3Dweb")
        .await;
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for i in items {
        assert!(i["metadata"]["labels"]["pod-template-hash"].is_string());
    }
    assert!(items.iter().any(|i| i["metadata"]["annotations"]
        ["deployment.kubernetes.io/revision"]
        == "2"
        && i["spec"]["template"]["metadata"]["annotations"]["managedsecrets.io/secret-version"]
            == "v2"));
    // A label-only write does not make a revision: after it and a template change (handled in
    // order by the controller), there is exactly one more ReplicaSet, revision 3.
    api.patch(
        &format!("{d}/web"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    api.patch(
        &format!("{d}/web"),
        "application/strategic-merge-patch+json",
        json!({"spec": {"template": {"metadata": {"annotations": {"r": "3"}}}}}),
    )
    .await;
    api.wait_for(&format!("{d}/web"), |v| {
        v["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    })
    .await;
    let (_, rs) = api.get("/apis/apps/v1/namespaces/ref/replicasets").await;
    assert_eq!(rs["items"].as_array().unwrap().len(), 3);

    for (plural, kind) in [("statefulsets", "StatefulSet"), ("daemonsets", "DaemonSet")] {
        let p = format!("/apis/apps/v1/namespaces/ref/{plural}");
        let o = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": plural}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "x", "image": "busybox"}]}}}});
        assert_eq!(api.post(&p, o).await.0, 201);
        api.wait_for(&format!("{p}/{plural}"), |v| {
            v["status"]["observedGeneration"] == 1
        })
        .await;
        api.patch(
            &format!("{p}/{plural}"),
            "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"metadata": {"annotations": {"r": "2"}}}}}),
        )
        .await;
        api.wait_for(&format!("{p}/{plural}"), |v| {
            v["status"]["observedGeneration"] == 2
        })
        .await;
    }
    let (_, crs) = api
        .get("/apis/apps/v1/namespaces/ref/controllerrevisions")
        .await;
    let revs: Vec<i64> = crs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revs.len(), 4);
    assert_eq!(revs.iter().filter(|r| **r == 2).count(), 2);
}

#[tokio::test]
async fn injected_403_and_429_look_like_the_authorizer_and_priority_and_fairness() {
    let api = start().await;
    api.send(
        "POST",
        "/__admin/faults",
        "application/json",
        Some(json!({"verb": "list", "resource": "secrets", "code": 403, "count": 1})),
    )
    .await;
    let (c, e) = api.get("/api/v1/namespaces/ref/secrets").await;
    assert_eq!(c, 403);
    assert_eq!(e["reason"], "Forbidden");
    assert_eq!(
        e["message"],
        "secrets is forbidden: User \"admin\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ref\"",
        "an injected 403 names the user who asked"
    );
    assert_eq!(e["details"], json!({"kind": "secrets"}));
    api.send(
        "POST",
        "/__admin/faults",
        "application/json",
        Some(json!({"verb": "list", "resource": "deployments", "code": 429, "count": 1})),
    )
    .await;
    let (c, e) = api.get("/apis/apps/v1/deployments").await;
    assert_eq!(c, 429);
    assert_eq!(e["reason"], "TooManyRequests");
    assert_eq!(e["details"]["retryAfterSeconds"], 1);
}

#[tokio::test]
async fn faults_latency_and_counters() {
    let api = start().await;
    api.send("DELETE", "/__admin/counters", "application/json", None)
        .await;
    api.send(
        "POST",
        "/__admin/faults",
        "application/json",
        Some(json!({"verb": "get", "resource": "secrets", "count": 2, "code": 503})),
    )
    .await;
    let p = "/api/v1/namespaces/ref/secrets/x";
    assert_eq!(api.get(p).await.0, 503);
    assert_eq!(api.get(p).await.0, 503);
    assert_eq!(api.get(p).await.0, 404, "only the next N fail");
    for code in [409u16, 429, 500] {
        api.send(
            "POST",
            "/__admin/faults",
            "application/json",
            Some(json!({"verb": "create", "resource": "configmaps", "code": code})),
        )
        .await;
        let (c, e) = api
            .post(
                "/api/v1/namespaces/ref/configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f"}}),
            )
            .await;
        assert_eq!(c, code);
        assert_eq!(e["kind"], "Status");
    }
    api.send(
        "POST",
        "/__admin/faults",
        "application/json",
        Some(json!({"verb": "list", "resource": "configmaps", "latency_ms": 300})),
    )
    .await;
    let t = tokio::time::Instant::now();
    api.get("/api/v1/namespaces/ref/configmaps").await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    let (_, c) = api.get("/__admin/counters").await;
    let count = |verb: &str, res: &str| {
        c["counters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["verb"] == verb && e["resource"] == res)
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("get", "secrets"), 3);
    assert_eq!(count("create", "configmaps"), 3);
    // Closing watches ends open streams.
    let watch = api.watch_lines(
        "/api/v1/namespaces/ref/configmaps?watch=1&resourceVersion=1000000&timeoutSeconds=30",
        1,
        Duration::from_secs(10),
    );
    let closer = async {
        // Close once the watch is open (the emulator has counted it).
        api.wait_until(|| {
            api.emu
                .state
                .admin
                .lock()
                .unwrap()
                .counters
                .iter()
                .any(|((v, r, _), n)| v == "watch" && r == "configmaps" && *n > 0)
        })
        .await;
        api.send("POST", "/__admin/watches/close", "application/json", None)
            .await;
    };
    let t = tokio::time::Instant::now();
    let _ = tokio::join!(watch, closer);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "watch closed by the admin call"
    );
}

#[tokio::test]
async fn events_k8s_io_and_core_events_share_storage() {
    let api = start().await;
    let (c, e) = api.post("/apis/events.k8s.io/v1/namespaces/ref/events", json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "w1.ev1"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "managedsecrets.io/controller", "reportingInstance": "pod-1", "action": "Sync", "reason": "Synced", "note": "Secret updated", "type": "Normal", "regarding": {"apiVersion": "v1", "kind": "Secret", "name": "s", "namespace": "ref"}})).await;
    assert_eq!(c, 201);
    assert_eq!(e["note"], "Secret updated");
    let (_, core) = api.get("/api/v1/namespaces/ref/events").await;
    let ev = &core["items"][0];
    assert_eq!(ev["message"], "Secret updated");
    assert_eq!(ev["involvedObject"]["name"], "s");
    assert_eq!(ev["reportingComponent"], "managedsecrets.io/controller");
    let (_, lease) = api.post("/apis/coordination.k8s.io/v1/namespaces/ref/leases", json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 15}})).await;
    assert_eq!(lease["spec"]["holderIdentity"], "pod-1");
}

#[tokio::test]
async fn table_output_uses_printer_columns() {
    let api = start().await;
    api.create_widget_crd().await;
    api.post(W, widget("w1", 5)).await;
    api.patch(
        &format!("{W}/w1/status"),
        "application/merge-patch+json",
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .await;
    let resp = api
        .http
        .get(api.url(&format!("{W}/w1")))
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap();
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["kind"], "Table");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Size", "Ready", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "w1");
    assert_eq!(t["rows"][0]["cells"][1], 5);
    assert_eq!(t["rows"][0]["cells"][2], "True");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[tokio::test]
async fn serviceaccount_tokens_come_from_the_token_request_api() {
    let api = start().await;
    let (_, v) = api.get("/api/v1").await;
    let token_res = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .cloned()
        .unwrap();
    assert_eq!(token_res["kind"], "TokenRequest");
    assert_eq!(token_res["group"], "authentication.k8s.io");
    assert_eq!(token_res["verbs"], json!(["create"]));
    let p = "/api/v1/namespaces/ref/serviceaccounts/reader/token";
    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"audiences": ["sts.amazonaws.com"], "expirationSeconds": 600}});
    let (c, e) = api.post(p, req.clone()).await;
    assert_eq!((c, e["reason"].as_str()), (404, Some("NotFound")));
    api.post(
        "/api/v1/namespaces/ref/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}),
    )
    .await;
    let (c, tr) = api.post(p, req).await;
    assert_eq!(c, 201);
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["spec"]["audiences"], json!(["sts.amazonaws.com"]));
    assert_eq!(tr["spec"]["expirationSeconds"], 600);
    assert!(tr["status"]["expirationTimestamp"].is_string());
    let token = tr["status"]["token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: header.claims.signature");
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));
    assert_eq!(claims["sub"], "system:serviceaccount:ref:reader");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "reader");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    let (c, e) = api
        .post(
            p,
            json!({"spec": {"audiences": ["x"], "expirationSeconds": 60}}),
        )
        .await;
    assert_eq!(c, 422);
    assert_eq!(e["details"]["causes"][0]["field"], "spec.expirationSeconds");
}

#[tokio::test]
async fn metadata_only_lists_and_watches_answer_partial_object_metadata() {
    let api = start().await;
    let meta = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let get = |path: &str| api.http.get(api.url(path)).header("accept", meta).send();
    let list: Value = get("/api/v1/namespaces")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    let item = &list["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert!(item["metadata"]["name"].is_string());
    assert!(item.get("spec").is_none() && item.get("status").is_none());
    let one: Value = get("/api/v1/namespaces/ref")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert_eq!(one["metadata"]["name"], "ref");
    let resp = get("/api/v1/namespaces?watch=1&timeoutSeconds=1")
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "PartialObjectMetadata");
}

/// A ServiceAccount token authenticates as the ServiceAccount only while it exists; unknown tokens
/// are 401, no token is system:anonymous.
#[tokio::test]
async fn tokens_authenticate_their_service_account_until_it_is_deleted() {
    let api = start().await;
    api.post(
        "/api/v1/namespaces/ref/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}}),
    )
    .await;
    let (c, tr) = api
        .post(
            "/api/v1/namespaces/ref/serviceaccounts/op/token",
            json!({"spec": {"expirationSeconds": 600}}),
        )
        .await;
    assert_eq!(c, 201);
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc", "sts.amazonaws.com"])
    );
    let (c, e) = api
        .get_as(Some(&token), &[], "/api/v1/namespaces/ref/secrets")
        .await;
    assert_eq!(c, 403);
    assert_eq!(e["message"], "secrets is forbidden: User \"system:serviceaccount:ref:op\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ref\"");
    let (c, _) = api.get_as(Some(&token), &[], "/version").await;
    assert_eq!(c, 200, "system:public-info-viewer");
    let (c, _) = api.get_as(None, &[], "/apis").await;
    assert_eq!(c, 403, "discovery is for signed-in users only");
    // A token for another audience is not for the API server.
    let (_, other) = api
        .post(
            "/api/v1/namespaces/ref/serviceaccounts/op/token",
            json!({"spec": {"audiences": ["vault"], "expirationSeconds": 600}}),
        )
        .await;
    let (c, e) = api
        .get_as(other["status"]["token"].as_str(), &[], "/version")
        .await;
    assert_eq!((c, e["reason"].as_str()), (401, Some("Unauthorized")));
    let (c, _) = api
        .delete("/api/v1/namespaces/ref/serviceaccounts/op", None)
        .await;
    assert_eq!(c, 200);
    let (c, e) = api.get_as(Some(&token), &[], "/version").await;
    assert_eq!((c, e["message"].as_str()), (401, Some("Unauthorized")));
}

/// RBAC as the real authorizer evaluates it: a ClusterRole bound by a RoleBinding grants in that
/// namespace only, a ClusterRoleBinding everywhere; a Group subject; resourceNames narrow a watch
/// to the object its field selector names; impersonation needs the impersonate verb.
#[tokio::test]
async fn rbac_bindings_scope_names_groups_and_impersonation() {
    let api = start().await;
    for ns in ["a", "b"] {
        api.post(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    api.post(&format!("{rbac}/clusterroles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lead"], "verbs": ["list", "watch"]}]})).await;
    api.post(&format!("{rbac}/namespaces/a/rolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
        "subjects": [{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"}]})).await;
    let jane = [("Impersonate-User", "jane"), ("Impersonate-Group", "devs")];
    let admin = Some(kube_emulator::auth::ADMIN_TOKEN);
    let get = |path: &'static str| api.get_as(admin, &jane, path);
    assert_eq!(get("/api/v1/namespaces/a/configmaps").await.0, 200);
    let (c, e) = get("/api/v1/namespaces/b/configmaps").await;
    assert_eq!(c, 403, "{e}");
    assert_eq!(get("/api/v1/configmaps").await.0, 403, "not cluster-wide");
    // resourceNames: a list or watch narrowed to the name by a field selector is allowed.
    assert_eq!(
        get("/apis/coordination.k8s.io/v1/namespaces/a/leases?fieldSelector=metadata.name%3Dlead")
            .await
            .0,
        200
    );
    assert_eq!(
        get("/apis/coordination.k8s.io/v1/namespaces/a/leases")
            .await
            .0,
        403
    );
    // A ClusterRoleBinding grants in every namespace.
    api.post(&format!("{rbac}/clusterrolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
        "subjects": [{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]})).await;
    assert_eq!(get("/api/v1/namespaces/b/configmaps").await.0, 200);
    assert_eq!(get("/api/v1/configmaps").await.0, 200);
    // A ServiceAccount may impersonate jane only with the impersonate verb on that user.
    api.post(
        "/api/v1/namespaces/ref/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sudo"}}),
    )
    .await;
    let (_, tr) = api
        .post(
            "/api/v1/namespaces/ref/serviceaccounts/sudo/token",
            json!({"spec": {}}),
        )
        .await;
    let sudo = tr["status"]["token"].as_str().unwrap().to_string();
    let as_jane = [("Impersonate-User", "jane")];
    let (c, e) = api
        .get_as(Some(&sudo), &as_jane, "/api/v1/configmaps")
        .await;
    assert_eq!(c, 403);
    assert_eq!(e["details"], json!({"name": "jane", "kind": "users"}));
    api.post(&format!("{rbac}/clusterroles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "impersonator"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["jane"], "verbs": ["impersonate"]}]})).await;
    api.post(&format!("{rbac}/clusterrolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "impersonator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
        "subjects": [{"kind": "ServiceAccount", "name": "sudo", "namespace": "ref"}]})).await;
    let (c, e) = api
        .get_as(Some(&sudo), &as_jane, "/api/v1/configmaps")
        .await;
    assert_eq!(c, 200, "{e}");
    // Impersonating a group needs its own grant.
    let (c, e) = api.get_as(Some(&sudo), &jane, "/api/v1/configmaps").await;
    assert_eq!(c, 403);
    assert_eq!(e["details"]["kind"], "groups");
}

/// A server-side apply that would create an object is authorized as `create` too, with the
/// real server's empty reason; patching an existing one needs `patch` only.
#[tokio::test]
async fn an_apply_that_creates_needs_create() {
    let api = start().await;
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    api.post(
        "/api/v1/namespaces/ref/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}}),
    )
    .await;
    api.post(&format!("{rbac}/namespaces/ref/roles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "op"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]}]})).await;
    api.post(&format!("{rbac}/namespaces/ref/rolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "op"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ref"}]})).await;
    let (_, tr) = api
        .post(
            "/api/v1/namespaces/ref/serviceaccounts/op/token",
            json!({"spec": {}}),
        )
        .await;
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let path = "/apis/apps/v1/namespaces/ref/deployments/web?fieldManager=op&force=true";
    let (c, e) = api
        .send_as(
            Some(&token),
            &[],
            "PATCH",
            path,
            "application/apply-patch+yaml",
            Some(body.clone()),
        )
        .await;
    assert_eq!(c, 403);
    assert_eq!(e["message"], "deployments.apps \"web\" is forbidden: ");
    assert_eq!(
        e["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/ref/deployments/web")
            .await
            .0,
        404,
        "nothing created"
    );
    // Once it exists, patch is enough.
    let (c, _) = api.apply(path, body.clone()).await;
    assert_eq!(c, 201);
    let mut b = body;
    b["metadata"]["annotations"] = json!({"x": "y"});
    let (c, e) = api
        .send_as(
            Some(&token),
            &[],
            "PATCH",
            path,
            "application/apply-patch+yaml",
            Some(b),
        )
        .await;
    assert_eq!(c, 200, "{e}");
}

#[tokio::test]
async fn namespaces_carry_their_name_as_a_label_a_selector_can_use() {
    let api = start().await;
    let (c, ns) = api
        .post(
            "/api/v1/namespaces",
            json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}),
        )
        .await;
    assert_eq!(c, 201);
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"team": "a", "kubernetes.io/metadata.name": "team-a"})
    );
    // It cannot be changed or removed: every write sets it again.
    let (c, ns) = api
        .patch(
            "/api/v1/namespaces/team-a",
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"kubernetes.io/metadata.name": "other", "team": null}}}),
        )
        .await;
    assert_eq!(c, 200);
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "team-a"})
    );
    let (_, list) = api
        .get("/api/v1/namespaces?labelSelector=kubernetes.io%2Fmetadata.name%3Dkube-system")
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}
