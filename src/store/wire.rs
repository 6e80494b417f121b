//! The xs_wire protocol (Xen's `xen/include/public/io/xs_wire.h`): message
//! types, the 16-byte header, payload framing and error names. Shared by the
//! built-in client and the embedded xenstored; pure, no I/O.
//!
//! Written by hand: there is no maintained Rust crate for the xenstore wire
//! format, and the format is small and stable.

/// Largest payload a message may carry (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;
/// Size of [`Header`] on the wire.
pub const HEADER_LEN: usize = 16;

/// Message types (`enum xsd_sockmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
    GetFeature = 23,
    SetFeature = 24,
    GetQuota = 25,
    SetQuota = 26,
}

impl MsgType {
    /// The type for a wire value, if it is one we know.
    pub fn from_u32(v: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            23 => GetFeature,
            24 => SetFeature,
            25 => GetQuota,
            26 => SetQuota,
            _ => return None,
        })
    }
}

/// The message header (`struct xsd_sockmsg`), native byte order as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    /// Encode to the 16 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// Decode from 16 wire bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            msg_type: w(0),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }
}

/// A whole message: header fields plus payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_type: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// Why bytes could not be framed as a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces more than [`PAYLOAD_MAX`] bytes.
    TooLong(u32),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong(n) => write!(
                f,
                "message payload of {n} bytes exceeds the xenstore limit of {PAYLOAD_MAX}"
            ),
        }
    }
}

impl Message {
    /// A message with the given fields.
    pub fn new(msg_type: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        Message {
            msg_type: msg_type as u32,
            req_id,
            tx_id,
            payload,
        }
    }

    /// Encode header and payload. Fails when the payload is over the limit.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        if self.payload.len() > PAYLOAD_MAX {
            return Err(FrameError::TooLong(self.payload.len() as u32));
        }
        let h = Header {
            msg_type: self.msg_type,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: self.payload.len() as u32,
        };
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&h.encode());
        v.extend_from_slice(&self.payload);
        Ok(v)
    }

    /// Try to take one whole message off the front of `buf`.
    /// `Ok(None)` means more bytes are needed; `Ok(Some((msg, used)))`.
    pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
        Ok(Message::frame(buf)?.map(|(h, total)| {
            (
                Message {
                    msg_type: h.msg_type,
                    req_id: h.req_id,
                    tx_id: h.tx_id,
                    payload: buf[HEADER_LEN..total].to_vec(),
                },
                total,
            )
        }))
    }

    /// [`Message::decode`] without copying: the header of the whole message
    /// at the front of `buf` and the message's length (its payload is
    /// `buf[HEADER_LEN..total]`); `Ok(None)` means more bytes are needed.
    pub fn frame(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&buf[..HEADER_LEN]);
        let h = Header::decode(&hb);
        if h.len as usize > PAYLOAD_MAX {
            return Err(FrameError::TooLong(h.len));
        }
        let total = HEADER_LEN + h.len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some((h, total)))
    }

    /// The type, if known.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u32(self.msg_type)
    }
}

/// The errors xenstored sends as strings (`xsd_errors`), in protocol order.
pub const ERRORS: &[(i32, &str)] = &[
    (libc::EINVAL, "EINVAL"),
    (libc::EACCES, "EACCES"),
    (libc::EEXIST, "EEXIST"),
    (libc::EISDIR, "EISDIR"),
    (libc::ENOENT, "ENOENT"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EIO, "EIO"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::EROFS, "EROFS"),
    (libc::EBUSY, "EBUSY"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EISCONN, "EISCONN"),
    (libc::E2BIG, "E2BIG"),
    (libc::EPERM, "EPERM"),
];

/// The protocol name of an errno value.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    ERRORS.iter().find(|(e, _)| *e == errno).map(|(_, n)| *n)
}

/// The errno value of a protocol error name.
pub fn errno_from_name(name: &str) -> Option<i32> {
    ERRORS.iter().find(|(_, n)| *n == name).map(|(e, _)| *e)
}

/// Split a payload into its NUL-terminated strings (a trailing piece with no
/// NUL is returned too).
pub fn split_nul(payload: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = payload.split(|b| *b == 0).collect();
    if payload.last() == Some(&0) || payload.is_empty() {
        out.pop();
    }
    out
}

/// Join strings, each NUL-terminated.
pub fn join_nul<S: AsRef<[u8]>>(parts: &[S]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_ref());
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_partial_frames() {
        let m = Message::new(MsgType::Read, 7, 3, b"a/b\0".to_vec());
        let bytes = m.encode().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 4);
        assert_eq!(Message::decode(&bytes[..10]).unwrap(), None);
        assert_eq!(Message::decode(&bytes[..19]).unwrap(), None);
        let (d, used) = Message::decode(&bytes).unwrap().unwrap();
        assert_eq!((d, used), (m, 20));
    }

    #[test]
    fn oversized_payload_is_refused_both_ways() {
        let m = Message::new(MsgType::Write, 1, 0, vec![b'x'; PAYLOAD_MAX + 1]);
        assert_eq!(m.encode(), Err(FrameError::TooLong(4097)));
        let mut h = Header {
            msg_type: 2,
            req_id: 0,
            tx_id: 0,
            len: 5000,
        }
        .encode()
        .to_vec();
        h.extend_from_slice(&[0; 8]);
        assert_eq!(Message::decode(&h), Err(FrameError::TooLong(5000)));
    }

    #[test]
    fn error_names_map_both_ways() {
        assert_eq!(errno_name(libc::EAGAIN), Some("EAGAIN"));
        assert_eq!(errno_from_name("E2BIG"), Some(libc::E2BIG));
        assert_eq!(errno_from_name("EWHAT"), None);
    }

    #[test]
    fn nul_splitting() {
        assert_eq!(split_nul(b"a\0bc\0"), vec![&b"a"[..], &b"bc"[..]]);
        assert_eq!(split_nul(b""), Vec::<&[u8]>::new());
        assert_eq!(split_nul(b"x"), vec![&b"x"[..]]);
        assert_eq!(join_nul(&["a", "b"]), b"a\0b\0".to_vec());
    }
}
