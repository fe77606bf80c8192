//! GPT-2's byte ↔ unicode table.
//!
//! `vocab.json` and `merges.txt` cannot hold raw bytes, so GPT-2 writes every byte as a
//! printable character: the printable Latin-1 bytes stand for themselves and the other 68
//! (controls, space, …) are shifted to U+0100 and up. A space is `Ġ` (U+0120), a newline `Ċ`.

use std::sync::OnceLock;

/// `BYTE_TO_CHAR[b]` is the character GPT-2 writes for byte `b`.
pub fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u32| {
            (u32::from(b'!')..=u32::from(b'~')).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b)
        };
        let mut table = ['\0'; 256];
        let mut shifted = 0;
        for b in 0..256u32 {
            let c = if printable(b) {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            table[b as usize] = char::from_u32(c).expect("table chars are below U+0200");
        }
        table
    })
}

/// The inverse table: the byte a GPT-2 vocabulary character stands for, if any.
pub fn char_to_byte(c: char) -> Option<u8> {
    static TABLE: OnceLock<[u16; 0x200]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [u16::MAX; 0x200];
        for (b, &c) in byte_to_char().iter().enumerate() {
            t[c as usize] = b as u16;
        }
        t
    });
    let i = c as usize;
    (i < table.len() && table[i] != u16::MAX).then(|| table[i] as u8)
}

/// Decodes a vocabulary string (`"Ġworld"`) to its bytes (`b" world"`).
/// Returns `None` if a character is not in the table.
pub fn token_str_to_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// Encodes bytes as a vocabulary string, the inverse of [`token_str_to_bytes`].
pub fn bytes_to_token_str(bytes: &[u8]) -> String {
    let table = byte_to_char();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_characters() {
        assert_eq!(byte_to_char()[b' ' as usize], 'Ġ');
        assert_eq!(byte_to_char()[b'\n' as usize], 'Ċ');
        assert_eq!(byte_to_char()[b'A' as usize], 'A');
        assert_eq!(token_str_to_bytes("Ġworld").unwrap(), b" world");
    }

    #[test]
    fn table_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char()[b as usize];
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
