//! Catch-up-then-live subscriptions over the global log.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use crate::bus::BusMessage;
use crate::envelope::{Position, RecordedEvent};
use crate::store::{EventStore, StoreError};

/// Delivers every event after a starting position exactly once, in global order: first by
/// reading the store, then by the pushes of the in-process bus, falling back to the store
/// whenever a push does not continue exactly where the subscriber is.
pub struct Subscription {
    store: Arc<dyn EventStore>,
    rx: broadcast::Receiver<BusMessage>,
    last: Position,
    caught_up: bool,
    /// Read-ahead while catching up: the page after `.0`, being read while the caller works on
    /// the current one (the store's reader thread and the caller then run side by side).
    prefetch: Option<(Position, PageRead)>,
}

type PageRead = JoinHandle<Result<Vec<RecordedEvent>, StoreError>>;

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((_, task)) = self.prefetch.take() {
            task.abort();
        }
    }
}

impl Subscription {
    /// Subscribes to every event with position > `after` (a stored checkpoint, or 0).
    pub fn new(store: Arc<dyn EventStore>, after: Position) -> Subscription {
        // Subscribe to the bus before the first read, so nothing committed in between is missed.
        let rx = store.bus().subscribe();
        Subscription {
            store,
            rx,
            last: after,
            caught_up: false,
            prefetch: None,
        }
    }

    /// The position of the last event delivered (or the starting position).
    pub fn position(&self) -> Position {
        self.last
    }

    /// Waits for the next events and returns between 1 and about `max` of them.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let max = max.max(1);
        loop {
            if !self.caught_up {
                let events = match self.prefetch.take() {
                    Some((after, task)) if after == self.last => match task.await {
                        Ok(read) => read?,
                        Err(_) => self.store.read_all(self.last, max).await?,
                    },
                    Some((_, task)) => {
                        task.abort();
                        self.store.read_all(self.last, max).await?
                    }
                    None => self.store.read_all(self.last, max).await?,
                };
                if let Some(last) = events.last() {
                    self.last = last.position;
                    if events.len() >= max {
                        // A full page: more is probably waiting. Start reading it now.
                        let store = self.store.clone();
                        let after = self.last;
                        self.prefetch = Some((
                            after,
                            tokio::spawn(async move { store.read_all(after, max).await }),
                        ));
                    }
                    return Ok(events);
                }
                self.caught_up = true;
            }
            match self.rx.recv().await {
                Ok(BusMessage::Appended(batch)) => {
                    let fresh: Vec<RecordedEvent> = batch
                        .iter()
                        .filter(|e| e.position > self.last)
                        .cloned()
                        .collect();
                    let Some(first) = fresh.first() else { continue };
                    let contiguous = first.position == self.last + 1
                        && fresh.windows(2).all(|w| w[1].position == w[0].position + 1);
                    if contiguous && fresh.len() <= max {
                        self.last = fresh[fresh.len() - 1].position;
                        return Ok(fresh);
                    }
                    // A gap (another appender's push is still on its way) or more than asked
                    // for: the store has all of it, in order.
                    self.caught_up = false;
                }
                Ok(BusMessage::HeadMoved(head)) => {
                    if head > self.last {
                        self.caught_up = false;
                    }
                }
                Err(RecvError::Lagged(_)) => self.caught_up = false,
                Err(RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }
}
