//! Tells the other nodes of a fleet at once that the bucket changed, through the PostgreSQL
//! database the fleet already shares for its hits: `NOTIFY keiko_library` after a write route
//! changed the bucket, and a `LISTEN keiko_library` connection on every node that makes its
//! mirror list the bucket now rather than at its next poll. Without PostgreSQL (or while it does
//! not answer) the poll alone carries changes, a few seconds later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};

const CHANNEL: &str = "keiko_library";
/// How often the listener looks whether it should stop, and longest wait between reconnections.
const TICK: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Sends the announcements, on a thread of its own: a connection that hangs (a half-open TCP
/// connection waits minutes for the kernel to give up) must not hold up the mirror that asks.
pub(crate) struct Announcer {
    wake: crossbeam_channel::Sender<()>,
}

impl Announcer {
    /// Starts the thread; it ends when the announcer is dropped.
    pub(crate) fn start(config: Config) -> std::io::Result<Announcer> {
        let (wake, woken) = crossbeam_channel::bounded(1);
        std::thread::Builder::new().name("keiko-announce".into()).spawn(move || {
            let mut client = None;
            for () in woken {
                announce(&config, &mut client);
            }
        })?;
        Ok(Announcer { wake })
    }

    /// Tells every listening node to list the bucket now (one announcement waiting is enough).
    pub(crate) fn announce(&self) {
        let _ = self.wake.try_send(());
    }
}

/// One NOTIFY. A failure is logged and forgotten: the other nodes' polls will see the change.
fn announce(config: &Config, client: &mut Option<Client>) {
    if client.as_ref().is_none_or(Client::is_closed) {
        *client = config.connect(NoTls).ok();
    }
    let sent = match client {
        Some(client) => client.batch_execute(&format!("NOTIFY {CHANNEL}")).map_err(|e| e.to_string()),
        None => Err("PostgreSQL does not answer".into()),
    };
    if let Err(e) = sent {
        *client = None;
        tracing::debug!(
            "cannot announce a change of the bucket to the fleet ({e}); the other nodes' polls will see it"
        );
    }
}

/// The listening connection's thread.
pub(crate) struct Listener {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Listener {
    /// Listens for the other nodes' announcements and calls `changed` at each (and after each
    /// reconnection, for any it missed meanwhile).
    pub(crate) fn start(config: Config, changed: impl Fn() + Send + 'static) -> std::io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keiko-listen".into())
            .spawn(move || listen(&config, &changed, &stopping))?;
        Ok(Listener { stop, thread })
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        super::join_briefly(self.thread, "fleet listener");
    }
}

fn listen(config: &Config, changed: &dyn Fn(), stop: &AtomicBool) {
    let mut retry = TICK;
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let connected = config.connect(NoTls).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            Ok(client)
        });
        let mut client = match connected {
            Ok(client) => client,
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!("cannot listen for the fleet's changes of the bucket ({e}); following it by polling alone");
                }
                sleep_unless_stopped(retry, stop);
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };
        if std::mem::take(&mut warned) {
            tracing::info!("listening for the fleet's changes of the bucket again");
        }
        retry = TICK;
        // Any missed while not listening: list once now.
        changed();
        while !stop.load(Ordering::Relaxed) && !client.is_closed() {
            let mut notifications = client.notifications();
            let next = notifications.timeout_iter(TICK).next();
            match next {
                Ok(Some(_)) => changed(),
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        std::thread::sleep(TICK.min(until.saturating_duration_since(std::time::Instant::now())));
    }
}
