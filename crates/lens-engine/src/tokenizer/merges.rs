//! SentencePiece merges derived from a vocabulary, and the byte-level alphabet.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Python's `str.isspace`.
pub(super) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Gemma files store a token of spaces as real spaces; `GemmaTokenizer`
/// looks it up as `▁`s.
pub(super) fn respell_spaces(t: &str) -> String {
    if t.contains(' ') && t.chars().all(py_isspace) {
        "▁".repeat(t.chars().count())
    } else {
        t.to_string()
    }
}

/// GPT-2's byte → character table (`bytes_to_unicode`).
pub(super) fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid code point")
        };
    }
    table
}

/// How derived merges are ranked.
#[derive(Clone, Copy)]
pub(super) enum MergeOrder<'a> {
    /// By the token's position in the vocabulary, first best (Gemma).
    Position,
    /// By the token's score, highest best.
    Scores(&'a [f64]),
}

/// The merges a sentencepiece vocabulary implies, as transformers'
/// `generate_merges(vocab, vocab_scores)` orders them: every split of every
/// token into two vocabulary tokens, sorted (stably) by the token's score,
/// then by the left and right pieces' lengths in characters, all descending.
/// Within one token the pieces' lengths already differ, so the order there
/// is the split point from right to left.
pub(super) fn derive_merges(tokens: &[String], order: MergeOrder) -> Vec<(String, String)> {
    // Python dicts built from the token list: a repeated token keeps its
    // first place in iteration order and the id (and score) of its last.
    // `first[t]` is where `t` first appears, `last[i]` (for such an `i`)
    // where it last does.
    let mut first: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    let mut last: Vec<u32> = (0..tokens.len() as u32).collect();
    let mut is_first = vec![true; tokens.len()];
    for (i, t) in tokens.iter().enumerate() {
        match first.entry(t.as_str()) {
            Entry::Vacant(e) => {
                e.insert(i as u32);
            }
            Entry::Occupied(e) => {
                last[*e.get() as usize] = i as u32;
                is_first[i] = false;
            }
        }
    }
    let id = |piece: &str| first.get(piece).map(|&f| last[f as usize]);
    struct Cand {
        score: f64,
        len_l: u32,
        len_r: u32,
        l: u32,
        r: u32,
        split: u32,
        token: u32,
    }
    let mut cands: Vec<Cand> = Vec::with_capacity(tokens.len() * 2);
    let mut local: Vec<Cand> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !is_first[i] {
            continue;
        }
        let last = last[i];
        let score = match order {
            MergeOrder::Position => -(last as f64),
            MergeOrder::Scores(s) => s[last as usize],
        };
        let n_chars = t.chars().count() as u32;
        local.clear();
        for (k, (b, _)) in t.char_indices().enumerate().skip(1) {
            let (l, r) = t.split_at(b);
            let Some(il) = id(l) else {
                continue;
            };
            let Some(ir) = id(r) else {
                continue;
            };
            local.push(Cand {
                score,
                len_l: k as u32,
                len_r: n_chars - k as u32,
                l: il,
                r: ir,
                split: b as u32,
                token: last,
            });
        }
        local.sort_by_key(|c| (c.l, c.r));
        cands.append(&mut local);
    }
    // Python's `sorted(.., reverse=True)` is stable, like `sort_by` with the
    // comparison reversed.
    cands.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
    });
    cands
        .into_iter()
        .map(|c| {
            let (l, r) = tokens[c.token as usize].split_at(c.split as usize);
            (l.to_string(), r.to_string())
        })
        .collect()
}
