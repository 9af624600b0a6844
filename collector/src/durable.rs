//! Waiting for the storage journal on behalf of many connections.
//!
//! `Store::durable` blocks until a group commit covers a ticket (up to the fsync
//! interval). One connection task per agent cannot each hold a blocking thread for that
//! long, so one thread waits for the highest ticket asked for and then wakes every
//! connection whose ticket it covers: one wait per group commit, however many agents.

use std::sync::mpsc;
use std::sync::Arc;

use ganglion_store::engine::{Store, Ticket, WriteError};
use tokio::sync::oneshot;

type Waiter = (Ticket, oneshot::Sender<Result<(), String>>);

/// Cheap to clone; the thread stops when every handle is dropped.
#[derive(Clone)]
pub struct DurableHandle {
    tx: mpsc::Sender<Waiter>,
}

impl DurableHandle {
    /// Starts the waiting thread for `store`.
    ///
    /// # Panics
    /// When the operating system refuses to start a thread.
    pub fn start(store: Arc<Store>) -> DurableHandle {
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("ganglion-durable".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let max = batch.iter().map(|(t, _)| *t).max().expect("the batch holds at least one waiter");
                    let result = store.durable(max).map_err(|e: WriteError| e.to_string());
                    for (_, reply) in batch {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .expect("starting the storage durability thread");
        DurableHandle { tx }
    }

    /// Resolves once the journal holds everything up to `ticket`.
    ///
    /// # Errors
    /// When the store closed before that (shutdown) or the waiting thread is gone.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((ticket, tx)).map_err(|_| "storage is shut down".to_owned())?;
        rx.await.map_err(|_| "storage is shut down".to_owned())?
    }
}
