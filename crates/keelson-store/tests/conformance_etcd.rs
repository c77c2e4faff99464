//! The store conformance suite on etcd: each test starts its own etcd (Debian's
//! `etcd-server`) on random loopback ports. These tests fail, never skip, without etcd.

use std::sync::Arc;

use keelson_store::testing::EtcdServer;
use keelson_store::{EtcdConfig, EtcdStore, Store};

async fn etcd() -> (EtcdServer, Arc<dyn Store>) {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("etcd start task")
        .expect("start etcd");
    let store = EtcdStore::connect(EtcdConfig::new(vec![server.endpoint().to_owned()]))
        .await
        .expect("connect to etcd");
    (server, Arc::new(store))
}

keelson_store::conformance_suite!(etcd);
