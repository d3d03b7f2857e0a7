//! AWS's event-stream framing (`application/vnd.amazon.eventstream`), in which streaming
//! operations such as Lambda's InvokeWithResponseStream send their events: each message is a
//! prelude (total and header lengths, with a CRC32 of them), string-valued headers, the
//! payload, and a CRC32 of the whole message.

use bytes::{BufMut, Bytes, BytesMut};

/// The header value type for strings.
const STRING: u8 = 7;

/// One event message: `:message-type: event`, its `:event-type` and `:content-type`, and the
/// payload.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":event-type", event_type),
            (":content-type", content_type),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// A message with string headers. Header names are at most 255 bytes and values at most
/// 65,535, as the format allows; longer ones are cut (callers pass short constants).
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded_headers = BytesMut::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        encoded_headers.put_u8(name.len() as u8);
        encoded_headers.put_slice(name);
        encoded_headers.put_u8(STRING);
        encoded_headers.put_u16(value.len() as u16);
        encoded_headers.put_slice(value);
    }
    let total = 12 + encoded_headers.len() + payload.len() + 4;
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(encoded_headers.len() as u32);
    let prelude_crc = crc32fast::hash(&out[..8]);
    out.put_u32(prelude_crc);
    out.put_slice(&encoded_headers);
    out.put_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.put_u32(message_crc);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes one message back: (headers, payload), checking both CRCs.
    fn decode(bytes: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let total = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        let headers_len = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, bytes.len());
        assert_eq!(
            u32::from_be_bytes(bytes[8..12].try_into().unwrap()),
            crc32fast::hash(&bytes[..8])
        );
        assert_eq!(
            u32::from_be_bytes(bytes[total - 4..].try_into().unwrap()),
            crc32fast::hash(&bytes[..total - 4])
        );
        let mut headers = Vec::new();
        let mut at = 12;
        while at < 12 + headers_len {
            let n = bytes[at] as usize;
            let name = String::from_utf8(bytes[at + 1..at + 1 + n].to_vec()).unwrap();
            at += 1 + n;
            assert_eq!(bytes[at], STRING);
            let v = u16::from_be_bytes(bytes[at + 1..at + 3].try_into().unwrap()) as usize;
            let value = String::from_utf8(bytes[at + 3..at + 3 + v].to_vec()).unwrap();
            at += 3 + v;
            headers.push((name, value));
        }
        (headers, bytes[12 + headers_len..total - 4].to_vec())
    }

    #[test]
    fn an_event_round_trips_with_valid_checksums() {
        let bytes = event("PayloadChunk", "application/octet-stream", b"hello");
        let (headers, payload) = decode(&bytes);
        assert_eq!(payload, b"hello");
        assert_eq!(
            headers,
            vec![
                (":event-type".into(), "PayloadChunk".into()),
                (":content-type".into(), "application/octet-stream".into()),
                (":message-type".into(), "event".into()),
            ]
        );
        let (_, empty) = decode(&message(&[], b""));
        assert!(empty.is_empty());
    }

    #[test]
    fn a_known_message_matches_the_format() {
        // No headers, no payload: 16 bytes, the prelude's CRC of 00000010 00000000.
        let bytes = message(&[], b"");
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[..8], &[0, 0, 0, 16, 0, 0, 0, 0]);
        assert_eq!(&bytes[8..12], &0x05c2_48ebu32.to_be_bytes());
        assert_eq!(&bytes[12..], &0x7d98_c8ffu32.to_be_bytes());
    }
}
