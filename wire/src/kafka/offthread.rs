//! Kafka clients dropped on a thread of their own.

use std::ops::Deref;

/// A client whose drop runs on a thread of its own. Closing a consumer waits for its group
/// coordinator — for good when librdkafka lost it, as seen after the broker was fenced (see
/// `producer.rs`) — and neither the runtime's threads nor the restart of the loop that gave the
/// client up may wait with it.
pub struct DropOffThread<T: Send + 'static>(Option<T>);

// === impl DropOffThread ===

impl<T: Send + 'static> DropOffThread<T> {
    /// Wraps `client`.
    pub fn new(client: T) -> Self {
        Self(Some(client))
    }
}

impl<T: Send + 'static> Deref for DropOffThread<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.0 {
            Some(client) => client,
            None => unreachable!("the client is taken only when dropped"),
        }
    }
}

impl<T: Send + 'static> Drop for DropOffThread<T> {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // if no thread can be started, the client is dropped here after all
            let _ = std::thread::Builder::new()
                .name("kafka-close".into())
                .spawn(move || drop(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Blocks in its drop until told to go on.
    struct SlowToClose(mpsc::Receiver<()>);

    impl Drop for SlowToClose {
        fn drop(&mut self) {
            let _ = self.0.recv();
        }
    }

    #[test]
    fn a_client_slow_to_close_does_not_hold_up_its_owner() {
        let (go, wait) = mpsc::channel();
        let wrapped = DropOffThread::new(SlowToClose(wait));
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            drop(wrapped);
            let _ = done_tx.send(());
        });
        assert!(
            done.recv_timeout(Duration::from_secs(5)).is_ok(),
            "dropping returned while the client was still closing"
        );
        let _ = go.send(());
    }
}
