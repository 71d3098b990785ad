//! Catch-up-then-live subscriptions over the global log.

use std::collections::VecDeque;
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
    /// Pages read ahead while catching up, in order, each as (the position it reads after, the
    /// read). Page k+1 reads after where page k nominally ends (`after + max`): exact when
    /// positions have no gaps (neither store leaves any), an overlap that is dropped below when
    /// they do. Reading ahead keeps the store's reader and the caller busy side by side.
    read_ahead: VecDeque<(Position, PageRead)>,
}

type PageRead = JoinHandle<Result<Vec<RecordedEvent>, StoreError>>;

/// Pages in flight at most while catching up.
const READ_AHEAD: usize = 2;

impl Drop for Subscription {
    fn drop(&mut self) {
        self.clear_read_ahead();
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
            read_ahead: VecDeque::new(),
        }
    }

    fn clear_read_ahead(&mut self) {
        for (_, task) in self.read_ahead.drain(..) {
            task.abort();
        }
    }

    /// The next page after `self.last`: from the read-ahead queue when it is safe, else read now.
    async fn read_page(&mut self, max: usize) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        if let Some((after, task)) = self.read_ahead.pop_front() {
            // A page that starts beyond what has been delivered could miss events committed
            // in between after it was read: only pages starting at or before `last` are used.
            if after <= self.last
                && let Ok(Ok(page)) = task.await
            {
                let full = page.len() >= max;
                let fresh: Vec<RecordedEvent> = page
                    .into_iter()
                    .filter(|e| e.position > self.last)
                    .collect();
                if !fresh.is_empty() {
                    return Ok((fresh, full));
                }
            }
            self.clear_read_ahead();
        }
        let page = self.store.read_all(self.last, max).await?;
        let full = page.len() >= max;
        Ok((page, full))
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
                let (events, full) = self.read_page(max).await?;
                if let Some(last) = events.last() {
                    self.last = last.position;
                    if full {
                        // More is probably waiting: keep READ_AHEAD pages in flight.
                        while self.read_ahead.len() < READ_AHEAD {
                            let after = self
                                .read_ahead
                                .back()
                                .map_or(self.last, |(a, _)| a + max as u64);
                            let store = self.store.clone();
                            self.read_ahead.push_back((
                                after,
                                tokio::spawn(async move { store.read_all(after, max).await }),
                            ));
                        }
                    } else {
                        self.clear_read_ahead();
                    }
                    return Ok(events);
                }
                self.clear_read_ahead();
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
