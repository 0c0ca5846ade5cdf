//! Sequence tracking and frame parsing, with a scripted engine buffer.

use super::*;

/// An engine's replay buffer: batches `first..=last`, payload = the seq as text.
struct Buffer {
    first: u64,
    last: u64,
    asked: Vec<u64>,
}

/// A buffer whose first reply loses one batch, as a ROUTER past its high-water mark.
struct Holey {
    inner: Buffer,
    hole: Option<u64>,
}

impl Replay for Holey {
    fn replay(&mut self, start: u64) -> Result<Vec<Message>, IngestError> {
        let mut batches = self.inner.replay(start)?;
        if let Some(hole) = self.hole.take() {
            batches.retain(|m| m.seq != hole);
        }
        Ok(batches)
    }
}

impl Replay for Buffer {
    fn replay(&mut self, start: u64) -> Result<Vec<Message>, IngestError> {
        self.asked.push(start);
        Ok((start.max(self.first)..=self.last)
            .map(|seq| Message {
                seq,
                payload: seq.to_string().into_bytes(),
            })
            .collect())
    }
}

/// Records applied payloads; a clear empties the record.
#[derive(Default)]
struct Log {
    applied: Vec<String>,
    counters: Counters,
}

impl Sink for Log {
    fn apply(&mut self, payload: &[u8]) {
        self.applied
            .push(String::from_utf8_lossy(payload).into_owned());
    }
    fn clear(&mut self) {
        self.applied.clear();
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
}

fn live(f: &mut Follower<Buffer>, log: &mut Log, seq: u64) {
    f.on_live(seq, seq.to_string().as_bytes(), log);
}

fn stats(log: &Log) -> super::super::stats::BackendStats {
    log.counters
        .snapshot("b", "m", super::super::stats::Mode::Events, 0)
}

#[test]
fn in_order_messages_apply_without_replay() {
    let mut f = Follower::new(Some(Buffer {
        first: 0,
        last: 2,
        asked: vec![],
    }));
    let mut log = Log::default();
    for seq in 0..3 {
        live(&mut f, &mut log, seq);
    }
    assert_eq!(log.applied, ["0", "1", "2"]);
    assert!(f.replay.as_ref().is_some_and(|b| b.asked.is_empty()));
    assert_eq!(stats(&log).last_seq, Some(2));
}

#[test]
fn a_gap_is_replayed_and_not_applied_twice() {
    let mut f = Follower::new(Some(Buffer {
        first: 0,
        last: 6,
        asked: vec![],
    }));
    let mut log = Log::default();
    live(&mut f, &mut log, 0);
    live(&mut f, &mut log, 1);
    live(&mut f, &mut log, 4); // 2 and 3 lost; the buffer already holds up to 6
    live(&mut f, &mut log, 5); // queued live duplicates of replayed batches: skipped
    live(&mut f, &mut log, 6);
    assert_eq!(log.applied, ["0", "1", "2", "3", "4", "5", "6"]);
    let s = stats(&log);
    assert_eq!((s.gaps, s.replays, s.clears, s.restarts), (1, 1, 0, 0));
    assert_eq!(f.replay.as_ref().map(|b| b.asked.clone()), Some(vec![2]));
}

#[test]
fn a_gap_the_buffer_no_longer_covers_clears_first() {
    let mut f = Follower::new(Some(Buffer {
        first: 3,
        last: 4,
        asked: vec![],
    }));
    let mut log = Log::default();
    live(&mut f, &mut log, 0);
    live(&mut f, &mut log, 4); // 1..=2 are gone from the engine's buffer
    assert_eq!(log.applied, ["3", "4"], "state before the hole was dropped");
    assert_eq!(stats(&log).clears, 1);
}

#[test]
fn a_gap_without_replay_clears() {
    let mut f: Follower<Buffer> = Follower::new(None);
    let mut log = Log::default();
    live(&mut f, &mut log, 0);
    live(&mut f, &mut log, 2);
    assert_eq!(log.applied, ["2"]);
    let s = stats(&log);
    assert_eq!((s.gaps, s.clears, s.replays), (1, 1, 0));
}

#[test]
fn a_sequence_going_back_is_a_restart() {
    let mut f = Follower::new(Some(Buffer {
        first: 0,
        last: 1,
        asked: vec![],
    }));
    let mut log = Log::default();
    for seq in 0..5 {
        live(&mut f, &mut log, seq);
    }
    // The engine restarted and has published 0 and 1 since; we see 1 first.
    live(&mut f, &mut log, 1);
    assert_eq!(log.applied, ["0", "1"]);
    let s = stats(&log);
    assert_eq!((s.restarts, s.clears, s.gaps), (1, 1, 0));
}

#[test]
fn a_late_join_replays_from_zero() {
    let mut f = Follower::new(Some(Buffer {
        first: 0,
        last: 3,
        asked: vec![],
    }));
    let mut log = Log::default();
    live(&mut f, &mut log, 3);
    assert_eq!(log.applied, ["0", "1", "2", "3"]);
    assert_eq!(stats(&log).gaps, 0, "joining late is not a gap");
}

#[test]
fn live_frames_must_be_three_with_an_eight_byte_seq() {
    let ok = parse_live(vec![b"kv@a".to_vec(), 5u64.to_be_bytes().to_vec(), vec![1]]);
    let (topic, m) = ok.expect("valid message");
    assert_eq!(
        (topic.as_slice(), m.seq, m.payload.as_slice()),
        (&b"kv@a"[..], 5, &[1u8][..])
    );
    assert!(parse_live(vec![vec![], 5u64.to_be_bytes().to_vec()]).is_none());
    assert!(parse_live(vec![vec![], vec![0; 4], vec![1]]).is_none());
    assert!(parse_live(vec![vec![], vec![0; 8], vec![1], vec![]]).is_none());
}

#[test]
fn replay_replies_in_both_layouts() {
    let seq = 7u64.to_be_bytes().to_vec();
    let end = u64::MAX.to_be_bytes().to_vec();
    let old = parse_reply(vec![vec![], seq.clone(), vec![9]]);
    assert!(matches!(old, Some(Reply::Batch(Message { seq: 7, .. }))));
    let new = parse_reply(vec![vec![], b"kv@a".to_vec(), seq, vec![9]]);
    assert!(matches!(new, Some(Reply::Batch(Message { seq: 7, .. }))));
    assert!(matches!(
        parse_reply(vec![vec![], end.clone(), vec![]]),
        Some(Reply::End)
    ));
    assert!(matches!(
        parse_reply(vec![vec![], vec![], end, vec![]]),
        Some(Reply::End)
    ));
    assert!(parse_reply(vec![vec![1]]).is_none());
}

#[test]
fn a_lost_tail_is_replayed_once_the_queue_is_dry() {
    let mut f = Follower::new(Some(Buffer {
        first: 0,
        last: 4,
        asked: vec![],
    }));
    let mut log = Log::default();
    live(&mut f, &mut log, 0);
    live(&mut f, &mut log, 1);
    f.on_lost(4, &mut log); // 2..=4 never reached the queue
    assert_eq!(log.applied, ["0", "1", "2", "3", "4"]);
    live(&mut f, &mut log, 5);
    assert_eq!(
        stats(&log).restarts,
        0,
        "the stream continues after the lost tail"
    );
    f.on_lost(3, &mut log); // already applied by replay: nothing to do
    assert_eq!(f.replay.as_ref().map(|b| b.asked.len()), Some(1));
}

#[test]
fn a_replay_with_a_hole_is_asked_again() {
    let inner = Buffer {
        first: 0,
        last: 5,
        asked: vec![],
    };
    let mut f = Follower::new(Some(Holey {
        inner,
        hole: Some(3),
    }));
    let mut log = Log::default();
    f.on_live(0, b"0", &mut log);
    f.on_live(5, b"5", &mut log);
    assert_eq!(log.applied, ["0", "1", "2", "3", "4", "5"]);
    let s = stats(&log);
    assert_eq!((s.gaps, s.replays, s.clears), (1, 2, 0));
}

#[test]
fn an_oversized_message_is_counted_and_not_queued() {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let route = Route {
        tx,
        counters: Arc::new(Counters::default()),
        lost: Arc::default(),
    };
    let frames = |payload: usize| vec![b"kv@a".to_vec(), vec![0; 8], vec![0xc0; payload]];
    // 4 + 8 + 100 bytes: one over a cap of 111, each frame well under it.
    route.take(frames(100), 111);
    assert!(rx.try_recv().is_err(), "nothing queued");
    assert_eq!(route.counters.rejected(Reject::TooLarge), 1);
    route.take(frames(99), 111);
    assert_eq!(rx.try_recv().map(|m| m.payload.len()).ok(), Some(99));
    route.take(vec![vec![1]], 111);
    assert_eq!(route.counters.rejected(Reject::BadFrames), 1);
}

#[test]
fn the_index_sink_rejects_oversized_and_undecodable_payloads() {
    use super::super::event::{Batch, encode_batch};
    let index = Arc::new(parking_lot::RwLock::new(Index::new(16, None)));
    let slot = index.write().add_slot(None).expect("slot");
    let counters = Arc::new(Counters::default());
    let limits = Limits {
        max_message_bytes: 64,
        ..Limits::default()
    };
    let mut sink = IndexSink::new(index, slot, "m".into(), counters.clone(), None, limits);
    sink.apply(&[0xc0; 65]); // a replay reply over the cap
    sink.apply(&[0x92, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff]);
    sink.apply(&[0xc0]);
    sink.apply(&encode_batch(&Batch::default()));
    assert_eq!(
        Reject::ALL.map(|r| counters.rejected(r)),
        [1, 0, 1, 1, 0, 0],
        "too large, not msgpack, not a batch"
    );
    let s = counters.snapshot("b", "m", super::super::stats::Mode::Events, 0);
    assert_eq!((s.bad_messages, s.batches_applied), (3, 1));
}

#[test]
fn a_replay_takes_at_most_its_cap_of_batches() {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).expect("router");
    router.set_linger(0).expect("linger");
    router.bind("tcp://127.0.0.1:0").expect("bind");
    let endpoint = router
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8");
    let engine = std::thread::spawn(move || {
        let frames = router.recv_multipart(0).expect("request");
        let start = u64::from_be_bytes(frames[2].as_slice().try_into().expect("seq"));
        for seq in start..start + 50 {
            let reply: [&[u8]; 4] = [&frames[0], b"", &seq.to_be_bytes(), b"x"];
            router.send_multipart(reply, 0).expect("reply");
        }
        let end: [&[u8]; 4] = [&frames[0], b"", &u64::MAX.to_be_bytes(), b""];
        router.send_multipart(end, 0).expect("end");
        router // kept open until the replay is read
    });
    let limits = Limits {
        max_replay_batches: 10,
        ..Limits::default()
    };
    let mut replay = ZmqReplay::new(ctx, endpoint, limits);
    let batches = replay.replay(7).expect("replay");
    let seqs: Vec<u64> = batches.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (7..17).collect::<Vec<_>>());
    drop(engine.join().expect("engine"));
}
