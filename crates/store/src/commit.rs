//! Group commit for a redb database: every change is a job run on one thread, which takes
//! whatever jobs are waiting, runs them in one write transaction (with the database's tables
//! opened once for the batch) and commits it with one sync. Writes that arrive together share
//! that sync, so durable writes scale with concurrency instead of queueing for one sync each.
//! Reads open their own read transactions and never wait for it.
//!
//! A database describes its tables with [`Schema`]; its error type says which failures leave
//! the transaction unusable ([`CommitError::poisons`]), in which case the whole batch is
//! abandoned and every job of it fails.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use redb::{Database, WriteTransaction};

/// The tables a database's jobs work on, opened once per transaction.
pub trait Schema: Send + Sync + 'static {
    type Tables<'t>;
    /// What its jobs fail with.
    type Error: CommitError;
    /// Opens every table in `txn`.
    fn open(txn: &WriteTransaction) -> Result<Self::Tables<'_>, redb::TableError>;
}

/// What a database's jobs fail with.
pub trait CommitError: Send + 'static {
    /// A failure of the store itself (a transaction that could not start or commit).
    fn storage(message: String) -> Self;
    /// Whether this error leaves the transaction unusable (a storage error midway), so that
    /// nothing of the batch may be committed.
    fn poisons(&self) -> bool;
}

/// Makes every redb error convert into `$error` through [`CommitError::storage`], so that a
/// store's code can use `?` on redb's calls.
#[macro_export]
macro_rules! redb_errors_into {
    ($error:ty) => {
        $crate::redb_errors_into!(
            $error;
            redb::Error,
            redb::TransactionError,
            redb::TableError,
            redb::StorageError,
            redb::CommitError,
            redb::DatabaseError
        );
    };
    ($error:ty; $($t:ty),*) => {$(
        impl From<$t> for $error {
            fn from(e: $t) -> Self {
                <$error as $crate::commit::CommitError>::storage(e.to_string())
            }
        }
    )*};
}

/// What a job leaves to do once its transaction has committed, or failed to.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A change, run inside the committer's transaction. It returns what to do after the commit,
/// and whether the transaction is now unusable.
type Job<S> =
    Box<dyn for<'a, 't> FnOnce(&'a mut <S as Schema>::Tables<'t>) -> (Finish, bool) + Send>;

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 512;

/// The thread that writes a database.
pub struct Committer<S: Schema> {
    jobs: Mutex<Option<mpsc::Sender<Job<S>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<S: Schema> Committer<S> {
    /// Starts the thread, named `name`.
    pub fn start(db: Arc<Database>, name: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Job<S>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch::<S>(&db, batch);
                }
            })
            .ok();
        Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(thread),
        }
    }

    /// Runs `op` in the next transaction and waits for its commit. `op` checks before it
    /// writes: an `Err` it returns must leave the transaction as it found it, unless it
    /// poisons. The files it returns are removed once the change is durable (what the change
    /// made unreferenced).
    pub async fn write_files<T: Send + 'static>(
        &self,
        op: impl for<'a, 't> FnOnce(&'a mut S::Tables<'t>) -> Result<(T, Vec<PathBuf>), S::Error>
        + Send
        + 'static,
    ) -> Result<T, S::Error> {
        type E<S> = <S as Schema>::Error;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job<S> = Box::new(move |tables| match op(tables) {
            Ok((value, files)) => {
                let finish: Finish = Box::new(move |committed| {
                    let result = committed.map(|()| {
                        for f in &files {
                            if let Err(e) = std::fs::remove_file(f)
                                && e.kind() != std::io::ErrorKind::NotFound
                            {
                                tracing::warn!(file = %f.display(), error = %e, "could not remove an unreferenced file");
                            }
                        }
                        value
                    });
                    let _ = reply.send(result.map_err(E::<S>::storage));
                });
                (finish, false)
            }
            Err(e) => {
                let poisoned = e.poisons();
                let finish: Finish = Box::new(move |committed| {
                    let _ = reply.send(Err(match committed {
                        Err(m) if !poisoned => E::<S>::storage(m),
                        _ => e,
                    }));
                });
                (finish, poisoned)
            }
        });
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|tx| tx.send(job).is_ok()))
            .unwrap_or(false);
        if !sent {
            return Err(E::<S>::storage("the store is shut down".into()));
        }
        answer
            .await
            .map_err(|_| E::<S>::storage("the store's committer stopped".into()))?
    }

    /// [`Self::write_files`] for a change that leaves no files behind.
    pub async fn write<T: Send + 'static>(
        &self,
        op: impl for<'a, 't> FnOnce(&'a mut S::Tables<'t>) -> Result<T, S::Error> + Send + 'static,
    ) -> Result<T, S::Error> {
        self.write_files(move |t| op(t).map(|v| (v, Vec::new())))
            .await
    }

    /// Stops taking jobs and waits for those already taken.
    pub fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

fn run_batch<S: Schema>(db: &Database, batch: Vec<Job<S>>) {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            // Dropping the jobs drops their reply channels: each waiting writer gets an error.
            tracing::error!(error = %e, "a store could not start a transaction");
            return;
        }
    };
    let mut finishes = Vec::with_capacity(batch.len());
    let mut poisoned = false;
    match S::open(&txn) {
        Ok(mut tables) => {
            for job in batch {
                let (finish, bad) = job(&mut tables);
                poisoned |= bad;
                finishes.push(finish);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "a store could not open its tables");
            return;
        }
    }
    let result = if poisoned {
        let _ = txn.abort();
        Err("a storage error in the same transaction; nothing was written".to_owned())
    } else {
        txn.commit().map_err(|e| e.to_string())
    };
    for finish in finishes {
        finish(result.clone());
    }
}
