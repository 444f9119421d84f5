//! The trailer: a thread that follows the writer and hashes the archive being written (for the
//! `.sha256` sidecar and the manifest's midstates) as soon as each member's bytes are final, so
//! the sidecar costs no read after the write.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, IoContext, Result};
use crate::fsio::{read_at, sync_range, PageBuf};
use crate::manifest::Midstates;
use crate::sha256::Sha256;
use crate::zip::pump::PIECE;

/// Hashes the archive being written, on its own thread, following the writer: a range is
/// handed over once its bytes are final (a member's local header is patched after its data),
/// and is read back from the page cache while the next member is written. A stored member's
/// sha256 is computed here too, side by side with the archive's (its bytes are the same), which
/// costs much less than a second stream on the writer. Writeback of each hashed range starts at
/// once, so the final fsync finds little left.
pub(crate) struct Trailer {
    tx: Option<Sender<ToTrailer>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Hashed>>>,
}

enum ToTrailer {
    /// Bytes before `upto` are final; `stored` is the data of a stored member among them.
    Final {
        upto: u64,
        stored: Option<Range<u64>>,
    },
    /// Send back what is hashed so far.
    Report(Sender<Hashed>),
}

/// What the trailer computed: the archive's sha256 (all zero until it finishes), its midstates,
/// and each stored member's sha256, in archive order.
#[derive(Clone, Default)]
pub(crate) struct Hashed {
    pub(crate) archive: [u8; 32],
    pub(crate) midstates: Midstates,
    pub(crate) stored: Vec<[u8; 32]>,
}

impl Trailer {
    pub(crate) fn start(file: &File, path: &Path) -> Result<Self> {
        let file = file.try_clone().at(path, "open")?;
        let owned = path.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (tx, rx) = channel::<ToTrailer>();
        let handle = std::thread::Builder::new()
            .name("modelcas-sidecar".into())
            .spawn(move || {
                let mut archive = Sha256::new();
                let mut hashed = Hashed::default();
                let mut buf = PageBuf::new(PIECE);
                let mut done = 0u64;
                for msg in rx {
                    let (upto, member) = match msg {
                        ToTrailer::Final { upto, stored } => (upto, stored),
                        ToTrailer::Report(reply) => {
                            let _ = reply.send(hashed.clone());
                            continue;
                        }
                    };
                    let from = done;
                    let mut m = Sha256::new();
                    while done < upto && !stopped.load(Ordering::Relaxed) {
                        let want =
                            usize::try_from(upto - done).map_or(buf.len(), |n| n.min(buf.len()));
                        let n = read_at(&file, &mut buf[..want], done).at(&owned, "read back")?;
                        if n == 0 {
                            return Err(Error::io(
                                &owned,
                                "read back",
                                io::Error::from(io::ErrorKind::UnexpectedEof),
                            ));
                        }
                        // Cut where a midstate is due, so it is taken at that exact offset.
                        let mut chunk = &buf[..n];
                        while !chunk.is_empty() {
                            let due = hashed.midstates.next();
                            let cut = usize::try_from(due - done)
                                .map_or(chunk.len(), |k| k.min(chunk.len()));
                            let (now, rest) = chunk.split_at(cut);
                            let end = done + now.len() as u64;
                            match &member {
                                Some(r) if r.start < end && done < r.end => {
                                    // Both within `now`, which is at most one piece.
                                    let at = |x: u64| usize::try_from(x - done).unwrap_or(0);
                                    let (lo, hi) = (at(r.start.max(done)), at(r.end.min(end)));
                                    Sha256::update_pair(&mut archive, now, &mut m, &now[lo..hi]);
                                }
                                _ => archive.update(now),
                            }
                            done = end;
                            if done == due {
                                let state = archive.midstate().ok_or_else(|| {
                                    Error::Invalid("a midstate fell inside a block".into())
                                })?;
                                hashed.midstates.push(state);
                            }
                            chunk = rest;
                        }
                    }
                    if member.is_some() {
                        hashed.stored.push(m.finalize());
                    }
                    sync_range(&file, from, done, libc::SYNC_FILE_RANGE_WRITE);
                }
                hashed.archive = archive.finalize();
                Ok(hashed)
            })
            .at(path, "start a thread for")?;
        Ok(Trailer {
            tx: Some(tx),
            stop,
            handle: Some(handle),
        })
    }

    /// Bytes before `upto` are final and flushed; `stored` is a stored member's data in them.
    pub(crate) fn advance(&self, upto: u64, stored: Option<Range<u64>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToTrailer::Final { upto, stored });
        }
    }

    /// Everything handed over so far, once it is hashed.
    pub(crate) fn report(&mut self) -> Result<Hashed> {
        let (reply, answer) = channel();
        if let Some(tx) = &self.tx {
            let _ = tx.send(ToTrailer::Report(reply));
        }
        match answer.recv() {
            Ok(hashed) => Ok(hashed),
            // The thread stopped early: its error says why.
            Err(_) => self.join(),
        }
    }

    pub(crate) fn finish(mut self, end: u64) -> Result<Hashed> {
        self.advance(end, None);
        self.join()
    }

    fn join(&mut self) -> Result<Hashed> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(Error::Invalid("the sidecar hasher is gone".into())),
        }
    }
}

impl Drop for Trailer {
    fn drop(&mut self) {
        // On error or cancellation: stop reading and wait, so no thread outlives the write.
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
