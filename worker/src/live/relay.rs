//! Live events relayed between workers. A worker whose client watches a conversation another
//! worker owns asks the owner for the conversation's events (`GET /internal/live/{key}`, SSE)
//! instead of reading the partition itself: each record is then fetched from the broker once,
//! by the owner's fan-out, however many workers there are. Each relayed event carries the record
//! it comes from, so the receiving worker orders and resumes exactly as with its own reads.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::cursor::{Cursor, Pos, Positioned, Topic};
use crate::view::LiveEvent;

/// The response header naming where a relayed stream starts (its events come after it).
pub const FROM_HEADER: &str = "x-meshchat-from";

/// The relaying worker sends a keep-alive at least this often...
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// ... so a stream silent for this long lost its worker (stopped, or cut off).
const SILENT_LIMIT: Duration = Duration::from_secs(35);

/// Relayed events waiting for their client.
const BUFFER: usize = 256;

/// One relayed event: the record it comes from, and the event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Relayed {
    topic: Topic,
    offset: i64,
    event: LiveEvent,
}

impl Relayed {
    /// The SSE `data:` of `event`.
    pub fn encode(event: &Positioned) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            topic: Topic,
            offset: i64,
            event: &'a LiveEvent,
        }
        serde_json::to_string(&Out {
            topic: event.pos.topic,
            offset: event.pos.offset,
            event: &event.event,
        })
        .unwrap_or_default()
    }
}

/// A relayed stream as received: where it starts, and its events.
#[derive(Debug)]
pub struct Relay {
    /// Its events come after this position.
    pub from: Cursor,
    /// Its events, in the relaying worker's order; closed when the stream ends.
    pub events: mpsc::Receiver<Arc<Positioned>>,
}

impl Relay {
    /// Reads the SSE `body` of a relayed stream starting after `from` on a task of its own.
    pub fn read<B, E>(from: Cursor, body: B) -> Self
    where
        B: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (tx, events) = mpsc::channel(BUFFER);
        tokio::spawn(async move {
            // a stream silent past the keep-alives is cut off: the receiver goes elsewhere
            let body = tokio_stream::StreamExt::timeout(body, SILENT_LIMIT).map(|chunk| match chunk {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                Err(_) => Err(std::io::Error::other("no keep-alive from the relaying worker")),
            });
            let mut events = std::pin::pin!(body.eventsource());
            // the first error ends the relay
            while let Some(Ok(e)) = events.next().await {
                let Ok(r) = serde_json::from_str::<Relayed>(&e.data) else {
                    tracing::warn!(data = %e.data, "a relayed live event that is not one; the relay ends");
                    return;
                };
                let event = Positioned {
                    pos: Pos::new(r.topic, r.offset),
                    event: r.event,
                };
                if tx.send(Arc::new(event)).await.is_err() {
                    return;
                }
            }
        });
        Self { from, events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::LiveEvent;
    use meshchat_wire::PresenceKind;

    fn presence(user: &str) -> LiveEvent {
        LiveEvent::Presence {
            user_id: user.into(),
            kind: PresenceKind::Online,
        }
    }

    #[tokio::test]
    async fn relayed_events_arrive_with_their_records_and_end_with_the_stream() {
        let sent = [
            Positioned {
                pos: Pos::new(Topic::Users, 7),
                event: presence("ann"),
            },
            Positioned {
                pos: Pos::new(Topic::Stream, 12),
                event: LiveEvent::Token {
                    in_reply_to: "m1".into(),
                    reply_id: "r1".into(),
                    epoch: 3,
                    attempt: 0,
                    seq: 0,
                    delta: "multi\nline".into(),
                },
            },
        ];
        // as the relaying worker writes them: a keep-alive comment, each event split over chunks
        let mut wire = String::from(": keep-alive\n\n");
        for e in &sent {
            wire.push_str(&format!("id: x\ndata: {}\n\n", Relayed::encode(e)));
        }
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = wire
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let from = Cursor {
            messages: 1,
            stream: 2,
            users: 3,
        };
        let mut relay = Relay::read(from, futures::stream::iter(chunks));
        assert_eq!(relay.from, from);
        for e in &sent {
            let got = relay.events.recv().await.expect("an event");
            assert_eq!(got.pos, e.pos);
            assert_eq!(got.event, e.event);
        }
        assert!(
            relay.events.recv().await.is_none(),
            "the relay ends with its stream"
        );
    }

    #[tokio::test]
    async fn a_relay_ends_at_the_first_broken_chunk() {
        let good = format!(
            "data: {}\n\n",
            Relayed::encode(&Positioned {
                pos: Pos::new(Topic::Users, 1),
                event: presence("bo"),
            })
        );
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(bytes::Bytes::from(good.clone())),
            Err(std::io::Error::other("reset")),
            Ok(bytes::Bytes::from(good)),
        ];
        let mut relay = Relay::read(Cursor::default(), futures::stream::iter(chunks));
        assert!(relay.events.recv().await.is_some());
        assert!(relay.events.recv().await.is_none());
    }
}
