//! PutMedia's incremental MKV reader on arbitrary bytes, delivered in arbitrary chunks:
//! it must never panic, never report a fragment without a keyframe first, and every
//! fragment it completes must parse again from its stored header (what GetMedia, HLS and
//! clips read later).
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_video::mkv::{Header, Ingest, IngestEvent};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so one input covers many ways the body arrives.
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut ingest = Ingest::new();
    let mut events = Vec::new();
    let mut failed = false;
    for piece in body.chunks(chunk) {
        if ingest.push(piece, &mut events).is_err() {
            failed = true;
            break;
        }
    }
    if !failed {
        let _ = ingest.finish(&mut events);
    }
    for event in &events {
        if let IngestEvent::Fragment(fragment) = event {
            let header = Header::parse_stored(&fragment.header)
                .expect("a completed fragment's stored header parses again");
            let body = millrace_video::mkv::cluster_body(&fragment.cluster)
                .expect("a completed fragment's cluster has a body");
            millrace_video::mkv::parse_cluster(&header, body)
                .expect("a completed fragment's cluster parses again");
        }
    }
});
