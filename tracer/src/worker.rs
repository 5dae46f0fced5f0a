//! The tracer's indexing thread: every add and commit of the index runs on one dedicated OS
//! thread, started at a lower CPU priority (`index_nice`, default 10) than the rest of the
//! process.
//!
//! Why: in `meridian dev` the tracer shares its process and its cores with the broker and, in a
//! benchmark, the client. Profiles of a debug `meridian dev` under `meridian bench produce
//! --concurrency 1024` (docs/tracing.md, "What tracing costs") showed the tracer's threads
//! (tokio's blocking pool adding documents, tantivy's indexing worker and four merge threads)
//! taking the cores at the same priority as the send path. On Linux a thread's nice value is its
//! own and is inherited by the threads it starts, so the index writers, created lazily by the
//! first add of a day on this thread, start tantivy's indexing and merge threads at the same
//! lower priority. Under saturation the scheduler then serves the broker first and the tracer
//! catches up from the trace topic (a log: nothing is lost, the lag shows as events waiting);
//! on an idle machine nice changes nothing.
//!
//! Start reading at [`IndexThread::run`]: it hands a closure to the thread and awaits its result
//! without blocking the runtime.

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The dedicated indexing thread. Dropping it lets the thread finish its queued jobs and joins it.
pub struct IndexThread {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IndexThread {
    /// Starts the thread, lowering its priority by `nice` (0: unchanged). A failure to lower it
    /// is logged, not fatal: the tracer still works, only without yielding to the broker.
    pub fn start(nice: i32) -> std::io::Result<IndexThread> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("tracer-index".into()).spawn(move || {
            lower_priority(nice);
            while let Ok(job) = queue.recv() {
                job();
            }
        })?;
        Ok(IndexThread {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `work` on the indexing thread and returns its result; `None` when the thread is gone
    /// (it panicked, or the tracer is stopping).
    pub async fn run<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        {
            let jobs = self.jobs.lock().expect("index jobs lock");
            jobs.as_ref()?.send(job).ok()?;
        }
        result.await.ok()
    }
}

impl Drop for IndexThread {
    fn drop(&mut self) {
        self.jobs.lock().expect("index jobs lock").take();
        if let Some(thread) = self.thread.lock().expect("index thread lock").take()
            && thread.join().is_err()
        {
            tracing::error!("the tracer's indexing thread panicked");
        }
    }
}

/// Lowers the calling thread's priority by `nice` from where it is, down to 19 at most (Linux:
/// per thread, inherited by the threads it starts).
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; getpriority and setpriority with PRIO_PROCESS and
        // a thread id read and change only that thread's nice value.
        let result = unsafe {
            let tid = libc::gettid() as libc::id_t;
            // The thread started with its creator's nice value: lower it from there.
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (current + nice).min(19))
        };
        if result != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of the tracer's indexing thread; it competes with the broker at full priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::debug!(
        nice,
        "thread priorities are per thread only on linux: index_nice ignored"
    );
}

/// The calling thread's nice value (Linux), for tests.
#[cfg(all(test, target_os = "linux"))]
fn current_nice() -> i32 {
    // SAFETY: as in `lower_priority`.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_one_lower_priority_thread_and_threads_it_starts_inherit_it() {
        let base = current_nice();
        let thread = IndexThread::start(5).unwrap();
        let (name, nice, child_nice) = thread
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                // tantivy's worker and merge threads are started like this, from this thread.
                let child = std::thread::spawn(current_nice).join().unwrap();
                (name, current_nice(), child)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("tracer-index"));
        // Capped at 19, the lowest priority there is.
        let expected = (base + 5).min(19);
        assert_eq!((nice, child_nice), (expected, expected));
        assert_eq!(current_nice(), base, "the caller's priority is untouched");
        let order = thread.run(|| 2).await;
        assert_eq!(order, Some(2));
    }
}
