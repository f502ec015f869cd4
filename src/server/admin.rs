//! The write routes on an event loop: `DELETE /images/<name>`. The token is checked before
//! anything else, the name next; the unlink and the directory sync run on the loop's blocking
//! pool (monoio's `spawn_blocking`), never on the loop. The answer waits until the library has
//! withdrawn the image and every loop has taken that snapshot (one tick), so that no request sent
//! after the 204 can still get the image.

use std::time::{Duration, Instant};

use percent_encoding::percent_decode;

use super::api;
use super::conn::Answer;
use super::wire::Wire;
use super::worker::{Worker, MAX_TICK};
use crate::admin::check_name;
use crate::http::response::{self, Canned, Connection};
use crate::http::route::Route;

/// How long a deletion waits for the library to withdraw the image before answering anyway.
const WITHDRAW_WAIT: Duration = Duration::from_secs(5);

/// A `DELETE /images/<name>` to carry out.
pub struct Deletion<'b> {
    /// The name as sent (percent-encoded).
    pub name: &'b [u8],
    pub authorized: bool,
}

pub async fn delete(w: &Worker, deletion: Deletion<'_>, connection: Connection, wire: &mut Wire) -> Answer {
    let Some(admin) = w.shared.admin else {
        return canned(w, &response::METHOD_NOT_ALLOWED, connection, wire);
    };
    if !deletion.authorized {
        return canned(w, &response::UNAUTHORIZED, connection, wire);
    }
    let decoded: Vec<u8> = percent_decode(deletion.name).collect();
    let name = match check_name(&decoded) {
        Ok(name) => name.to_string(),
        Err(why) => return api::bad_request(w, Route::Image, why, connection, wire),
    };
    let removing = name.clone();
    let removed = match monoio::spawn_blocking(move || admin.remove(&removing)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("the blocking pool dropped the job")),
    };
    match removed {
        Ok(true) => {}
        Ok(false) => return canned(w, &response::NOT_FOUND, connection, wire),
        Err(e) => {
            tracing::error!("cannot delete {name}: {e}");
            return canned(w, &response::DELETE_FAILED, connection, wire);
        }
    }
    let started = Instant::now();
    while w.shared.published.load().find(deletion.name).is_some() {
        if started.elapsed() > WITHDRAW_WAIT {
            tracing::warn!("{name} was deleted but the library has not withdrawn it yet");
            break;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    monoio::time::sleep(MAX_TICK).await;
    canned(w, &response::NO_CONTENT, connection, wire)
}

fn canned(w: &Worker, canned: &'static Canned, connection: Connection, wire: &mut Wire) -> Answer {
    wire.load(canned.head, w.tails(), connection, canned.body);
    Answer { route: Route::Image, status: canned.status, connection, hit: None }
}
