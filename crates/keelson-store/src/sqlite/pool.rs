//! A small pool of read connections, used from async code through `spawn_blocking`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::schema;
use crate::StoreError;

pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    closed: AtomicBool,
}

impl ReadPool {
    pub fn new(path: PathBuf, size: usize) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => schema::open_reader(&pool.path)
                    .map_err(|e| StoreError::backend("open read connection", e))?,
            };
            let result = f(&mut conn);
            if !pool.closed.load(Ordering::Acquire) {
                pool.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::backend("read task", e))?
    }

    /// Refuses new reads and closes the idle connections.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
