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
