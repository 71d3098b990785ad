//! The in-process transport: every committed append is pushed to subscribers as it happens.
//!
//! Messages are hints with the events attached, never the source of truth: a subscriber that
//! lags behind (the channel is bounded) or sees a gap reads the missing range from the store.
//! That keeps memory bounded and delivery exactly-once without any sleep-polling.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::envelope::{Position, RecordedEvent};

#[derive(Clone, Debug)]
pub enum BusMessage {
    /// Events committed by this process, in position order.
    Appended(Arc<[RecordedEvent]>),
    /// Another process committed up to this position (PostgreSQL NOTIFY); read it from the store.
    HeadMoved(Position),
}

#[derive(Clone, Debug)]
pub struct Bus {
    sender: broadcast::Sender<BusMessage>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(1024)
    }
}

impl Bus {
    /// A bus that buffers up to `capacity` messages per subscriber before it lags.
    pub fn new(capacity: usize) -> Bus {
        let (sender, _) = broadcast::channel(capacity);
        Bus { sender }
    }

    pub fn publish(&self, message: BusMessage) {
        // No receiver is not an error: nobody is listening yet.
        let _ = self.sender.send(message);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.sender.subscribe()
    }
}
