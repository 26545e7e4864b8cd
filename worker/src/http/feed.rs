//! Where one live stream's events come from. A conversation this worker owns (or whose owner
//! it cannot reach) is read by this worker's own fan-out; one another worker owns is relayed
//! by that worker, so the mesh fetches each record once. Either source may end — a relaying
//! owner dies or gives the conversation up, this worker's fan-out starts again — and the feed
//! goes on (trying for up to a minute) from the last event it gave from whichever source serves then: resuming from an
//! event id is exact on any worker (`live::Cursor`), so the client sees no gap and no
//! duplicate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ChatService;
use crate::live::{CatchUpError, Cursor, Merge, NotServing, Positioned, Relay};
use crate::mesh::Peer;

/// How often a feed read here looks whether its conversation's owner could serve it instead.
const OWNER_LOOK: Duration = Duration::from_secs(5);

/// The shortest time between two openings of a feed's source (a source that keeps ending at
/// once is not hammered).
const REOPEN_GAP: Duration = Duration::from_millis(250);

/// How long a feed whose source ended tries to open another before it ends (its client then
/// reconnects with its last id).
const REOPEN_LIMIT: Duration = Duration::from_secs(60);

/// How many sources in a row may end without an event before the feed ends.
const FRUITLESS_LIMIT: u32 = 3;

/// A conversation's live events for one client, in order, each once.
pub(super) struct Feed<S: ChatService> {
    state: Arc<S>,
    key: String,
    /// Whether it may be relayed by the owner (a relayed stream served to a peer is not relayed
    /// again).
    relayed: bool,
    source: Source,
    merge: Merge,
    /// When a feed read here next looks at the owner.
    look_at: Instant,
    /// The owner's relay being opened, while events still come from here.
    moving: Option<Opening>,
    opened_at: Instant,
    /// Sources opened in a row that ended without an event: after one, the next is this
    /// worker's own reads; after [`FRUITLESS_LIMIT`], the feed ends.
    fruitless: u32,
}

/// A relay being opened.
type Opening = tokio::task::JoinHandle<Result<Relay, String>>;

enum Source {
    /// This worker's fan-out, after the events a resume read back from the log.
    Here {
        rx: Receiver<Arc<Positioned>>,
        stored: VecDeque<Arc<Positioned>>,
    },
    /// The owner's relay.
    Owner { events: mpsc::Receiver<Arc<Positioned>> },
}

/// What a feed gives next.
pub(super) enum FeedNext {
    /// An event and its id (the client's position after it).
    Event(Arc<Positioned>, Cursor),
    /// This client fell behind this worker's fan-out and missed `n` events.
    Lagged(u64),
    /// No source serves it any more.
    End,
}

/// Why a feed cannot start.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    NotServing(#[from] NotServing),
    #[error(transparent)]
    CatchUp(#[from] CatchUpError),
}

impl<S: ChatService> Feed<S> {
    /// Starts a feed of conversation `key` after `after` (a resume) or from now. `relayed`: the
    /// owner may serve it.
    pub async fn open(
        state: &Arc<S>,
        key: &str,
        after: Option<Cursor>,
        relayed: bool,
    ) -> Result<Self, OpenError> {
        let (source, from) = open_source(state, key, after, relayed).await?;
        let now = Instant::now();
        Ok(Self {
            state: state.clone(),
            key: key.to_string(),
            relayed,
            source,
            merge: Merge::new(from),
            look_at: now + OWNER_LOOK,
            moving: None,
            opened_at: now,
            fruitless: 0,
        })
    }

    /// Where the client stands.
    pub fn position(&self) -> Cursor {
        self.merge.cursor()
    }

    /// The next event.
    pub async fn next(&mut self) -> FeedNext {
        loop {
            let event = match &mut self.source {
                Source::Here { rx, stored } => match stored.pop_front() {
                    Some(e) => Some(e),
                    None => {
                        let may_look = self.relayed && self.moving.is_none();
                        let moving = self.moving.as_mut();
                        tokio::select! {
                            e = rx.recv() => match e {
                                Ok(e) => Some(e),
                                Err(RecvError::Lagged(n)) => return FeedNext::Lagged(n),
                                Err(RecvError::Closed) => None,
                            },
                            () = tokio::time::sleep_until(self.look_at), if may_look => {
                                self.look_at = Instant::now() + OWNER_LOOK;
                                self.moving = self.open_owner();
                                continue;
                            }
                            Some(opened) = async { match moving { Some(m) => Some(m.await), None => None } } => {
                                self.moving = None;
                                // from the position when it was asked: the merge drops what
                                // came from here meanwhile
                                if let Ok(Ok(relay)) = opened {
                                    self.source = Source::Owner { events: relay.events };
                                    self.opened_at = Instant::now();
                                }
                                continue;
                            }
                        }
                    }
                },
                Source::Owner { events } => events.recv().await,
            };
            match event {
                Some(e) => {
                    self.fruitless = 0;
                    if let Some(id) = self.merge.offer(e.pos) {
                        return FeedNext::Event(e, id);
                    }
                }
                None => {
                    tracing::debug!(conversation = %self.key, at = %self.merge.cursor(), "a live stream's source ended");
                    if !self.reopen().await {
                        return FeedNext::End;
                    }
                }
            }
        }
    }

    /// The source ended: goes on from where the client stands, wherever that is served now
    /// (trying again for a while: Kafka may be away, the owner failing over).
    async fn reopen(&mut self) -> bool {
        if let Some(moving) = self.moving.take() {
            moving.abort();
        }
        tokio::time::sleep_until(self.opened_at + REOPEN_GAP).await;
        self.fruitless += 1;
        let give_up = Instant::now() + REOPEN_LIMIT;
        loop {
            if self.state.closing().is_cancelled() {
                return false;
            }
            if self.fruitless > FRUITLESS_LIMIT {
                tracing::warn!(conversation = %self.key, "live stream sources keep ending without events; ending the stream (its client resumes from its last id)");
                return false;
            }
            self.opened_at = Instant::now();
            // a source that ended without giving anything is not asked again at once: this
            // worker's own reads serve until the next look at the owner
            let relayed = self.relayed && self.fruitless <= 1;
            match open_source(&self.state, &self.key, Some(self.merge.cursor()), relayed).await {
                Ok((source, _)) => {
                    self.source = source;
                    return true;
                }
                Err(e) if Instant::now() < give_up => {
                    tracing::debug!(conversation = %self.key, error = %e, "a live stream's source ended; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!(conversation = %self.key, error = %e, "a live stream's source ended and none took over");
                    return false;
                }
            }
        }
    }

    /// A feed read here moves to the conversation's owner once the owner can relay it (the
    /// conversation moved away, or its owner is back), so this worker may stop reading it: the
    /// relay is opened alongside, events flowing from here meanwhile.
    fn open_owner(&self) -> Option<Opening> {
        let url = owner_elsewhere(&*self.state, &self.key)?;
        let (state, key, from) = (self.state.clone(), self.key.clone(), self.merge.cursor());
        Some(tokio::spawn(
            async move { state.relay(&url, &key, Some(from)).await },
        ))
    }
}

/// The internal URL of the conversation's owner, when that is another worker not known to
/// have stopped heartbeating.
fn owner_elsewhere<S: ChatService>(state: &S, key: &str) -> Option<String> {
    let owner = state.owner_of(key)?;
    if owner.node_id == state.settings().node_id || matches!(state.peer(&owner.node_id), Peer::Silent) {
        return None;
    }
    owner.internal_url
}

/// The source of a feed from `after` (or now): the owner's relay when the owner is another
/// worker that answers, else this worker's fan-out. With where its events start.
async fn open_source<S: ChatService>(
    state: &Arc<S>,
    key: &str,
    after: Option<Cursor>,
    relayed: bool,
) -> Result<(Source, Cursor), OpenError> {
    if relayed && let Some(url) = owner_elsewhere(&**state, key) {
        match state.relay(&url, key, after).await {
            Ok(relay) => {
                tracing::debug!(conversation = %key, owner = %url, from = %relay.from, "a live stream relayed by the owner");
                return Ok((Source::Owner { events: relay.events }, relay.from));
            }
            Err(e) => {
                tracing::debug!(conversation = %key, owner = %url, error = %e, "the owner does not relay; reading here")
            }
        }
    }
    // subscribe before reading back, so nothing falls between the two
    let (rx, now) = state.subscribe(key).await?;
    tracing::debug!(conversation = %key, ?after, %now, "a live stream read here");
    match after {
        None => Ok((
            Source::Here {
                rx,
                stored: VecDeque::new(),
            },
            now,
        )),
        Some(from) => {
            let stored = state.catch_up(key, from).await?;
            Ok((
                Source::Here {
                    rx,
                    stored: stored.into_iter().map(Arc::new).collect(),
                },
                from,
            ))
        }
    }
}
