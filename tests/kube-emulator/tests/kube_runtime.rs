//! kube-rs' watcher and Controller against the emulator, through a 410 Gone and a dropped watch.

mod common;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{controller::Action, watcher, Controller, WatchStreamExt};
use kube::{api::PostParams, Api, Client};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn client(api: &common::Api) -> Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = common::admin_config(&api.emu);
    Client::try_from(cfg).unwrap()
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}})).unwrap()
}

#[tokio::test]
async fn watcher_recovers_from_gone_and_dropped_watches() {
    let api = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&api).await, "ref");
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s2, e2) = (seen.clone(), errors.clone());
    let cms2 = cms.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(cms2, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(o) => {
                    s2.lock()
                        .unwrap()
                        .insert(o.metadata.name.unwrap_or_default());
                }
                Err(e) => e2.lock().unwrap().push(e.to_string()),
            }
        }
    });
    wait(|| seen.lock().unwrap().contains("a")).await;
    // A watch drop: the watcher re-watches from its last resourceVersion.
    api.emu.close_watches();
    cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    wait(|| seen.lock().unwrap().contains("b")).await;
    // History compacted: the re-watch gets 410 Gone, the watcher re-lists.
    api.send("POST", "/__admin/history/expire", "application/json", None)
        .await;
    cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    wait(|| seen.lock().unwrap().contains("c")).await;
    task.abort();
    for e in errors.lock().unwrap().iter() {
        assert!(
            e.contains("410") || e.to_lowercase().contains("too old"),
            "only the 410 desync may surface: {e}"
        );
    }
}

#[tokio::test]
async fn controller_keeps_reconciling_through_gone_and_drops() {
    let api = common::start().await;
    let c = client(&api).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "ref");
    let reconciled = Arc::new(Mutex::new(HashSet::<String>::new()));
    let ctx = reconciled.clone();
    let ctrl = tokio::spawn(
        Controller::new(cms.clone(), watcher::Config::default())
            .run(
                |o: Arc<ConfigMap>, ctx: Arc<Arc<Mutex<HashSet<String>>>>| async move {
                    ctx.lock()
                        .unwrap()
                        .insert(o.metadata.name.clone().unwrap_or_default());
                    Ok::<_, kube::Error>(Action::await_change())
                },
                |_, _: &kube::Error, _| Action::requeue(Duration::from_secs(1)),
                Arc::new(ctx),
            )
            .for_each(|_| async {}),
    );
    cms.create(&PostParams::default(), &cm("one"))
        .await
        .unwrap();
    wait(|| reconciled.lock().unwrap().contains("one")).await;
    api.emu.close_watches();
    cms.create(&PostParams::default(), &cm("two"))
        .await
        .unwrap();
    wait(|| reconciled.lock().unwrap().contains("two")).await;
    api.send("POST", "/__admin/history/expire", "application/json", None)
        .await;
    cms.create(&PostParams::default(), &cm("three"))
        .await
        .unwrap();
    wait(|| reconciled.lock().unwrap().contains("three")).await;
    ctrl.abort();
}

async fn wait(f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
