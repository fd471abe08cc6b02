//! The jukebox example: plays WAV tracks crunched into the unikernel (an `assets` device)
//! into an `audio` device: a WAV file on unix, the headphone jack on a Raspberry Pi 4.
//!
//! Every track must be in the audio device's format (rate, channels, sample encoding):
//! the jukebox does not resample, it refuses a track that does not fit, naming both
//! formats. Tracks are streamed from the store in chunks, so they need not fit in memory.
#![no_std]
extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use compose_devices::audio::{Audio, wav};
use compose_devices::console::Console;
use compose_devices::kv::{Encoding, Kv};

/// Bytes read from the store and written to the device at a time.
const CHUNK: usize = 16 * 1024;
/// How much of a file the header may take (a WAV with `LIST` metadata before `data`).
const HEADER_MAX: usize = 4096;

/// Plays `track` from `music`, or every `.wav` in it in key order when `track` is empty,
/// then waits until the device has played everything. Logs one line per track
/// (`jukebox: playing KEY (FRAMES frames, SECONDS s)`) and exits 0, or logs what went
/// wrong and exits 1.
pub async fn start<C: Console, K: Kv, A: Audio>(
    console: &'static C,
    music: &'static K,
    jack: &'static A,
    track: String,
) -> u8 {
    match play_all(console, music, jack, &track).await {
        Ok(n) => {
            console.log(&format!("jukebox: played {n} track(s)"));
            0
        }
        Err(e) => {
            console.log(&format!("jukebox: {e}"));
            1
        }
    }
}

async fn play_all<C: Console, K: Kv, A: Audio>(
    console: &C,
    music: &K,
    jack: &A,
    track: &str,
) -> Result<usize, String> {
    let keys: Vec<String> = if track.is_empty() {
        let mut keys = Vec::new();
        loop {
            let batch = music
                .list("", keys.last().map(String::as_str), 256)
                .await
                .map_err(|e| format!("cannot list the tracks: {e}"))?;
            if batch.is_empty() {
                break;
            }
            keys.extend(batch);
        }
        keys.retain(|k| k.ends_with(".wav"));
        if keys.is_empty() {
            return Err("no .wav track in the music assets".into());
        }
        keys
    } else {
        vec![String::from(track)]
    };
    for key in &keys {
        play(console, music, jack, key).await?;
    }
    jack.flush()
        .await
        .map_err(|e| format!("audio output: {e}"))?;
    Ok(keys.len())
}

async fn play<C: Console, K: Kv, A: Audio>(
    console: &C,
    music: &K,
    jack: &A,
    key: &str,
) -> Result<(), String> {
    let entry = music
        .get(key)
        .await
        .map_err(|e| format!("{key}: {e}"))?
        .ok_or_else(|| format!("no track {key} in the music assets"))?;
    let mut buf = vec![0u8; CHUNK];
    let head = HEADER_MAX.min(entry.size as usize);
    let n = music
        .read(&entry, Encoding::Identity, 0, &mut buf[..head])
        .await
        .map_err(|e| format!("{key}: {e}"))?;
    let w = wav::parse(&buf[..n]).map_err(|e| format!("{key}: {e}"))?;
    let want = jack.format();
    if w.format != want {
        return Err(format!(
            "{key} is {}, but the audio device plays {want}: convert it (sox {key} -r {} -c {} -b {} out.wav)",
            w.format,
            want.rate,
            want.channels,
            want.sample.bits()
        ));
    }
    // The data chunk as the file holds it: its declared size, cut at the end of the file
    // and at the last whole frame.
    let frame = want.frame_bytes() as u64;
    let start = w.data_offset as u64;
    let in_file = entry.size.saturating_sub(start);
    let len = (u64::from(w.data_len).min(in_file) / frame) * frame;
    console.log(&format!(
        "jukebox: playing {key} ({} frames, {}.{:03} s)",
        len / frame,
        len / frame / u64::from(want.rate),
        len / frame % u64::from(want.rate) * 1000 / u64::from(want.rate)
    ));
    // Whole frames per write.
    let chunk = (CHUNK as u64 / frame * frame) as usize;
    let mut done = 0u64;
    while done < len {
        let take = chunk.min((len - done) as usize);
        let n = music
            .read(&entry, Encoding::Identity, start + done, &mut buf[..take])
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        if n != take {
            return Err(format!("{key}: the store returned a short read"));
        }
        jack.write(&buf[..take])
            .await
            .map_err(|e| format!("audio output: {e}"))?;
        done += take as u64;
    }
    Ok(())
}
