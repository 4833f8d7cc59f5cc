//! Small encoders the channels share: base64, percent-encoding, HMAC-SHA256, cutting text on a
//! UTF-8 boundary, RFC 2047 encoded words, and Beijing-time dates.

use base64::Engine as _;
use ring::hmac;

use super::{ChannelKind, NotifyError};
use crate::model::{CST_OFFSET, DAY, Millis};

/// Appended where a message was cut to fit a channel's size limit, so that a reader knows
/// there was more (the console has it all).
pub const TRUNCATION_MARKER: &str = "…（内容过长，已截断）";

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// HMAC-SHA256 of `message` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, message).as_ref().to_vec()
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so the result is safe as a
/// query value whatever the receiving side's decoder (`+`, `/` and `=` of base64 included).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
    }
    out
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0x0f)])
}

/// `text` unchanged if it fits in `max_bytes`, else cut on a character boundary and ended with
/// [`TRUNCATION_MARKER`] so that the whole stays within `max_bytes`.
pub(crate) fn truncate_utf8(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    // A limit smaller than the marker itself leaves no room to say anything; cut bare.
    let (budget, marker) = if max_bytes >= TRUNCATION_MARKER.len() {
        (max_bytes - TRUNCATION_MARKER.len(), TRUNCATION_MARKER)
    } else {
        (max_bytes, "")
    };
    let mut cut = budget;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + marker.len());
    out.push_str(&text[..cut]);
    out.push_str(marker);
    out
}

/// An RFC 2047 `B` encoding of `text` in UTF-8, as one or more encoded words of at most 75
/// characters each (§2) and short enough to follow a header name on a 76-character line,
/// folded onto continuation lines; ASCII text without control characters
/// is returned as it is. Control characters never reach a header either way.
pub(crate) fn rfc2047(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii() {
        return clean;
    }
    // RFC 2047 §2 limits a header line holding encoded words to 76 characters. A word is
    // "=?UTF-8?B?" + base64 + "?=": with 13 base64 quads (39 bytes of text) it is 64
    // characters, which leaves room for the longest header name used here ("Subject: ").
    // Never split a character across two words (§5 rule 3).
    const MAX_CHUNK: usize = 39;
    let mut words = Vec::new();
    let mut rest = clean.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
        rest = tail;
    }
    words.join("\r\n ")
}

/// Base64 of `bytes` in lines of 76 characters ended by CRLF (RFC 2045 §6.8).
pub(crate) fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    // Base64 is ASCII, so every index is a character boundary.
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(76));
        out.push_str(line);
        out.push_str("\r\n");
        rest = tail;
    }
    out
}

/// The URL with its query string hidden (robot keys and tokens live there).
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?<hidden>"),
        None => url.to_owned(),
    }
}

/// Checks that `url` is an absolute http(s) URL without whitespace or control characters and,
/// when `required_query` is given, that it carries that query parameter with a value.
pub(crate) fn check_url(
    channel: ChannelKind,
    url: &str,
    required_query: Option<&'static str>,
) -> Result<(), NotifyError> {
    let invalid = |reason| NotifyError::InvalidUrl {
        channel,
        url: redact_url(url),
        reason,
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with https:// or http://"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace or control characters"));
    }
    if url.contains('#') {
        return Err(invalid("it must not contain a fragment (#)"));
    }
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if host_end == 0 {
        return Err(invalid("the host is missing"));
    }
    if let Some(name) = required_query {
        let present = query_value(url, name).is_some_and(|value| !value.is_empty());
        if !present {
            return Err(invalid(match name {
                "key" => "the query parameter key is missing or empty",
                "access_token" => "the query parameter access_token is missing or empty",
                _ => "a required query parameter is missing or empty",
            }));
        }
    }
    Ok(())
}

/// The raw value of query parameter `name` in `url`.
pub(crate) fn query_value<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// `url` with `pairs` appended to its query string (values already encoded).
pub(crate) fn append_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = url.to_owned();
    for (key, value) in pairs {
        let separator = if out.contains('?') {
            if out.ends_with('?') || out.ends_with('&') {
                ""
            } else {
                "&"
            }
        } else {
            "?"
        };
        out.push_str(separator);
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// A civil date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    /// 0 = Sunday.
    pub weekday: u64,
}

/// `at` in Beijing time (UTC+8).
pub(crate) fn beijing(at: Millis) -> Civil {
    let local = at.saturating_add(CST_OFFSET);
    let days = local / DAY;
    let seconds_of_day = (local % DAY) / 1000;
    // Days since 1970-01-01 fit an i64 for every u64 millisecond count.
    let days = i64::try_from(days).unwrap_or(i64::MAX / 2);
    let (year, month, day) = crate::calendar::civil_from_days(days);
    // month is 1..=12 and day 1..=31 by construction.
    let (month, day) = (
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    );
    Civil {
        year,
        month,
        day,
        hour: seconds_of_day / 3600,
        minute: seconds_of_day / 60 % 60,
        second: seconds_of_day % 60,
        // 1970-01-01 was a Thursday.
        weekday: (local / DAY + 4) % 7,
    }
}

/// `2025-11-26 10:17` in Beijing time, for message text.
pub(crate) fn beijing_minute(at: Millis) -> String {
    let t = beijing(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// An RFC 5322 §3.3 date in Beijing time: `Wed, 26 Nov 2025 10:17:36 +0800`.
pub(crate) fn rfc5322_date(at: Millis) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = beijing(at);
    let weekday = DAYS.get(t.weekday as usize).copied().unwrap_or("Sun");
    let month = MONTHS
        .get((t.month as usize).saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} +0800",
        t.day, t.year, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_percent_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(percent_encode("a+b/c=d"), "a%2Bb%2Fc%3Dd");
        assert_eq!(percent_encode("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(percent_encode("兴"), "%E5%85%B4");
        assert_eq!(percent_encode(" "), "%20");
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn truncation_cuts_on_a_character_boundary_and_says_so() {
        // "兴宁区" is 9 bytes; the marker is 33 bytes ("…" and ten full-width characters,
        // 3 bytes each).
        assert_eq!(TRUNCATION_MARKER.len(), 33);
        let text = "兴宁区".repeat(20); // 180 bytes
        let cut = truncate_utf8(&text, 40);
        // 40 - 33 = 7 bytes of budget: two characters (6 bytes), not a byte of the third.
        assert_eq!(cut, format!("兴宁{TRUNCATION_MARKER}"));
        assert_eq!(cut.len(), 39);
        assert_eq!(truncate_utf8("短", 40), "短");
        assert_eq!(truncate_utf8(&text, 180), text);
        // No room even for the marker: cut bare, still on a boundary.
        assert_eq!(truncate_utf8(&text, 8), "兴宁");
        assert_eq!(truncate_utf8(&text, 0), "");
    }

    #[test]
    fn truncation_never_exceeds_the_limit_for_mixed_widths() {
        // 1-, 2-, 3- and 4-byte characters in turn.
        let text = "a£兴🚨".repeat(30);
        for max_bytes in 0..text.len() + 2 {
            let cut = truncate_utf8(&text, max_bytes);
            assert!(cut.len() <= max_bytes, "{max_bytes}: {} bytes", cut.len());
            if max_bytes >= text.len() {
                assert_eq!(cut, text);
            } else if max_bytes >= TRUNCATION_MARKER.len() {
                let kept = cut.strip_suffix(TRUNCATION_MARKER).unwrap();
                assert!(text.starts_with(kept));
                // At most one character (4 bytes) of the budget is left unused.
                assert!(kept.len() + 4 > max_bytes - TRUNCATION_MARKER.len());
            }
        }
    }

    #[test]
    fn rfc2047_words_fit_a_76_character_header_line_and_keep_characters_whole() {
        assert_eq!(rfc2047("Link down"), "Link down");
        assert_eq!(rfc2047("a\r\nBcc: x"), "a  Bcc: x");
        assert_eq!(rfc2047("中文"), "=?UTF-8?B?5Lit5paH?=");
        let long = "兴".repeat(20); // 60 bytes: 13 characters in the first word, 7 in the next
        let encoded = rfc2047(&long);
        let words: Vec<&str> = encoded.split("\r\n ").collect();
        assert_eq!(words.len(), 2);
        assert!(words.iter().all(|word| word.len() <= 64));
        assert_eq!(
            words[1],
            format!("=?UTF-8?B?{}?=", base64("兴".repeat(7).as_bytes()))
        );
    }

    #[test]
    fn base64_body_lines_are_76_characters() {
        let text = base64_lines(&[0u8; 100]);
        let lines: Vec<&str> = text.split("\r\n").collect();
        // 100 bytes -> 136 characters -> 76 + 60, then the final CRLF leaves an empty tail.
        assert_eq!(
            lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
            [76, 60, 0]
        );
    }

    #[test]
    fn urls_are_checked_and_extended() {
        let url = "https://oapi.dingtalk.com/robot/send?access_token=abc";
        check_url(ChannelKind::Dingtalk, url, Some("access_token")).unwrap();
        assert_eq!(query_value(url, "access_token"), Some("abc"));
        assert_eq!(
            append_query(url, &[("timestamp", "1"), ("sign", "x")]),
            "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1&sign=x"
        );
        assert_eq!(append_query("http://h/p", &[("a", "1")]), "http://h/p?a=1");
        assert!(check_url(ChannelKind::Webhook, "https:///x", None).is_err());
        assert!(check_url(ChannelKind::Webhook, "https://h/a b", None).is_err());
        assert!(check_url(ChannelKind::Wecom, "https://h/send?key=", Some("key")).is_err());
        assert_eq!(
            redact_url("https://h/send?key=s3cret"),
            "https://h/send?<hidden>"
        );
    }

    #[test]
    fn dates_are_beijing_time() {
        // 1764123456789 ms = 2025-11-26 02:17:36.789 UTC, a Wednesday.
        assert_eq!(beijing_minute(1_764_123_456_789), "2025-11-26 10:17");
        assert_eq!(
            rfc5322_date(1_764_123_456_789),
            "Wed, 26 Nov 2025 10:17:36 +0800"
        );
        // 16:00 UTC on New Year's Eve is already New Year's Day in Beijing.
        assert_eq!(
            rfc5322_date(1_767_196_800_000),
            "Thu, 01 Jan 2026 00:00:00 +0800"
        );
        // Leap day.
        assert_eq!(beijing_minute(1_709_164_800_000), "2024-02-29 08:00");
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 08:00:00 +0800");
        // No panic at the far end of the range.
        let _ = rfc5322_date(u64::MAX);
    }
}
