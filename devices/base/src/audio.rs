//! Audio output: a PCM sink that plays interleaved frames at a fixed rate.
//!
//! The `audio` device is a sink with a format fixed when the unikernel is built (its
//! descriptor's `rate`, `channels` and `format` properties): the application writes whole
//! frames in that format and the platform plays them, in order, without gaps as long as the
//! application keeps up. On unix the frames go to a WAV file (`--audio:NAME=PATH`); on a
//! Raspberry Pi 4 they go to the headphone jack (PWM1, crate `bcm2711-audio`).
//!
//! [`wav`] reads and writes the canonical 44-byte RIFF/WAVE header, so that an application
//! can play a WAV asset and a platform can record one.

use core::fmt;

/// How one sample is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// Unsigned 8-bit, 128 is silence (WAV's 8-bit format).
    U8,
    /// Signed 16-bit little-endian, 0 is silence (WAV's 16-bit format).
    S16Le,
}

impl SampleFormat {
    /// Bytes per sample.
    pub const fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::S16Le => 2,
        }
    }

    /// Bits per sample.
    pub const fn bits(self) -> u16 {
        (self.bytes() * 8) as u16
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SampleFormat::U8 => "u8",
            SampleFormat::S16Le => "s16",
        })
    }
}

/// The format of a PCM stream: frames per second, samples per frame and their encoding.
/// Frames are interleaved: a stereo frame is the left sample, then the right one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PcmFormat {
    /// Frames per second.
    pub rate: u32,
    /// Samples per frame (1 mono, 2 stereo: left then right).
    pub channels: u8,
    /// How each sample is encoded.
    pub sample: SampleFormat,
}

impl PcmFormat {
    /// A format of `rate` frames per second, `channels` samples per frame.
    pub const fn new(rate: u32, channels: u8, sample: SampleFormat) -> Self {
        PcmFormat {
            rate,
            channels,
            sample,
        }
    }

    /// Bytes per frame.
    pub const fn frame_bytes(&self) -> usize {
        self.channels as usize * self.sample.bytes()
    }

    /// Bytes per second.
    pub const fn byte_rate(&self) -> u64 {
        self.rate as u64 * self.frame_bytes() as u64
    }
}

impl fmt::Display for PcmFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ch = match self.channels {
            1 => "mono",
            2 => "stereo",
            _ => "",
        };
        if ch.is_empty() {
            write!(
                f,
                "{} Hz, {} channels, {}",
                self.rate, self.channels, self.sample
            )
        } else {
            write!(f, "{} Hz {ch} {}", self.rate, self.sample)
        }
    }
}

/// Why an audio operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioError {
    /// The buffer is not a whole number of frames of the device's format.
    PartialFrame,
    /// The output stopped taking samples (the hardware stalled, the host file failed).
    Io,
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AudioError::PartialFrame => "audio buffer is not a whole number of frames",
            AudioError::Io => "audio output failed",
        })
    }
}

/// A PCM sink.
pub trait Audio {
    /// The format [`Audio::write`] takes.
    fn format(&self) -> PcmFormat;

    /// Plays `frames`: interleaved samples in [`Audio::format`], a whole number of frames.
    /// Returns once every frame has been handed to the output, which may be before it has
    /// been heard (see [`Audio::flush`]). Frames of successive calls follow each other
    /// without a gap.
    async fn write(&self, frames: &[u8]) -> Result<(), AudioError>;

    /// Waits until every frame written has been played (or stored).
    async fn flush(&self) -> Result<(), AudioError>;

    /// Checks that `len` bytes are a whole number of frames.
    fn check_frames(&self, len: usize) -> Result<(), AudioError> {
        if len.is_multiple_of(self.format().frame_bytes()) {
            Ok(())
        } else {
            Err(AudioError::PartialFrame)
        }
    }
}

/// The canonical WAV header (RIFF, a 16-byte PCM `fmt ` chunk, then `data`).
pub mod wav {
    use super::{PcmFormat, SampleFormat};
    use core::fmt;

    /// The size of the header [`header`] writes.
    pub const HEADER_LEN: usize = 44;
    /// Byte offset of the RIFF chunk size (file size − 8).
    pub const RIFF_SIZE_OFFSET: usize = 4;
    /// Byte offset of the data chunk size.
    pub const DATA_SIZE_OFFSET: usize = 40;

    /// The header of a WAV file of `data_len` bytes of samples in `format`. A stream of
    /// unknown length uses `u32::MAX` for both sizes, as streaming writers do.
    pub fn header(format: &PcmFormat, data_len: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let riff = if data_len == u32::MAX {
            u32::MAX
        } else {
            data_len.saturating_add(36)
        };
        let frame = format.frame_bytes() as u16;
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&riff.to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
        h[22..24].copy_from_slice(&u16::from(format.channels).to_le_bytes());
        h[24..28].copy_from_slice(&format.rate.to_le_bytes());
        h[28..32].copy_from_slice(&(format.rate.wrapping_mul(u32::from(frame))).to_le_bytes());
        h[32..34].copy_from_slice(&frame.to_le_bytes());
        h[34..36].copy_from_slice(&format.sample.bits().to_le_bytes());
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&data_len.to_le_bytes());
        h
    }

    /// Why bytes are not a WAV file this module reads.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum WavError {
        /// No RIFF/WAVE signature.
        NotWav,
        /// A chunk runs past the bytes given, or `fmt `/`data` is missing.
        Truncated,
        /// Not integer PCM of 8 or 16 bits with 1 to 255 channels.
        Unsupported,
    }

    impl fmt::Display for WavError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                WavError::NotWav => "not a RIFF/WAVE file",
                WavError::Truncated => "WAV header truncated or without fmt/data chunks",
                WavError::Unsupported => "WAV is not 8- or 16-bit integer PCM",
            })
        }
    }

    /// A parsed WAV header: the format and where the samples are.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Wav {
        /// The samples' format.
        pub format: PcmFormat,
        /// Byte offset of the first sample in the file.
        pub data_offset: usize,
        /// Bytes of samples (as the data chunk says; a streamed file says `u32::MAX`).
        pub data_len: u32,
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// Parses the header at the start of `bytes` (which need only reach the start of the
    /// data chunk). Chunks other than `fmt ` and `data` (`LIST`, ...) are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(WavError::NotWav);
        }
        let mut at = 12usize;
        let mut format = None;
        loop {
            let id = bytes.get(at..at + 4).ok_or(WavError::Truncated)?;
            let size = u32_at(bytes, at + 4).ok_or(WavError::Truncated)?;
            let body = at + 8;
            if id == b"data" {
                let format = format.ok_or(WavError::Truncated)?;
                return Ok(Wav {
                    format,
                    data_offset: body,
                    data_len: size,
                });
            }
            if id == b"fmt " {
                let tag = u16_at(bytes, body).ok_or(WavError::Truncated)?;
                let channels = u16_at(bytes, body + 2).ok_or(WavError::Truncated)?;
                let rate = u32_at(bytes, body + 4).ok_or(WavError::Truncated)?;
                let bits = u16_at(bytes, body + 14).ok_or(WavError::Truncated)?;
                // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE, which sox writes for > 2 channels.
                let sample = match (tag, bits) {
                    (1 | 0xFFFE, 8) => SampleFormat::U8,
                    (1 | 0xFFFE, 16) => SampleFormat::S16Le,
                    _ => return Err(WavError::Unsupported),
                };
                let channels = u8::try_from(channels)
                    .ok()
                    .filter(|&c| c > 0)
                    .ok_or(WavError::Unsupported)?;
                if rate == 0 {
                    return Err(WavError::Unsupported);
                }
                format = Some(PcmFormat::new(rate, channels, sample));
            }
            // Chunks are padded to an even size.
            at = body
                .checked_add(size as usize + (size as usize & 1))
                .ok_or(WavError::Truncated)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wav::{self, WavError};
    use super::*;

    #[test]
    fn headers_round_trip() {
        let f = PcmFormat::new(22050, 2, SampleFormat::S16Le);
        assert_eq!(f.frame_bytes(), 4);
        assert_eq!(alloc::format!("{f}"), "22050 Hz stereo s16");
        let h = wav::header(&f, 4000);
        let w = wav::parse(&h).unwrap();
        assert_eq!(w.format, f);
        assert_eq!((w.data_offset, w.data_len), (44, 4000));
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 4036);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 88200);
    }

    #[test]
    fn other_chunks_are_skipped_and_bad_files_refused() {
        let f = PcmFormat::new(8000, 1, SampleFormat::U8);
        let h = wav::header(&f, 10);
        let mut v = h[..36].to_vec();
        v.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
        v.extend_from_slice(&h[36..]);
        let w = wav::parse(&v).unwrap();
        assert_eq!((w.format, w.data_offset), (f, 56));
        assert_eq!(wav::parse(b"RIFX....WAVE"), Err(WavError::NotWav));
        assert_eq!(wav::parse(&h[..30]), Err(WavError::Truncated));
        let mut float = h;
        float[20] = 3;
        assert_eq!(wav::parse(&float), Err(WavError::Unsupported));
    }
}
