//! Audio as a WAV file: the `audio` device `NAME` records what the application plays into
//! the file its `file` property names (a boot argument, typically: `file=(bootarg)"out"`),
//! relative to the working directory; by default `NAME.wav`.
//!
//! The file is created (or truncated) when the device starts, with the format of the spec's
//! device, and its header is kept valid after every write: the unikernel ends with
//! `exit`, which runs no destructors, and may be killed. Frames are written as fast as the
//! application produces them, not paced in real time. A path that cannot seek (a pipe, such
//! as `--out=>(play -q -t wav -)` in bash) gets a streaming header whose sizes are
//! `0xFFFFFFFF`, which sox and most players read up to the end of the stream.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use compose_devices::audio::{self, AudioError, PcmFormat, wav};

use crate::Error;

/// Rates this sink records (WAV itself allows any `u32`).
const RATES: std::ops::RangeInclusive<u32> = 1000..=768_000;

/// A WAV file being recorded.
#[derive(Debug)]
pub struct Audio {
    format: PcmFormat,
    out: Mutex<Out>,
}

#[derive(Debug)]
struct Out {
    file: File,
    path: PathBuf,
    /// Bytes of samples written so far.
    data_len: u64,
    /// Whether the header's sizes are updated in place (false for a pipe).
    seekable: bool,
}

impl Audio {
    /// Creates (or truncates) the WAV file `file` for audio device `name`; an empty `file`
    /// is `NAME.wav` in the working directory.
    pub fn open(name: &'static str, format: PcmFormat, file: String) -> Result<Self, Error> {
        if !RATES.contains(&format.rate) {
            return Err(Error::new(format!(
                "rate {} Hz is not one unix records ({} to {} Hz)",
                format.rate,
                RATES.start(),
                RATES.end()
            )));
        }
        if format.channels == 0 {
            return Err(Error::new("an audio device needs at least one channel"));
        }
        let path = if file.is_empty() {
            PathBuf::from(format!("{name}.wav"))
        } else {
            PathBuf::from(file)
        };
        let fail = |e: io::Error| Error::new(format!("{}: {e}", path.display()));
        let mut file = File::create(&path).map_err(fail)?;
        // A regular file gets exact sizes; a pipe or a device gets a streaming header.
        let seekable = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let header = wav::header(&format, if seekable { 0 } else { u32::MAX });
        file.write_all(&header).map_err(fail)?;
        Ok(Audio {
            format,
            out: Mutex::new(Out {
                file,
                path,
                data_len: 0,
                seekable,
            }),
        })
    }
}

impl Out {
    fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        // WAV sizes are 32-bit: a recording stops growing at 4 GiB rather than wrap.
        let room = u64::from(u32::MAX) - wav::HEADER_LEN as u64 - self.data_len;
        if frames.len() as u64 > room {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "a WAV file holds at most 4 GiB",
            ));
        }
        self.file.write_all(frames)?;
        self.data_len += frames.len() as u64;
        if self.seekable {
            let data = self.data_len as u32;
            self.file
                .write_all_at(&(data + 36).to_le_bytes(), wav::RIFF_SIZE_OFFSET as u64)?;
            self.file
                .write_all_at(&data.to_le_bytes(), wav::DATA_SIZE_OFFSET as u64)?;
        }
        Ok(())
    }
}

impl audio::Audio for Audio {
    fn format(&self) -> PcmFormat {
        self.format
    }

    async fn write(&self, frames: &[u8]) -> Result<(), AudioError> {
        self.check_frames(frames.len())?;
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.append(frames).map_err(|e| {
            eprintln!("compose-unix: audio {}: {e}", out.path.display());
            AudioError::Io
        })
    }

    async fn flush(&self) -> Result<(), AudioError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.file.flush().map_err(|_| AudioError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compose_devices::audio::{Audio as _, SampleFormat};
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn now<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the WAV sink never waits"),
        }
    }

    const FORMAT: PcmFormat = PcmFormat::new(8000, 2, SampleFormat::S16Le);

    #[test]
    fn a_file_is_a_valid_wav_after_every_write() {
        let path =
            std::env::temp_dir().join(format!("compose-unix-audio-{}.wav", std::process::id()));
        let a = Audio::open("jack", FORMAT, path.display().to_string()).unwrap();
        for n in [1usize, 3] {
            now(a.write(&vec![7u8; 4 * n])).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let w = wav::parse(&bytes).unwrap();
            assert_eq!(w.format, FORMAT);
            assert_eq!(w.data_len as usize, bytes.len() - wav::HEADER_LEN);
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 16);
        assert_eq!(now(a.write(&[0; 3])), Err(AudioError::PartialFrame));
        now(a.flush()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = Audio::open(
            "jack",
            PcmFormat::new(10, 2, SampleFormat::U8),
            String::new(),
        );
        assert!(e.unwrap_err().to_string().contains("rate 10 Hz"));
    }

    #[test]
    fn a_pipe_gets_a_streaming_header() {
        let (mut rx, tx) = std::io::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", tx.as_raw_fd());
        let a = Audio::open("jack", FORMAT, path).unwrap();
        drop(tx);
        now(a.write(&[1, 2, 3, 4])).unwrap();
        drop(a);
        let mut bytes = Vec::new();
        rx.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 48);
        let w = wav::parse(&bytes).unwrap();
        assert_eq!((w.format, w.data_len), (FORMAT, u32::MAX));
        assert_eq!(&bytes[44..], &[1, 2, 3, 4]);
    }
}
